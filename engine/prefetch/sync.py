"""The plain iterator: the engine's event loop on a background thread, one item per ``next``.

Each ``next()`` is one call into the loop thread (:func:`anyio.from_thread.start_blocking_portal`)
that takes one item, so the consumer's pace drives the window exactly as with ``async for``:
an item is "passed" when the consumer asks for the next one, not when a queue between the two
threads happens to have room. When the item is there already, that call is one plain callback
on the loop (:meth:`EpochRun.next_ready`); only an item that must be waited for goes through
the portal, whose task costs more turns of a busy loop. An epoch over files already on disk
went from 2,380 to 2,991-3,106 items/s (``benchmarks/prefetch_bench.py``, second epoch).

Shutdown is structured: leaving the loop early (``break``, an exception in the loop body, the
generator being closed or collected) stops the epoch; leaving the ``with`` block (or the end of
a one-session iteration) closes the session inside the loop thread, then stops the loop and
joins its thread. Nothing is left running: no task, no thread, no request.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING

from anyio.from_thread import BlockingPortal, start_blocking_portal

from engine.prefetch.items import PrefetchItem

if TYPE_CHECKING:
    from engine.prefetch.prefetcher import EpochIterator, Prefetcher

__all__ = ["SyncRunner"]


def _backend_options() -> dict[str, bool]:
    # uvloop is the engine's default loop where it exists (the CLI picks it too).
    return {"use_uvloop": importlib.util.find_spec("uvloop") is not None}


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


async def _next(epoch: EpochIterator) -> tuple[bool, PrefetchItem | None]:
    # StopAsyncIteration must not cross the thread boundary as an exception of a coroutine.
    try:
        return True, await epoch.__anext__()
    except StopAsyncIteration:
        return False, None


def _take_ready(
    loop: asyncio.AbstractEventLoop, epoch: EpochIterator
) -> tuple[bool, PrefetchItem | None] | None:
    """From the consumer's thread: an item the loop can hand out at once, or ``None``."""
    answer: Future[tuple[bool, PrefetchItem | None] | None] = Future()

    def attempt() -> None:
        try:
            item = epoch.next_ready()
        except StopAsyncIteration:
            answer.set_result((False, None))
        except BaseException as exc:  # raised in the consumer's thread, as portal.call does
            answer.set_exception(exc)
        else:
            answer.set_result(None if item is None else (True, item))

    loop.call_soon_threadsafe(attempt)
    return answer.result()


class SyncRunner:
    """A prefetcher's session held open on a loop thread (``with Prefetcher(...)``)."""

    def __init__(self, prefetcher: Prefetcher) -> None:
        self._prefetcher = prefetcher
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session_cm: AbstractContextManager[Prefetcher] | None = None

    def start(self) -> None:
        portal_cm = start_blocking_portal("asyncio", _backend_options())
        portal = portal_cm.__enter__()
        try:
            loop = portal.call(_running_loop)
            session_cm = portal.wrap_async_context_manager(self._prefetcher)
            session_cm.__enter__()
        except BaseException as exc:
            portal_cm.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._portal_cm, self._portal, self._session_cm = portal_cm, portal, session_cm
        self._loop = loop

    def items(self, epoch: EpochIterator) -> Iterator[PrefetchItem]:
        portal, loop = self._portal, self._loop
        if portal is None or loop is None:
            raise RuntimeError("the prefetcher is closed")
        try:
            while True:
                ready = _take_ready(loop, epoch)
                more, item = ready if ready is not None else portal.call(_next, epoch)
                if not more:
                    return
                assert item is not None
                yield item
        finally:
            if self._portal is portal:  # still open: stop this epoch now
                portal.call(epoch.aclose)

    def close(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        portal_cm, session_cm = self._portal_cm, self._session_cm
        self._portal_cm = self._portal = self._session_cm = self._loop = None
        if portal_cm is None or session_cm is None:
            return
        try:
            session_cm.__exit__(exc_type, exc, tb)
        finally:
            portal_cm.__exit__(None, None, None)
