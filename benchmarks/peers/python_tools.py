"""The Python downloaders: the naive aiohttp baseline and the platform SDK (subprocesses)."""

from __future__ import annotations

import importlib.util

from benchmarks.peers.base import BENCH_DIR, VENV_BIN, Invocation, Platform, RunContext, Tool

PYTHON = str(VENV_BIN / "python")


class NaiveAiohttp(Tool):
    def __init__(self) -> None:
        super().__init__(name="naive-aiohttp", binary=PYTHON, version_args=["-c", _AIOHTTP_VER])

    def command(self, ctx: RunContext) -> Invocation:
        listing = ctx.scratch / "naive-urls.tsv"
        listing.write_text(
            "".join(f"{e.name}\t{e.url}\n" for e in ctx.platform.urls), encoding="utf-8"
        )
        argv = [
            PYTHON,
            "-P",  # not the script's folder on sys.path: its modules must not shadow others
            str(BENCH_DIR / "naive_aiohttp.py"),
            "--urls",
            str(listing),
            "--dest",
            str(ctx.dest),
            "--concurrency",
            str(ctx.concurrency),
        ]
        return Invocation(argv, ctx.env(), f"{ctx.concurrency} workers, uvloop")


_AIOHTTP_VER = (
    "import aiohttp, uvloop; print('aiohttp', aiohttp.__version__, 'uvloop', uvloop.__version__)"
)
_SDK_VER = "import picsellia; print('picsellia', picsellia.__version__)"


class PlatformSdk(Tool):
    def __init__(self, max_workers: int | None = None) -> None:
        super().__init__(name="picsellia-sdk", binary=PYTHON, version_args=["-c", _SDK_VER])
        self.max_workers = max_workers

    def missing(self, platform: Platform) -> str | None:
        if importlib.util.find_spec("picsellia") is None:
            return "picsellia==6.37.0 is not installed (pip install -e '.[dev]')"
        if platform.api_url is None:
            return "needs the emulator as its platform API (engine.emulator not available yet)"
        return super().missing(platform)

    def command(self, ctx: RunContext) -> Invocation:
        p = ctx.platform
        assert p.api_url is not None and p.dataset_version_id is not None and p.token is not None
        argv = [
            PYTHON,
            "-P",  # not the script's folder on sys.path: its modules must not shadow others
            str(BENCH_DIR / "sdk_download.py"),
            "--api-url",
            p.api_url,
            "--dataset-version",
            p.dataset_version_id,
            "--dest",
            str(ctx.dest),
        ]
        settings = "DatasetVersion.download, default max_workers (cpu_count + 4)"
        if self.max_workers is not None:
            argv += ["--max-workers", str(self.max_workers)]
            settings = f"DatasetVersion.download, max_workers={self.max_workers}"
        return Invocation(argv, ctx.env(PICSELLIA_TOKEN=p.token), settings)
