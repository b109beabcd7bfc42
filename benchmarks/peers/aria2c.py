"""aria2c: input file of URL + ``out=`` pairs; ``-j`` downloads at once, ``-x/-s`` segments."""

from __future__ import annotations

from benchmarks.peers.base import Invocation, RunContext, Tool


class Aria2c(Tool):
    def __init__(self) -> None:
        super().__init__(name="aria2c", binary="aria2c", apt_package="aria2")

    def command(self, ctx: RunContext) -> Invocation:
        listing = ctx.scratch / "aria2c-input.txt"
        with open(listing, "w", encoding="utf-8") as fh:
            for entry in ctx.platform.urls:
                fh.write(f"{entry.url}\n  out={entry.name}\n")
        if ctx.large:
            # 16 is aria2c's ceiling for connections per server; 16 MiB pieces.
            tuning = ["-j", str(len(ctx.platform.urls)), "-x", "16", "-s", "16", "-k", "16M"]
        else:
            tuning = ["-j", str(ctx.concurrency), "-x", "1", "-s", "1"]
        argv = [
            self.resolved() or "aria2c",
            "--no-conf",
            "--input-file",
            str(listing),
            "--dir",
            str(ctx.dest),
            *tuning,
            # Preallocation would give a file its final size before its bytes arrive.
            "--file-allocation=none",
            "--auto-file-renaming=false",
            "--allow-overwrite=true",
            "--console-log-level=error",
            "--summary-interval=0",
            "--download-result=hide",
            "--show-console-readout=false",
            "--http-accept-gzip=false",
            "--max-tries=3",
            "--disable-ipv6=true",
            "--deferred-input=true",
        ]
        return Invocation(argv, ctx.env(), " ".join(tuning))
