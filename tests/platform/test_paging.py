"""Cursor paging with one page of read-ahead (against the raw server: exact request order)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator

import aiohttp
import anyio
import pytest
from pydantic import SecretStr

from engine.errors import NotFoundError, PlatformError
from engine.platform import PlatformClient
from engine.platform.paging import listing_bound
from engine.platform.per_item import ListingPage
from engine.settings import RetryPolicy

from .conftest import RawServer, Reply, Seen

pytestmark = pytest.mark.anyio

DV = "dv"
PAGES = 5


def pager(seen: Seen) -> Reply:
    cursor = dict(seen.query).get("cursor")
    n = 0 if cursor is None else int(cursor)
    if n == 2 and dict(seen.query).get("limit") == "7":
        return Reply(status=404, body={"message": "cursor gone"})
    items = [{"id": f"a{n}-{i}", "data": {"id": f"d{n}-{i}", "object_name": "o"}} for i in range(3)]
    following = str(n + 1) if n + 1 < PAGES else None
    return Reply(body={"items": items, "count": 3 * PAGES, "next_cursor": following})


def api(session: aiohttp.ClientSession, url: str) -> PlatformClient:
    return PlatformClient(session, url, SecretStr("t"), RetryPolicy(attempts=1))


async def drain(pages: AsyncIterator[ListingPage], into: list[ListingPage]) -> None:
    async for page in pages:
        into.append(page)


async def wait_for(condition, what: str) -> None:
    with anyio.fail_after(10):
        while not condition():
            await anyio.sleep(0.005)


async def test_next_page_is_requested_while_the_caller_works(raw_server: RawServer) -> None:
    raw_server.set(pager)
    async with aiohttp.ClientSession() as session:
        pages = api(session, raw_server.url).asset_pages(DV)
        seen_ids = []
        async for page in pages:
            seen_ids += [a.id for a in page.items]
            index = len(seen_ids) // 3  # pages received so far
            if index < PAGES:
                # The request for the next page arrives without us asking for it...
                wanted = index + 1
                await wait_for(lambda n=wanted: len(raw_server.seen) == n, "read-ahead")
                # ...and no further: one page ahead, never the whole listing.
                await anyio.sleep(0.02)
                assert len(raw_server.seen) == index + 1
            else:
                assert len(raw_server.seen) == PAGES
    assert len(seen_ids) == 3 * PAGES
    assert len(set(seen_ids)) == 3 * PAGES
    cursors = [dict(s.query).get("cursor") for s in raw_server.seen]
    assert cursors == [None, "1", "2", "3", "4"]


async def test_abandoned_listing_cancels_its_read_ahead(raw_server: RawServer) -> None:
    raw_server.set(pager)
    async with aiohttp.ClientSession() as session:
        pages = api(session, raw_server.url).asset_pages(DV)
        async with contextlib.aclosing(pages):  # type: ignore[type-var]
            async for _ in pages:
                break
        gc.collect()
        await anyio.sleep(0.02)
    assert len(raw_server.seen) <= 2


async def test_error_of_the_prefetched_page_surfaces_in_order(raw_server: RawServer) -> None:
    raw_server.set(pager)
    got: list[object] = []

    async def consume(session: aiohttp.ClientSession) -> None:
        async for page in api(session, raw_server.url).asset_pages(DV, limit=7):
            got.append(page)

    async with aiohttp.ClientSession() as session:
        with pytest.raises(NotFoundError, match="cursor gone"):
            await consume(session)
    assert len(got) == 2  # the two good pages came first


async def test_empty_page_or_null_cursor_ends(raw_server: RawServer) -> None:
    raw_server.set(lambda _: Reply(body={"items": [], "count": 0, "next_cursor": "more"}))
    async with aiohttp.ClientSession() as session:
        pages = [p async for p in api(session, raw_server.url).asset_pages(DV)]
        assert len(pages) == 1
        assert len(raw_server.seen) == 1
        raw_server.set(lambda _: Reply(body={"items": ["x"], "count": 1, "next_cursor": None}))
        ids = [i async for i in api(session, raw_server.url).asset_id_pages(DV, q="q")]
        assert ids == [["x"]]


async def test_a_cursor_that_does_not_advance_is_an_error(raw_server: RawServer) -> None:
    raw_server.set(lambda _: Reply(body={"items": ["x"], "count": 9, "next_cursor": "same"}))
    async with aiohttp.ClientSession() as session:
        pages = api(session, raw_server.url).asset_id_pages(DV)
        with pytest.raises(PlatformError, match="did not advance"):
            [_ async for _ in pages]
    assert len(raw_server.seen) == 2


async def test_a_page_larger_than_asked_is_refused(raw_server: RawServer) -> None:
    def handler(seen: Seen) -> Reply:
        n = int(dict(seen.query).get("cursor", "0"))
        size = 4 if n == 0 else 5  # the second page has one entry more than the limit
        items = [
            {"id": f"a{n}-{i}", "data": {"id": f"d{n}-{i}", "object_name": "o"}}
            for i in range(size)
        ]
        return Reply(body={"items": items, "count": 100, "next_cursor": str(n + 1)})

    raw_server.set(handler)
    got: list[ListingPage] = []
    async with aiohttp.ClientSession() as session:
        pages = api(session, raw_server.url).asset_pages(DV, limit=4)
        with pytest.raises(PlatformError, match="page of 5 entries, more than the 4 asked for"):
            await drain(pages, got)
    assert [p.size for p in got] == [4]  # the pages before it still came through


async def test_ever_new_cursors_stop_at_the_count(raw_server: RawServer) -> None:
    # The server of the issue: count=1, a new cursor and a new asset on every page, for ever.
    def handler(seen: Seen) -> Reply:
        n = int(dict(seen.query).get("cursor", "0"))
        item = {"id": f"a{n}", "data": {"id": f"d{n}", "object_name": "o"}}
        return Reply(body={"items": [item], "count": 1, "next_cursor": str(n + 1)})

    raw_server.set(handler)
    got: list[ListingPage] = []
    async with aiohttp.ClientSession() as session:
        pages = api(session, raw_server.url).asset_pages(DV, limit=10)
        with anyio.fail_after(30), pytest.raises(PlatformError, match="past its count"):
            await drain(pages, got)
    assert sum(p.size for p in got) == listing_bound(1, 10) == 11
    assert len(raw_server.seen) <= 13  # the pages listed, the refused one, one read ahead

    # A live version that grows while it is listed, and says so in its counts, is listed to
    # its end: 30 assets when listing starts, 40 by its end.
    def growing(seen: Seen) -> Reply:
        n = int(dict(seen.query).get("cursor", "0"))
        items = [
            {"id": f"a{n}-{i}", "data": {"id": f"d{n}-{i}", "object_name": "o"}} for i in range(10)
        ]
        following = str(n + 1) if n < 3 else None
        return Reply(body={"items": items, "count": 30 + 3 * n, "next_cursor": following})

    raw_server.set(growing)
    async with aiohttp.ClientSession() as session:
        pages = [p async for p in api(session, raw_server.url).asset_pages(DV, limit=10)]
    assert sum(p.size for p in pages) == 40


async def test_a_page_without_count_is_refused(raw_server: RawServer) -> None:
    raw_server.set(lambda _: Reply(body={"items": ["x"], "next_cursor": None}))
    async with aiohttp.ClientSession() as session:
        with pytest.raises(PlatformError, match="without a count"):
            [_ async for _ in api(session, raw_server.url).asset_id_pages(DV)]
