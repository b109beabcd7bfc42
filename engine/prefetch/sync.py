"""The plain iterator: the engine's event loop on a background thread, one item per ``next``.

Each ``next()`` is one call into the loop thread (:func:`anyio.from_thread.start_blocking_portal`)
that takes one item, so the consumer's pace drives the window exactly as with ``async for``:
an item is "passed" when the consumer asks for the next one, not when a queue between the two
threads happens to have room. That call is one plain callback on the loop
(:meth:`EpochRun.next_ready`); only an item that must be waited for starts a task, from that
same callback, which answers when the item is there. One hop each way per item, answered
through a bare lock: a portal call per awaited item (a second hop, a task in the portal's group,
a ``concurrent.futures.Future`` and its condition) was a fifth of the loop thread's time beyond
a mirror's for a consumer that takes no time (``benchmarks/prefetch_bench.py``, py-spy).

Shutdown is structured: leaving the loop early (``break``, an exception in the loop body, the
generator being closed or collected) stops the epoch; leaving the ``with`` block (or the end of
a one-session iteration) closes the session inside the loop thread, then stops the loop and
joins its thread. Nothing is left running: no task, no thread, no request.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import Iterator
from concurrent.futures import CancelledError
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any

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


class _Answer:
    """One answer from the loop thread to the consumer's: a lock the consumer waits on (the
    cheapest wake-up between two threads: no condition, no callbacks)."""

    __slots__ = ("_error", "_lock", "_value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._value: tuple[bool, PrefetchItem | None] = (False, None)
        self._error: BaseException | None = None

    def set(self, value: tuple[bool, PrefetchItem | None]) -> None:
        self._value = value
        self._lock.release()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._lock.release()

    def wait(self) -> tuple[bool, PrefetchItem | None]:
        self._lock.acquire()  # a signal (Ctrl-C) interrupts it, as it did Future.result()
        if self._error is not None:
            raise self._error
        return self._value


def _take(
    loop: asyncio.AbstractEventLoop, epoch: EpochIterator, tasks: set[asyncio.Task[Any]]
) -> tuple[bool, PrefetchItem | None]:
    """From the consumer's thread: the next item (``(False, None)`` at the end); raises what
    the epoch raised."""
    answer = _Answer()

    def finished(task: asyncio.Task[tuple[bool, PrefetchItem | None]]) -> None:
        tasks.discard(task)
        if task.cancelled():
            answer.fail(CancelledError())  # what a cancelled portal call raised
        elif (error := task.exception()) is not None:
            answer.fail(error)
        else:
            answer.set(task.result())

    def attempt() -> None:
        try:
            item = epoch.next_ready()
        except StopAsyncIteration:
            answer.set((False, None))
        except BaseException as exc:  # raised in the consumer's thread, as portal.call does
            answer.fail(exc)
        else:
            if item is not None:
                answer.set((True, item))
                return
            # Not there yet: wait for it in a task started here, not by a second call.
            task = loop.create_task(_next(epoch))
            tasks.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(finished)

    loop.call_soon_threadsafe(attempt)
    return answer.wait()


class SyncRunner:
    """A prefetcher's session held open on a loop thread (``with Prefetcher(...)``)."""

    def __init__(self, prefetcher: Prefetcher) -> None:
        self._prefetcher = prefetcher
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session_cm: AbstractContextManager[Prefetcher] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # waiting for an item for the consumer

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
                more, item = _take(loop, epoch, self._tasks)
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
