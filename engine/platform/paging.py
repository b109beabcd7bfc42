"""Cursor pagination with one page of read-ahead.

While the caller works on page *n*, the request for page *n + 1* is already in flight, so the
listing costs one round trip up front and then nothing the caller can notice, and memory holds
at most two pages: never the whole listing.

A listing is bounded by what it says of itself. A page with more entries than the ``limit``
asked for is refused, and so is a page without a ``count``; and the listing is refused once it
has given more entries than :func:`listing_bound` allows for the largest ``count`` any of its
pages announced. A server that hands out ever-new cursors (and ever-new assets) therefore stops
being listed after about its own count, instead of never. Each refusal is a
:class:`~engine.errors.PlatformError`: for the mirror, a listing error (the pages already given
are mirrored, nothing is deleted).

The request in flight is an :class:`asyncio.Task` (the engine runs on asyncio, with or without
uvloop). It is owned by the generator: closing the generator (``async with aclosing(...)``, or
the loop's async-generator finaliser) cancels it, and its outcome is always retrieved so an
abandoned listing never logs "Task exception was never retrieved".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

from engine.errors import PlatformError

__all__ = ["LISTING_SLACK", "CursorPage", "listing_bound", "read_ahead"]

# The share of the largest announced count a listing may run over it (see listing_bound).
LISTING_SLACK = 0.10


class CursorPage(Protocol):
    @property
    def size(self) -> int: ...

    @property
    def count(self) -> int | None: ...

    @property
    def next_cursor(self) -> str | None: ...


P = TypeVar("P", bound=CursorPage)


def _retrieve(task: asyncio.Future[Any]) -> None:
    # Mark the outcome as seen: an abandoned read-ahead is not an error worth a log line.
    if not task.cancelled():
        task.exception()


def listing_bound(count: int, limit: int) -> int:
    """The most entries a listing may give when the largest ``count`` it announced is ``count``.

    The count of a live version moves while it is listed (the contract allows assets to come and
    go between pages), and a page boundary can repeat or skip an entry when it does. Growth
    shows in the counts of later pages (the largest one is used); the slack covers what changes
    after the last count was taken: 10% of the count, and at least one page of ``limit``.
    """
    return count + max(limit, int(count * LISTING_SLACK))


def _check_page(page: CursorPage, limit: int) -> int:
    if page.size > limit:
        raise PlatformError(
            f"the listing sent a page of {page.size} entries, more than the {limit} asked for"
        )
    if page.count is None:
        raise PlatformError("the listing sent a page without a count")
    return page.count


async def read_ahead(
    fetch: Callable[[str | None], Awaitable[P]], *, limit: int
) -> AsyncGenerator[P, None]:
    """Yield the pages ``fetch(None)``, ``fetch(cursor1)``, ... until a page has no
    ``next_cursor`` or no entries (the contract's two ways of saying "the end"), within the
    bounds described in the module docstring (``limit``: the page size asked for)."""
    cursor: str | None = None
    listed = 0
    largest_count = 0
    pending: asyncio.Future[P] | None = asyncio.ensure_future(fetch(None))
    try:
        while pending is not None:
            page = await pending
            pending = None
            largest_count = max(largest_count, _check_page(page, limit))
            listed += page.size
            if listed > listing_bound(largest_count, limit):
                raise PlatformError(
                    f"the listing went on past its count: {listed} entries listed, when its "
                    f"pages counted at most {largest_count}"
                )
            following = page.next_cursor if page.size else None
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
