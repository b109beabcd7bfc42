"""rclone copy / sync from the http backend over nginx's unsigned ``/plain/`` index.

rclone cannot use per-object signed URLs at all: its http backend reads a directory tree from
HTML index pages. It is measured on the unsigned view to compare transfer speed only.
"""

from __future__ import annotations

from benchmarks.peers.base import Invocation, RunContext, Tool


class Rclone(Tool):
    def __init__(self) -> None:
        super().__init__(
            name="rclone", binary="rclone", apt_package="rclone", version_args=["version"]
        )

    def _argv(self, ctx: RunContext, verb: str) -> Invocation:
        config = ctx.scratch / "rclone.conf"
        config.touch()
        if ctx.large:
            tuning = [
                "--transfers", str(len(ctx.platform.urls)),
                "--multi-thread-cutoff", "64M",
                "--multi-thread-streams", "8",
            ]  # fmt: skip
        else:
            tuning = ["--transfers", str(ctx.concurrency), "--checkers", str(ctx.concurrency)]
        argv = [
            self.resolved() or "rclone",
            verb,
            ":http:",
            str(ctx.dest),
            "--http-url",
            ctx.platform.plain_url,
            "--config",
            str(config),
            "--quiet",
            "--stats",
            "0",
            *tuning,
        ]
        return Invocation(argv, ctx.env(), f"{verb} " + " ".join(tuning))

    def command(self, ctx: RunContext) -> Invocation:
        return self._argv(ctx, "copy")

    def rerun_command(self, ctx: RunContext) -> Invocation | None:
        return self._argv(ctx, "sync")
