"""A million-asset version lists page by page without materialising assets or content."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator

import aiohttp
import pytest

from engine.emulator import Emulator

from .conftest import Api

pytestmark = pytest.mark.anyio

MILLION = 1_000_000


@pytest.fixture
async def big() -> AsyncIterator[Emulator]:
    async with Emulator(assets=MILLION, seed=11) as emulator:
        yield emulator


def test_a_million_assets_cost_no_memory_per_asset() -> None:
    tracemalloc.start()
    try:
        emu = Emulator(assets=MILLION)
        assert emu.dataset.count() == MILLION
        last = emu.dataset.codec.encode("asset", MILLION - 1)
        assert emu.dataset.expected(last).asset_id == last
        emu.delete_assets([last])
        assert emu.dataset.count() == MILLION - 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024  # a materialised million would take hundreds of MB


async def test_listing_a_million_assets(big: Emulator, session: aiohttp.ClientSession) -> None:
    api = Api(big, session)
    first = await api.ok(f"{api.dv}/assets", limit=1000)
    assert first["count"] == MILLION
    assert len(first["items"]) == 1000
    second = await api.ok(f"{api.dv}/assets", limit=1000, cursor=first["next_cursor"])
    ids = [i["id"] for i in first["items"] + second["items"]]
    assert len(set(ids)) == 2000
    assert ids == [big.dataset.codec.encode("asset", i) for i in range(2000)]

    deep = await api.ok(f"{api.dv}/assets", limit=1000, offset=MILLION - 1500)
    follow = await api.ok(f"{api.dv}/assets", limit=1000, cursor=deep["next_cursor"])
    assert len(follow["items"]) == 500
    assert follow["next_cursor"] is None
    assert follow["items"][-1]["id"] == big.dataset.codec.encode("asset", MILLION - 1)

    newest = await api.ok(f"{api.dv}/assets", limit=10, offset=0, order_by="-created_at")
    assert newest["items"][0]["id"] == follow["items"][-1]["id"]
    ids_page = await api.ok(f"{api.dv}/assets/ids/paginated", limit=1000, offset=MILLION - 10)
    assert len(ids_page["items"]) == 10
    assert ids_page["next_cursor"] is None

    big.delete_assets([big.dataset.codec.encode("asset", MILLION - 1)])
    tail = await api.ok(f"{api.dv}/assets", limit=1000, offset=MILLION - 3)
    assert len(tail["items"]) == 2
    assert tail["count"] == MILLION - 1

    # Listing served metadata only: no byte of content generated or hashed.
    assert big.counters.storage_bytes == 0
    assert big.dataset.content_source.cached == 0
