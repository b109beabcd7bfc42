"""The plain iterator: the engine's event loop on a background thread, one item per ``next``.

Each ``next()`` is one request to the loop thread (:func:`anyio.from_thread.start_blocking_portal`)
that takes one item, so the consumer's pace drives the window exactly as with ``async for``:
an item is "passed" when the consumer asks for the next one, not when a queue between the two
threads happens to have room. The request is a plain callback on the loop
(:meth:`EpochRun.next_ready`); if its item is not ready, the epoch answers it from its next
notification that makes it so (:class:`_Handoff`), and only before an epoch has started does a
task wait for it. Answered from its own callback alone, a consumer that takes no time got one
item per turn of the busy loop: every item was ready when asked, the window stood full, the
fetchers idle (``benchmarks/prefetch_bench.py``: 1-2 of 2,000 requests ever waited).

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
from functools import partial
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


class _Handoff:
    """One epoch's items, one ``next()`` at a time, from the loop thread to the consumer's.

    The consumer's request is served on the loop: at once if the item is ready, else at the
    epoch's first change that makes it so (:attr:`EpochRun.on_change <engine.prefetch.epoch.
    EpochRun.on_change>`: a download landed, metadata came, the epoch ended), within the same
    turn of the loop. Served only from the request's own callback, a consumer that takes no
    time got one item per turn of a busy loop (every item was ready when asked: the window
    stood full and the fetchers idle)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, epoch: EpochIterator, tasks: set[asyncio.Task[Any]]
    ) -> None:
        self.loop = loop
        self.epoch = epoch
        self.tasks = tasks
        self.pending: _Answer | None = None  # the consumer's request not answered yet
        self._serving = False

    def take(self) -> tuple[bool, PrefetchItem | None]:
        """From the consumer's thread: the next item (``(False, None)`` at the end); raises
        what the epoch raised."""
        answer = _Answer()
        self.pending = answer
        self.loop.call_soon_threadsafe(self._attempt, answer)
        return answer.wait()

    def _serve(self) -> None:
        """On the loop: answer the pending request if its item (or the end, or an error) is
        there. Not re-entered: taking an item notifies the epoch, which calls back here."""
        answer = self.pending
        if answer is None or self._serving:
            return
        self._serving = True
        try:
            item = self.epoch.next_ready()
        except StopAsyncIteration:
            self.pending = None
            answer.set((False, None))
        except BaseException as exc:  # raised in the consumer's thread, as portal.call does
            self.pending = None
            answer.fail(exc)
        else:
            if item is not None:
                self.pending = None
                answer.set((True, item))
        finally:
            self._serving = False

    def _attempt(self, answer: _Answer) -> None:
        if self.pending is not answer:
            return  # answered already, from the epoch's notification
        run = self.epoch._run
        if run is not None and run.on_change is None:
            run.on_change = self._serve
        self._serve()
        if self.pending is not answer or (run is not None and run.on_change == self._serve):
            return  # answered, or the epoch's next change answers it
        # The epoch has not started: start it in a task, which owns the answer from now on.
        self.pending = None
        task = self.loop.create_task(_next(self.epoch))
        self.tasks.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(partial(self._finished, answer))

    def _finished(
        self, answer: _Answer, task: asyncio.Task[tuple[bool, PrefetchItem | None]]
    ) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            answer.fail(CancelledError())  # what a cancelled portal call raised
        elif (error := task.exception()) is not None:
            answer.fail(error)
        else:
            answer.set(task.result())


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
        handoff = _Handoff(loop, epoch, self._tasks)
        try:
            while True:
                more, item = handoff.take()
                if not more:
                    return
                assert item is not None
                yield item
        finally:
            handoff.pending = None  # a request left by an interrupted wait is nobody's now
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
