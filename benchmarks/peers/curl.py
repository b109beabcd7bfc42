"""curl --parallel with a config file of url + output pairs (no segmenting of one file)."""

from __future__ import annotations

from benchmarks.peers.base import Invocation, RunContext, Tool


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Curl(Tool):
    def __init__(self) -> None:
        super().__init__(name="curl", binary="curl", apt_package="curl")

    def command(self, ctx: RunContext) -> Invocation:
        config = ctx.scratch / "curl.config"
        with open(config, "w", encoding="utf-8") as fh:
            for entry in ctx.platform.urls:
                fh.write(f"url = {_quote(entry.url)}\n")
                fh.write(f"output = {_quote(str(ctx.dest / entry.name))}\n")
        parallel = str(ctx.concurrency)
        argv = [
            self.resolved() or "curl",
            "-q",  # must come first: no ~/.curlrc
            "--parallel",
            "--parallel-max",
            parallel,
            "--silent",
            "--no-progress-meter",
            "--show-error",
            "--fail",
            "--config",
            str(config),
        ]
        return Invocation(argv, ctx.env(), f"--parallel --parallel-max {parallel}")
