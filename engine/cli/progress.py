"""What a user sees while a run goes: a rich progress bar on a terminal, log lines otherwise.

Both read :class:`~engine.pipeline.summary.LiveCounters` on their own clock (a few times a
second for the bar, every ``interval`` seconds for cron logs); the pipeline never waits for
the display.
"""

from __future__ import annotations

import sys
import time
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

import anyio

from engine.pipeline.summary import LiveCounters

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

__all__ = ["LineProgress", "RichProgress", "format_bytes", "make_progress"]


def format_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


class _Rate:
    """Bytes per second over the last few seconds (a smoothed rate, not since the start)."""

    def __init__(self) -> None:
        self._bytes = 0
        self._time = time.monotonic()
        self.value = 0.0

    def update(self, total_bytes: int) -> float:
        now = time.monotonic()
        elapsed = now - self._time
        if elapsed >= 1.0:
            instant = (total_bytes - self._bytes) / elapsed
            self.value = instant if self.value == 0 else 0.7 * self.value + 0.3 * instant
            self._bytes, self._time = total_bytes, now
        return self.value


class RichProgress(AbstractContextManager["RichProgress"]):
    """Files (with ETA), bytes and rate on a terminal.

    The bar appears once the listing has started: a run refused before that (a wrong token, an
    unknown version, a held lock) shows its one-line error and no empty bar.
    """

    def __init__(self, counters: LiveCounters, console: Console) -> None:
        # rich is imported here, not at start-up: a cron run without a terminal never needs it.
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._counters = counters
        self._rate = _Rate()
        self._progress: Progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[bytes]} {task.fields[rate]}"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> RichProgress:
        return self

    def refresh(self) -> None:
        c = self._counters
        if self._task is None:
            if c.total is None and c.listed == 0:
                return
            self._progress.start()
            self._task = self._progress.add_task("mirroring", total=None, bytes="", rate="")
        done = c.downloaded + c.skipped + c.updated + c.failed
        self._progress.update(
            self._task,
            total=c.total,
            completed=done,
            description=f"mirroring ({c.downloaded} new, {c.failed} failed)",
            bytes=format_bytes(c.bytes_done),
            rate=f"{format_bytes(self._rate.update(c.bytes_done))}/s",
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.refresh()
        if self._task is not None:
            self._progress.stop()

    async def run(self, interval: float = 0.25) -> None:
        while True:
            self.refresh()
            await anyio.sleep(interval)


class LineProgress(AbstractContextManager["LineProgress"]):
    """One line every ``interval`` seconds, for logs that are not a terminal (cron)."""

    def __init__(self, counters: LiveCounters, stream: TextIO, interval: float = 5.0) -> None:
        self._counters = counters
        self._stream = stream
        self._interval = interval
        self._last_bytes = 0
        self._last_time = time.monotonic()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def line(self) -> str:
        c = self._counters
        now = time.monotonic()
        rate = (c.bytes_done - self._last_bytes) / max(now - self._last_time, 1e-9)
        self._last_bytes, self._last_time = c.bytes_done, now
        done = c.downloaded + c.skipped + c.updated + c.failed
        total = "?" if c.total is None else str(c.total)
        stamp = time.strftime("%H:%M:%S")
        return (
            f"[{stamp}] {done}/{total} assets: {c.downloaded} downloaded, {c.skipped} skipped, "
            f"{c.updated} updated, {c.failed} failed; {format_bytes(c.bytes_done)} at "
            f"{format_bytes(rate)}/s"
        )

    async def run(self) -> None:
        while True:
            await anyio.sleep(self._interval)
            c = self._counters
            if c.total is None and c.listed == 0:
                continue  # not listing yet (the platform has not answered): nothing to say
            print(self.line(), file=self._stream, flush=True)


def make_progress(
    counters: LiveCounters, *, quiet: bool, stream: TextIO | None = None
) -> RichProgress | LineProgress | None:
    """A bar on a terminal, lines elsewhere, nothing with ``-q``. Progress goes to stderr so
    ``--json`` output on stdout stays machine-readable."""
    if quiet:
        return None
    out = stream or sys.stderr
    if out.isatty():
        from rich.console import Console

        return RichProgress(counters, Console(file=out))
    return LineProgress(counters, out)
