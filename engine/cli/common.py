"""What every command shares: the event loop, signals, exit codes and logging.

Exit codes (also in ``assetsync --help`` and the README):

====  =================================================================
0     everything mirrored (or verified, or exported)
1     some assets failed after retries (the rest completed and recorded)
2     usage, configuration or bad-input error
3     authentication failed
4     another run holds the lock on DEST
130   interrupted by SIGINT (state saved; the next run resumes)
141   stdout was closed before the output was written (``| head``), as for
      any tool that SIGPIPE stops
143   terminated by SIGTERM (state saved; the next run resumes)
====  =================================================================
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from engine.errors import Interrupted, primary_error
from engine.safe_text import safe_message

__all__ = [
    "EXIT_CODES_HELP",
    "GC_THRESHOLDS",
    "run_async",
    "setup_logging",
]

T = TypeVar("T")

EXIT_CODES_HELP = (
    "Exit codes: 0 everything mirrored; 1 some assets failed after retries (the rest completed "
    "and recorded), or the platform was unreachable after retries; 2 usage, config or "
    "bad-input error; 3 authentication failed; 4 another run "
    "holds the lock on DEST; 130/143 interrupted by SIGINT/SIGTERM (state saved for resume); "
    "141 stdout closed early (| head)."
)


class _SafeFormatter(logging.Formatter):
    """Log lines for people: URLs lose their signatures and control characters are escaped
    (a message quoting a server's text must not move the cursor or forge a line)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = safe_message(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        text = super().formatException(ei)
        return "\n".join(safe_message(line) for line in text.split("\n"))


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access and client logs are noise at INFO and may carry URLs.
    logging.getLogger("aiohttp").setLevel(max(level, logging.WARNING))


GC_THRESHOLDS = (50_000, 50, 100)


def tune_gc() -> None:
    """Fewer garbage-collector passes for a command's lifetime.

    A mirror parses many megabytes of JSON into short-lived dicts and lists, which trips
    CPython's young-generation threshold (700 allocations) thousands of times, each pass
    walking a growing heap: ~5 s of a 100,000-asset rerun's 15 s of CPU (py-spy,
    benchmarks/mirror_bench.py). What start-up loaded is frozen out of the collector's sight and
    the thresholds raised; reference counting still frees almost everything at once (the
    engine's data has few cycles), so memory stays bounded. Only the command line does this:
    a library caller's process is theirs to tune.
    """
    # No collection first: start-up leaves little garbage, and a full pass over its heap costs
    # 20-40 ms of every command (the cycles it would free are frozen with the rest).
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_async(main: Callable[[], Awaitable[T]], *, use_uvloop: bool = True) -> T:
    """Run ``main`` on asyncio (uvloop by default) with SIGINT/SIGTERM turned into a graceful
    stop: the main task is cancelled, it saves its state, and :class:`Interrupted` is raised."""

    import anyio  # here, not at the top: a command that shows help or a usage error needs none

    received: list[int] = []
    tune_gc()

    async def guarded() -> T:
        result: list[T] = []
        errors: list[BaseException] = []
        async with anyio.create_task_group() as tg:

            async def watch_signals() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        received.append(int(signum))
                        tg.cancel_scope.cancel()
                        return

            async def work() -> None:
                try:
                    result.append(await main())
                except Exception as exc:  # re-raised below, outside the task group's wrapping
                    errors.append(exc)
                finally:
                    tg.cancel_scope.cancel()

            tg.start_soon(watch_signals)
            tg.start_soon(work)
        if errors:
            # main() may have run task groups of its own: raise what their group stands for.
            raise primary_error(errors[0])
        if received:
            raise Interrupted(
                f"stopped by {signal.Signals(received[0]).name}; partial files and the manifest "
                "were saved, the next run resumes",
                signal_number=received[0],
            )
        return result[0]

    try:
        import uvloop  # noqa: F401  (only to know it is there)

        have_uvloop = use_uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported OS
        have_uvloop = False
    return anyio.run(guarded, backend="asyncio", backend_options={"use_uvloop": have_uvloop})
