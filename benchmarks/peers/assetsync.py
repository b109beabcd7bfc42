"""``assetsync mirror`` against the emulator (whose URLs point at nginx), as users run it."""

from __future__ import annotations

import functools
import subprocess

from benchmarks.peers.base import VENV_BIN, Invocation, Platform, RunContext, Tool

ASSETSYNC = str(VENV_BIN / "assetsync")


@functools.cache
def mirror_available() -> str | None:
    """None when ``assetsync mirror`` exists, else why not."""
    try:
        out = subprocess.run(
            [ASSETSYNC, "mirror", "--help"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"not available yet ({exc.__class__.__name__}: {exc})"
    if out.returncode != 0:
        return "not available yet (`assetsync mirror --help` fails)"
    return None


class Assetsync(Tool):
    def __init__(self, extra_args: list[str] | None = None) -> None:
        super().__init__(name="assetsync", binary=ASSETSYNC, is_assetsync=True)
        self.extra_args = extra_args or []

    def missing(self, platform: Platform) -> str | None:
        reason = mirror_available()
        if reason is not None:
            return reason
        if platform.api_url is None:
            return "needs the emulator as its platform API (engine.emulator not available yet)"
        return super().missing(platform)

    def command(self, ctx: RunContext) -> Invocation:
        p = ctx.platform
        assert p.api_url is not None and p.dataset_version_id is not None and p.token is not None
        argv = [
            ASSETSYNC,
            "mirror",
            "--api-url",
            p.api_url,
            "--dataset-version",
            p.dataset_version_id,
            "--dest",
            str(ctx.dest),
            "--quiet",
            *self.extra_args,
        ]
        settings = " ".join(self.extra_args) or "defaults"
        return Invocation(argv, ctx.env(PICSELLIA_TOKEN=p.token), settings)

    def rerun_command(self, ctx: RunContext) -> Invocation | None:
        return self.command(ctx)
