"""Mutations take effect at once and show on every endpoint that exposes what they change."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from multidict import CIMultiDict

from engine.emulator import Emulator, FaultRule
from engine.emulator.ranges import http_date

from .conftest import Api

pytestmark = pytest.mark.anyio


async def test_replace_data(api: Api, emu: Emulator) -> None:
    asset_id = list(emu.dataset.asset_ids())[4]
    old = emu.dataset.expected(asset_id)
    old_url = (await api.ok(f"/api/asset/{asset_id}"))["data"]["presigned_url"]
    new_data_id = emu.replace_data(asset_id)
    new = emu.dataset.expected(asset_id)
    assert new.data_id == new_data_id != old.data_id
    assert new.object_name != old.object_name
    assert new.sha256 != old.sha256
    assert new.filename == old.filename
    # One change at a time: tags, dimensions and annotations stay.
    assert (new.tags, new.data_tags) == (old.tags, old.data_tags)
    assert (new.width, new.height, new.annotations) == (old.width, old.height, old.annotations)
    detail = await api.ok(f"/api/asset/{asset_id}")
    assert detail["data"]["id"] == new_data_id
    async with api.session.get(detail["data"]["presigned_url"]) as response:
        assert hashlib.sha256(await response.read()).hexdigest() == new.sha256
        assert response.headers["ETag"] == new.etag
    # The old object is still in storage, as on a real datalake: old URLs keep working.
    async with api.session.get(old_url) as response:
        assert hashlib.sha256(await response.read()).hexdigest() == old.sha256
    assert (await api.ok(f"/api/data/{old.data_id}"))["id"] == old.data_id
    _, body = await api.xget(f"{api.dv}/assets", {"data_ids": [old.data_id]})
    assert body["items"] == []  # the asset no longer points at the old data
    _, body = await api.xget(f"{api.dv}/assets", {"data_ids": [new_data_id]})
    assert [i["id"] for i in body["items"]] == [asset_id]


async def test_add_and_delete_assets(api: Api, emu: Emulator) -> None:
    ids = list(emu.dataset.asset_ids())
    added = emu.add_assets(3)
    assert len(set(added)) == 3
    assert list(emu.dataset.asset_ids()) == ids + added
    emu.delete_assets([ids[0], ids[10]])
    listed = [i["id"] for i in await api.list_all(limit=9)]
    assert listed == [a for a in ids if a not in (ids[0], ids[10])] + added
    assert (await api.ok(f"{api.dv}/assets"))["count"] == len(ids) + 1
    assert (await api.get(f"/api/asset/{ids[0]}"))[0] == 404
    new = emu.dataset.expected(added[0])
    async with api.session.get(
        (await api.ok(f"/api/asset/{added[0]}"))["data"]["presigned_url"]
    ) as response:
        assert hashlib.sha256(await response.read()).hexdigest() == new.sha256
    with pytest.raises(KeyError):
        emu.delete_assets([ids[0]])
    with pytest.raises(KeyError):
        emu.dataset.expected(ids[0])


async def test_tags(api: Api, emu: Emulator) -> None:
    asset_id = list(emu.dataset.asset_ids())[2]
    emu.set_asset_tags(asset_id, ["golden", "train"])
    emu.set_data_tags(asset_id, ["sensor-9"])
    assert emu.dataset.expected(asset_id).tags == ["golden", "train"]
    detail = await api.ok(f"/api/asset/{asset_id}")
    assert [t["name"] for t in detail["tags"]] == ["golden", "train"]
    data = await api.ok(f"/api/data/{detail['data']['id']}")
    assert [t["name"] for t in data["tags"]] == ["sensor-9"]
    assert "golden" in {t["name"] for t in (await api.ok(f"{api.dv}/tags"))["items"]}
    lake = (await api.ok(f"/api/datalake/{emu.datalake_id}/tags", limit=1000))["items"]
    assert "sensor-9" in {t["name"] for t in lake}
    assert [i["id"] for i in await api.list_all(q='tags.name = "golden"')] == [asset_id]
    assert [i["id"] for i in await api.list_all(q='data.tags.name = "sensor-9"')] == [asset_id]
    emu.set_asset_tags(asset_id, [])
    assert (await api.ok(f"/api/asset/{asset_id}"))["tags"] == []


async def test_set_and_mutate_annotations(api: Api, emu: Emulator) -> None:
    asset_id = list(emu.dataset.asset_ids())[1]
    shape = {"x": 1, "y": 2, "w": 3, "h": 4, "label": "cat", "text": None, "attributes": {}}
    ids = emu.set_annotations(asset_id, [{"status": "REFUSED", "rectangles": [shape]}])
    assert len(ids) == 1
    bulk_status, bulk = await api.xget(f"{api.dv}/annotations", ids)
    assert bulk_status == 200
    assert bulk[0]["rectangles"] == [shape]
    assert bulk[0]["status"] == "REFUSED"
    assert bulk[0]["asset_id"] == asset_id
    assert bulk[0]["points"] == []
    assert await api.ok(f"{api.dv}/annotations/ids", asset_ids=asset_id) == ids
    listed = (await api.ok(f"/api/asset/{asset_id}/annotations"))["items"]
    assert [a["id"] for a in listed] == ids
    new_ids = emu.mutate_annotations(asset_id)
    assert new_ids
    assert set(new_ids).isdisjoint(ids)
    assert await api.ok(f"{api.dv}/annotations/ids", asset_ids=asset_id) == new_ids
    assert (await api.xget(f"{api.dv}/annotations", ids))[1] == []  # old ids are gone
    again = emu.mutate_annotations(asset_id)
    assert set(again).isdisjoint(new_ids)
    assert [a["id"] for a in emu.dataset.expected(asset_id).annotations] == again


async def _get(
    api: Api, url: str, headers: dict[str, str] | None = None
) -> tuple[int, CIMultiDict[str], bytes]:
    async with api.session.get(url, headers=headers or {}) as response:
        return response.status, response.headers.copy(), await response.read()


async def _sized_asset(api: Api, emu: Emulator, min_size: int = 1000) -> tuple[str, str]:
    """(asset_id, signed URL) of an asset of at least ``min_size`` bytes."""
    for asset_id in emu.dataset.asset_ids():
        if emu.dataset.expected(asset_id).size >= min_size:
            return asset_id, (await api.ok(f"/api/asset/{asset_id}"))["data"]["presigned_url"]
    raise AssertionError("no asset that large")


async def test_rewrite_object_in_place(api: Api, emu: Emulator) -> None:
    asset_id, url = await _sized_asset(api, emu)
    old = emu.dataset.expected(asset_id)
    status, headers, body = await _get(api, url)
    assert status == 200 and headers["ETag"] == old.etag
    assert hashlib.sha256(body).hexdigest() == old.sha256

    new = emu.rewrite_object(old.data_id)
    # Same identity, same object name, same size; new bytes, ETag and Last-Modified.
    assert (new.asset_id, new.data_id, new.object_name) == (asset_id, old.data_id, old.object_name)
    assert new.size == old.size and new.revision == 1 and old.revision == 0
    assert new.sha256 != old.sha256 and new.etag != old.etag
    assert new.last_modified > old.last_modified
    assert emu.dataset.expected(asset_id).sha256 == new.sha256  # what a mirror must now hold
    assert old.sha256 == hashlib.sha256(body).hexdigest()  # an earlier snapshot keeps its bytes
    # One change at a time: tags, dimensions and annotations stay; the API shows the same data.
    assert (new.tags, new.data_tags, new.annotations) == (old.tags, old.data_tags, old.annotations)
    assert (new.width, new.height, new.filename) == (old.width, old.height, old.filename)
    assert (await api.ok(f"/api/asset/{asset_id}"))["data"]["id"] == old.data_id

    # The URL issued before the rewrite is still valid and serves the new bytes.
    status, headers, body = await _get(api, url)
    assert status == 200
    assert (
        hashlib.sha256(body).hexdigest()
        == new.sha256
        == emu.dataset.expected_data(old.data_id).sha256
    )
    assert headers["ETag"] == new.etag
    assert headers["Last-Modified"] == http_date(new.last_modified)
    content = emu.dataset.content(old.data_id)
    # If-Range with the old validators no longer matches: the whole new object, 200.
    for stale in (old.etag, http_date(old.last_modified)):
        status, headers, body = await _get(api, url, {"Range": "bytes=10-19", "If-Range": stale})
        assert (status, body) == (200, content)
        assert "Content-Range" not in headers
    for fresh in (new.etag, http_date(new.last_modified)):
        status, headers, body = await _get(api, url, {"Range": "bytes=10-19", "If-Range": fresh})
        assert (status, body) == (206, content[10:20])


async def test_rewrite_with_a_new_size_and_twice_in_one_second(api: Api, emu: Emulator) -> None:
    asset_id, url = await _sized_asset(api, emu)
    old = emu.dataset.expected(asset_id)
    first = emu.rewrite_object(old.data_id, size=old.size + 1000)
    second = emu.rewrite_object(old.data_id)  # the emulator's clock has not moved
    assert (first.revision, second.revision) == (1, 2)
    assert first.size == second.size == old.size + 1000  # the size stays unless given
    assert second.last_modified == first.last_modified + 1  # still strictly later
    assert len({old.etag, first.etag, second.etag}) == 3
    status, headers, body = await _get(api, url)
    assert int(headers["Content-Length"]) == len(body) == old.size + 1000
    assert hashlib.sha256(body).hexdigest() == second.sha256
    empty = emu.rewrite_object(old.data_id, size=0)
    status, headers, body = await _get(api, url)
    assert (status, body, empty.size) == (200, b"", 0)
    status, headers, _ = await _get(api, url, {"Range": "bytes=0-"})
    assert status == 416 and headers["Content-Range"] == "bytes */0"


async def test_rewrite_a_replaced_object_and_errors(api: Api, emu: Emulator) -> None:
    asset_id, old_url = await _sized_asset(api, emu)
    old = emu.dataset.expected(asset_id)
    new_data_id = emu.replace_data(asset_id)
    current = emu.dataset.expected(asset_id)
    rewritten = emu.rewrite_object(old.data_id)  # the replaced data is still in storage
    assert rewritten.data_id == old.data_id and rewritten.sha256 != old.sha256
    assert emu.dataset.expected(asset_id).sha256 == current.sha256  # the asset's data is untouched
    assert emu.dataset.expected(asset_id).data_id == new_data_id
    _, _, body = await _get(api, old_url)
    assert hashlib.sha256(body).hexdigest() == rewritten.sha256
    with pytest.raises(KeyError):
        emu.rewrite_object("not-a-data-id")
    with pytest.raises(ValueError, match="size"):
        emu.rewrite_object(new_data_id, size=-1)


async def test_a_response_under_way_finishes_with_the_bytes_it_started_with(
    api: Api, emu: Emulator
) -> None:
    asset_id, url = await _sized_asset(api, emu, min_size=100_000)
    old = emu.dataset.expected(asset_id)
    emu.faults.add(FaultRule(target="storage", kind="stall", after_bytes=1000, seconds=0.1))
    async with api.session.get(url) as response:
        new = emu.rewrite_object(old.data_id)  # headers are here, the body is held back
        body = await response.read()
    assert response.headers["ETag"] == old.etag
    assert hashlib.sha256(body).hexdigest() == old.sha256 != new.sha256


async def test_rewrite_a_file_backed_object(tmp_path: Path, api: Api) -> None:
    (tmp_path / "real.jpg").write_bytes(b"real bytes" * 100)
    async with Emulator(from_dir=tmp_path) as emu:
        asset_id = next(emu.dataset.asset_ids())
        url = (await Api(emu, api.session).ok(f"/api/asset/{asset_id}"))["data"]["presigned_url"]
        new = emu.rewrite_object(emu.dataset.expected(asset_id).data_id)
        _, _, body = await _get(api, url)
    assert len(body) == 1000 and body != b"real bytes" * 100  # generated now
    assert hashlib.sha256(body).hexdigest() == new.sha256
    assert (tmp_path / "real.jpg").read_bytes() == b"real bytes" * 100  # the folder is untouched
