"""Blocking file-system work on worker threads, cheaply and without leaving work behind.

``loop.run_in_executor`` on the transfer core's own pool costs about a quarter of
``anyio.to_thread.run_sync`` per hop (measured: ~20 µs against ~60-80 µs on this project's
benchmark machine), which matters once per small object. Unlike a plain ``await`` of the
executor's future, :func:`in_thread` does not return on cancellation before the thread is done:
the caller may then close descriptors the thread was using.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TypeVar

import anyio

__all__ = ["ThreadSlots", "in_thread"]

T = TypeVar("T")


async def in_thread(
    executor: Executor, fn: Callable[[], T], loop: asyncio.AbstractEventLoop | None = None
) -> T:
    """``fn()`` on ``executor``; a cancellation is re-raised only once ``fn`` has returned.
    ``loop``: the running loop, if the caller has it at hand."""
    if loop is None:
        loop = asyncio.get_running_loop()
    future = loop.run_in_executor(executor, fn)
    try:
        return await asyncio.shield(future)
    except BaseException:
        if not future.done():
            with anyio.CancelScope(shield=True):
                await asyncio.wait([future])
        raise


class ThreadSlots:
    """A pool of threads taken without waiting, or not at all.

    For work that holds a thread for as long as a network body lasts: when every slot is busy
    the caller takes its event-loop path instead of queueing behind (or starving) other work.
    """

    def __init__(self, slots: int, name: str) -> None:
        self.executor = ThreadPoolExecutor(max_workers=slots, thread_name_prefix=name)
        self._free = slots

    def try_take(self) -> bool:
        """A slot, if one is free (event-loop thread only)."""
        if self._free <= 0:
            return False
        self._free -= 1
        return True

    def give_back(self) -> None:
        self._free += 1

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True)
