"""Which storage responses are still being sent: what :meth:`Emulator.quiesce` waits for.

A storage response is *active* from the moment its handler starts until the handler has handed
its last byte to the transport, or has stopped because its client went away. (A body of at most
64 KiB is counted, then handed over with its headers as the handler returns.) The server runs
with aiohttp's ``handler_cancellation``, so the handler of a client that vanished — closed,
reset, killed — is cancelled as soon as the server sees the connection go, whatever it was
doing (a stall, a throttle pause, a blocked write): an abandoned response never keeps
``storage_bytes`` growing after :meth:`StorageActivity.idle` returned.

Only responses whose handler had started when ``idle`` looked are waited for. ``idle`` lets the
loop turn a few times before it looks, so a request whose bytes the server has already received
gets its handler started first.
"""

from __future__ import annotations

import asyncio

__all__ = ["StorageActivity"]

_TURNS = 3  # loop turns before looking: data_received → handler task → its first step


class StorageActivity:
    """Counts storage responses in progress; wakes waiters when the count drops to zero."""

    def __init__(self) -> None:
        self._active = 0
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def active(self) -> int:
        """Storage responses being answered right now."""
        return self._active

    def begin(self) -> None:
        self._active += 1

    def end(self) -> None:
        self._active -= 1
        if self._active == 0:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def idle(self) -> None:
        """Return once no storage response is active (call on the emulator's loop)."""
        loop = asyncio.get_running_loop()
        while True:
            for _ in range(_TURNS):
                await asyncio.sleep(0)
            if self._active == 0:
                return
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            await waiter
