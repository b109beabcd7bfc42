"""Mutations take effect at once and show on every endpoint that exposes what they change."""

from __future__ import annotations

import hashlib

import pytest

from engine.emulator import Emulator

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
