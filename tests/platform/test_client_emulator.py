"""PlatformClient against the in-process emulator: behaviour, faults and request counts."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from pydantic import SecretStr

from engine.emulator import Emulator, FaultRule
from engine.errors import ApiUnavailable, AuthError, NotFoundError, PlatformError
from engine.platform import PlatformClient
from engine.platform.query import tag_equals, tags_filter
from engine.settings import RetryPolicy, Timeouts

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.01, max_retry_after=0.5)


@asynccontextmanager
async def platform(
    token: str | None = None, **emulator: object
) -> AsyncIterator[tuple[Emulator, PlatformClient]]:
    async with Emulator(**emulator) as emu, aiohttp.ClientSession() as session:  # type: ignore[arg-type]
        secret = SecretStr(token if token is not None else emu.token)
        yield emu, PlatformClient(session, emu.api_url, secret, FAST, Timeouts(api=30))


async def listed_ids(client: PlatformClient, dv: str, **kw: object) -> list[str]:
    return [a.id async for page in client.asset_pages(dv, **kw) for a in page.items]  # type: ignore[arg-type]


async def test_ping_and_version() -> None:
    async with platform(assets=3) as (emu, client):
        ping = await client.ping()
        assert ping.default_organization == emu.organization_id
        assert client.organization_id == emu.organization_id
        org = await client.organization(emu.organization_id)
        assert org.id == emu.organization_id
        version = await client.dataset_version(emu.dataset_version_id)
        assert version.id == emu.dataset_version_id
        assert version.type


async def test_paging_across_many_pages() -> None:
    async with platform(assets=2345) as (emu, client):
        dv = emu.dataset_version_id
        expected = list(emu.dataset.asset_ids())
        pages = [p async for p in client.asset_pages(dv)]
        assert [len(p.items) for p in pages] == [1000, 1000, 345]
        assert all(p.count == 2345 for p in pages)
        assert pages[-1].next_cursor is None
        assert [a.id for p in pages for a in p.items] == expected
        assert emu.counters.requests["assets_list"] == 3
        for asset in pages[1].items[:50]:
            want = emu.dataset.expected(asset.id)
            assert asset.data_id == want.data_id
            assert asset.object_name == want.object_name
            assert asset.filename == want.filename
            assert asset.data.content_type == want.content_type
            assert (asset.data.width, asset.data.height) == (want.width, want.height)

        emu.counters.reset()
        assert await listed_ids(client, dv, limit=100) == expected
        assert emu.counters.requests["assets_list"] == 24


async def test_ids_listing() -> None:
    async with platform(assets=1500) as (emu, client):
        dv = emu.dataset_version_id
        pages = [ids async for ids in client.asset_id_pages(dv, limit=700)]
        assert [len(p) for p in pages] == [700, 700, 100]
        assert [i for p in pages for i in p] == list(emu.dataset.asset_ids())


async def test_null_presigned_url_and_presign() -> None:
    async with platform(assets=60, null_url_share=0.5) as (emu, client):
        assets = [
            a
            for p in [p async for p in client.asset_pages(emu.dataset_version_id)]
            for a in p.items
        ]
        missing = [a for a in assets if a.presigned_url is None]
        assert missing
        assert len(missing) < len(assets)
        asset = missing[0]
        url = await client.presigned_url(asset.data_id)
        async with aiohttp.ClientSession() as plain, plain.get(url) as resp:
            assert resp.status == 200
            assert await resp.read() == emu.dataset.content(asset.data_id)
        with pytest.raises(NotFoundError):
            await client.presigned_url("0190c8a5-0000-7000-8000-000000000000")


async def test_xget_by_ids_gives_fresh_urls() -> None:
    async with platform(assets=1600, null_url_share=1.0) as (emu, client):
        dv = emu.dataset_version_id
        all_ids = list(emu.dataset.asset_ids())
        wanted = [*all_ids[::-1][:1200], "0190c8a5-0000-7000-8000-000000000000"]
        found = await client.assets_by_ids(dv, wanted)
        assert sorted(a.id for a in found) == sorted(all_ids[::-1][:1200])
        assert all(a.presigned_url for a in found)
        assert emu.counters.requests["assets_xget"] == 2
        assert await client.assets_by_ids(dv, []) == []


async def test_q_filters_on_asset_and_data_tags() -> None:
    async with platform(assets=300) as (emu, client):
        dv = emu.dataset_version_id
        ids = list(emu.dataset.asset_ids())
        tags = [t.name for t in await client.version_tags(dv)]
        assert tags
        name = tags[0]
        want = [a for a in ids if name in emu.dataset.expected(a).tags]
        assert want
        assert await listed_ids(client, dv, q=tags_filter([name])) == want
        got = [i async for page in client.asset_id_pages(dv, q=tag_equals(name)) for i in page]
        assert got == want

        data = await client.data(emu.dataset.expected(ids[0]).data_id)
        assert data.datalake_id == emu.datalake_id
        assert [t.name for t in data.tags] == emu.dataset.expected(ids[0]).data_tags
        lake_tags = [t.name for t in await client.datalake_tags(emu.datalake_id)]
        assert lake_tags
        dname = lake_tags[0]
        dwant = [a for a in ids if dname in emu.dataset.expected(a).data_tags]
        q = tag_equals(dname, data=True)
        assert [i async for page in client.asset_id_pages(dv, q=q) for i in page] == dwant
        both = [a for a in want if dname in emu.dataset.expected(a).data_tags]
        assert await listed_ids(client, dv, q=tags_filter([name], [dname])) == both


async def test_hostile_tag_names_filter_exactly() -> None:
    async with platform(assets=20) as (emu, client):
        dv = emu.dataset_version_id
        ids = list(emu.dataset.asset_ids())
        odd = ['say "hi"', "back\\slash", 'both \\" mixed', "日本 tag", "x) or (y"]
        for index, name in enumerate(odd):
            emu.set_asset_tags(ids[index], [name])
        emu.set_asset_tags(ids[10], ["say"])  # a prefix of a hostile name must not match it
        for index, name in enumerate(odd):
            assert await listed_ids(client, dv, q=tags_filter([name])) == [ids[index]]
        assert await listed_ids(client, dv, q=tags_filter(odd)) == ids[: len(odd)]


async def test_asset_detail_and_annotations() -> None:
    async with platform(assets=230) as (emu, client):
        dv = emu.dataset_version_id
        ids = list(emu.dataset.asset_ids())
        detail = await client.asset(ids[0])
        assert [t.name for t in detail.tags] == emu.dataset.expected(ids[0]).tags

        annotation_ids = await client.annotation_ids(dv, ids)
        assert emu.counters.requests["annotation_ids"] == math.ceil(len(ids) / 50)
        everything = await client.annotation_ids(dv, None)
        assert sorted(everything) == sorted(annotation_ids)
        bulk = await client.annotations_bulk(dv, annotation_ids)
        assert emu.counters.requests["annotations_bulk"] == math.ceil(len(annotation_ids) / 1000)
        by_asset: dict[str, list[dict[str, object]]] = {}
        for annotation in bulk:
            by_asset.setdefault(annotation.asset_id, []).append(annotation.raw())
        for asset_id in ids:
            expected = emu.dataset.expected(asset_id).annotations
            assert sorted(by_asset.get(asset_id, []), key=str) == sorted(expected, key=str)
        summaries = await client.asset_annotations(ids[0])
        assert {a.id for a in summaries} == {a["id"] for a in by_asset.get(ids[0], [])}


async def test_wrong_token_is_auth_error() -> None:
    async with platform(token="wrong-token-123", assets=1) as (emu, client):
        with pytest.raises(AuthError) as info:
            await client.ping()
        assert "wrong-token-123" not in str(info.value)
        assert emu.token not in str(info.value)
        assert info.value.exit_code == 3
        assert emu.counters.requests["ping"] == 1  # not retried


async def test_unknown_version_is_not_found() -> None:
    async with platform(assets=1) as (_emu, client):
        unknown = "0190c8a5-0000-7000-8000-000000000001"
        with pytest.raises(NotFoundError):
            await client.dataset_version(unknown)
        with pytest.raises(NotFoundError):
            [p async for p in client.asset_pages(unknown)]


@pytest.mark.parametrize(
    ("status", "kind"),
    [(429, "assets_list"), (503, "assets_list"), (503, "presign"), (429, "annotations_bulk")],
)
async def test_retry_after_is_honoured_and_recovers(status: int, kind: str) -> None:
    async with platform(assets=1200) as (emu, client):
        dv = emu.dataset_version_id
        rule = emu.faults.add(
            FaultRule(target=kind, kind="status", status=status, retry_after=0.01, count=2)
        )
        if kind == "assets_list":
            assert await listed_ids(client, dv) == list(emu.dataset.asset_ids())
            assert emu.counters.requests[kind] == 2 + 2
        elif kind == "presign":
            assert await client.presigned_url(
                emu.dataset.expected(next(emu.dataset.asset_ids())).data_id
            )
            assert emu.counters.requests[kind] == 3
        else:
            ids = await client.annotation_ids(dv, None)
            assert len(await client.annotations_bulk(dv, ids[:10])) == 10
        assert rule.hits == 2


async def test_permanent_5xx_gives_up_with_api_unavailable() -> None:
    async with platform(assets=1) as (emu, client):
        emu.faults.add(FaultRule(target="datasetversion", kind="status", status=500))
        with pytest.raises(ApiUnavailable) as info:
            await client.dataset_version(emu.dataset_version_id)
        assert info.value.retryable
        assert info.value.status == 500
        assert emu.counters.requests["datasetversion"] == FAST.attempts


async def test_connection_dropped_mid_page_is_retried() -> None:
    async with platform(assets=2100) as (emu, client):
        rule = emu.faults.add(
            FaultRule(target="assets_list", kind="drop", after_bytes=1000, count=2)
        )
        assert await listed_ids(client, emu.dataset_version_id) == list(emu.dataset.asset_ids())
        assert rule.hits == 2


@pytest.mark.parametrize(("add", "remove"), [(7, 0), (0, 7), (5, 5)])
async def test_listing_drift(add: int, remove: int) -> None:
    async with platform(assets=2500) as (emu, client):
        before = list(emu.dataset.asset_ids())
        emu.faults.add(
            FaultRule(target="assets_list", kind="drift", add=add, remove=remove, count=2)
        )
        seen = await listed_ids(client, emu.dataset_version_id)
        after = list(emu.dataset.asset_ids())
        assert len(seen) == len(set(seen)), "an asset listed twice"
        assert set(after) <= set(seen), "a live asset was skipped"
        assert set(seen) <= set(before) | set(after)
        assert len(after) == len(before) + 2 * (add - remove)


async def test_server_side_limit_validation() -> None:
    async with platform(assets=1) as (emu, client):
        path = f"/api/dataset/version/{emu.dataset_version_id}/assets"
        with pytest.raises(PlatformError) as info:
            await client._http.request("GET", path, params=[("limit", "1001")])
        assert type(info.value) is PlatformError
        assert info.value.status == 400
        assert emu.counters.requests["assets_list"] == 1


async def test_cancelled_listing_leaves_nothing_running() -> None:
    import anyio

    async with platform(assets=2500) as (emu, client):
        # The second page stalls: the consumer is cancelled while waiting for it.
        emu.faults.add(
            FaultRule(target="assets_list", kind="stall", after_bytes=10, seconds=30, count=1)
        )
        got: list[int] = []
        with anyio.move_on_after(0.3) as scope:
            async for page in client.asset_pages(emu.dataset_version_id):
                got.append(len(page.items))
        assert scope.cancelled_caught
        emu.faults.clear()
        # The session and the client are still fine afterwards.
        assert len(await listed_ids(client, emu.dataset_version_id)) == 2500


async def test_annotation_dicts_are_what_the_api_sent():
    async with Emulator(assets=30, seed=9) as emu, aiohttp.ClientSession() as session:
        client = PlatformClient(session, emu.api_url, SecretStr(emu.token))
        dv = emu.dataset_version_id
        ids = list(emu.dataset.asset_ids())
        annotation_ids = await client.annotation_ids(dv, ids)
        answer = await client.annotation_dicts(dv, annotation_ids)
        assert answer.unreadable == {}
        assert answer.unattributed is None
        raw = answer.annotations
        modelled = await client.annotations_bulk(dv, annotation_ids)
        assert raw == [a.raw() for a in modelled]
        by_asset: dict[str, list[dict]] = {}
        for annotation in raw:
            by_asset.setdefault(annotation["asset_id"], []).append(annotation)
        for asset_id in ids:
            assert by_asset.get(asset_id, []) == emu.dataset.expected(asset_id).annotations
