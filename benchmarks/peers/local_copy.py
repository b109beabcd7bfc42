"""``cp -r`` of the corpus folder: no network, no HTTP; the ceiling of what the disk allows."""

from __future__ import annotations

from benchmarks.peers.base import Invocation, RunContext, Tool


class LocalCopy(Tool):
    def __init__(self) -> None:
        super().__init__(name="cp", binary="cp", apt_package="coreutils")

    def command(self, ctx: RunContext) -> Invocation:
        argv = [self.resolved() or "cp", "-r", "--", f"{ctx.corpus.root}/.", str(ctx.dest)]
        return Invocation(argv, ctx.env(), "cp -r from the served folder (reference, no network)")
