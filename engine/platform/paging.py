"""Cursor pagination with one page of read-ahead.

While the caller works on page *n*, the request for page *n + 1* is already in flight, so the
listing costs one round trip up front and then nothing the caller can notice, and memory holds
at most two pages: never the whole listing.

The request in flight is an :class:`asyncio.Task` (the engine runs on asyncio, with or without
uvloop). It is owned by the generator: closing the generator (``async with aclosing(...)``, or
the loop's async-generator finaliser) cancels it, and its outcome is always retrieved so an
abandoned listing never logs "Task exception was never retrieved".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Sized
from typing import Any, Protocol, TypeVar

from engine.errors import PlatformError

__all__ = ["CursorPage", "read_ahead"]


class CursorPage(Protocol):
    @property
    def items(self) -> Sized: ...

    @property
    def next_cursor(self) -> str | None: ...


P = TypeVar("P", bound=CursorPage)


def _retrieve(task: asyncio.Future[Any]) -> None:
    # Mark the outcome as seen: an abandoned read-ahead is not an error worth a log line.
    if not task.cancelled():
        task.exception()


async def read_ahead(fetch: Callable[[str | None], Awaitable[P]]) -> AsyncGenerator[P, None]:
    """Yield the pages ``fetch(None)``, ``fetch(cursor1)``, ... until a page has no
    ``next_cursor`` or no items (the contract's two ways of saying "the end")."""
    cursor: str | None = None
    pending: asyncio.Future[P] | None = asyncio.ensure_future(fetch(None))
    try:
        while pending is not None:
            page = await pending
            pending = None
            following = page.next_cursor if len(page.items) else None
            if following is not None:
                if following == cursor:
                    # A server that hands back the cursor it was given would loop us forever.
                    raise PlatformError("the listing did not advance (same cursor returned)")
                cursor = following
                pending = asyncio.ensure_future(fetch(following))
            yield page
    finally:
        if pending is not None:
            pending.add_done_callback(_retrieve)
            # No await here: this may run while the caller is being cancelled, and swallowing
            # that cancellation to wait for ours would be wrong. The task unwinds on its own.
            pending.cancel()
