"""Every API endpoint of platform-api.md, its errors and its pagination."""

from __future__ import annotations

import json
import uuid

import aiohttp
import pytest

from engine.emulator import Emulator
from engine.emulator.annotations import STATUSES

from .conftest import Api, FakeClock

# Explicit, so parametrized async tests get both backends (the root conftest marks too late).
pytestmark = pytest.mark.anyio

SHAPES = ("rectangles", "polygons", "classifications", "lines", "points")


async def test_ping_organization_and_versions(api: Api, emu: Emulator) -> None:
    ping = await api.ok("/api/home/ping")
    assert ping == {
        "sdk_version": "6.37.0",
        "username": "emulator",
        "default_organization": emu.organization_id,
    }
    org = await api.ok(f"/api/organization/{emu.organization_id}")
    assert org["id"] == emu.organization_id
    assert org["default_connector_id"] is None
    found = await api.ok(
        f"/api/organization/{emu.organization_id}/datasetversions/find",
        id=emu.dataset_version_id,
    )
    direct = await api.ok(api.dv)
    assert found == direct
    assert set(direct) >= {"id", "origin_name", "origin_id", "version", "type", "tags"}
    assert direct["id"] == emu.dataset_version_id
    assert emu.dataset_version_ids == [emu.dataset_version_id]


@pytest.mark.parametrize(
    "path",
    [
        "/api/organization/{random}",
        "/api/organization/{org}/datasetversions/find?id={random}",
        "/api/dataset/version/{random}",
        "/api/dataset/version/{random}/assets",
        "/api/asset/{random}",
        "/api/data/{random}",
        "/api/data/{random}/presigned-url",
        "/api/datalake/{random}/tags",
        "/api/asset/{random}/annotations",
        "/api/no/such/route",
        "/nothing",
    ],
)
async def test_unknown_objects_and_routes_are_404_json(api: Api, emu: Emulator, path: str) -> None:
    status, body = await api.get(path.format(random=uuid.uuid4(), org=emu.organization_id))
    assert status == 404
    assert isinstance(body, dict)
    assert body["message"]


async def test_wrong_method_is_405_json(api: Api) -> None:
    status, body = await api.call("POST", "/api/home/ping")
    assert status == 405
    assert body["message"]


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Token x", "Bearer"])
async def test_bad_or_missing_token_is_401_json(
    api: Api, emu: Emulator, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}
    for path in ("/api/home/ping", f"{api.dv}/assets"):
        status, body = await api.call("GET", path, headers=headers)
        assert status == 401
        assert isinstance(body["message"], str)
        assert emu.token not in json.dumps(body)


async def test_cursor_listing_returns_every_asset_once_in_order(api: Api, emu: Emulator) -> None:
    items = await api.list_all(limit=7)
    assert [i["id"] for i in items] == list(emu.dataset.asset_ids())
    first = await api.ok(f"{api.dv}/assets", limit=7)
    assert first["count"] == 60
    for item in items:
        expected = emu.dataset.expected(item["id"])
        data = item["data"]
        assert data["id"] == expected.data_id
        assert data["object_name"] == expected.object_name
        assert data["filename"] == expected.filename
        assert data["content_type"] == expected.content_type
        assert data["type"] == "IMAGE"
        assert data["upload_status"] == "DONE"
        assert data["meta"] == {"width": expected.width, "height": expected.height}
        assert data["presigned_url"].startswith(emu.api_url)
        assert "tags" not in item


async def test_default_limit_is_100_and_limits_are_checked(api: Api) -> None:
    emulator = api.emu
    page = await api.ok(f"{api.dv}/assets")
    assert len(page["items"]) == min(100, emulator.dataset.count())
    for bad in ("0", "-1", "1001", "ten", "1.5"):
        status, body = await api.get(f"{api.dv}/assets", limit=bad)
        assert status == 400, bad
        assert body["message"]
    assert (await api.get(f"{api.dv}/assets", limit="1000"))[0] == 200


async def test_offset_on_first_page_then_cursor(api: Api, emu: Emulator) -> None:
    ids = list(emu.dataset.asset_ids())
    page = await api.ok(f"{api.dv}/assets", limit=5, offset=10)
    assert [i["id"] for i in page["items"]] == ids[10:15]
    page = await api.ok(f"{api.dv}/assets", limit=5, cursor=page["next_cursor"])
    assert [i["id"] for i in page["items"]] == ids[15:20]
    last = await api.ok(f"{api.dv}/assets", limit=5, offset=55)
    assert len(last["items"]) == 5
    assert last["next_cursor"] is None
    beyond = await api.ok(f"{api.dv}/assets", limit=5, offset=80)
    assert beyond["items"] == []
    assert beyond["next_cursor"] is None


@pytest.mark.parametrize(
    "params",
    [
        {"offset": "-1"},
        {"offset": "x"},
        {"cursor": "not-a-cursor"},
        {"cursor": "e30"},  # "{}"
        {"order_by": "size"},
        {"upload_statuses": "SOMETIMES"},
        {"types": "PDF"},
        {"q": "tags.name ~ 'x'"},
        {"q": 'colour = "red"'},
        {"q": 'tags.name in ("a"'},
        {"q": 'tags.name = "a" or tags.name = "b"'},
    ],
)
async def test_malformed_listing_parameters_are_400(api: Api, params: dict[str, str]) -> None:
    status, body = await api.get(f"{api.dv}/assets", **params)
    assert status == 400
    assert body["message"]


async def test_cursor_with_offset_or_order_by_or_other_filter_is_400(api: Api) -> None:
    page = await api.ok(f"{api.dv}/assets", limit=5)
    cursor = page["next_cursor"]
    assert (await api.get(f"{api.dv}/assets", cursor=cursor, offset=5))[0] == 400
    assert (await api.get(f"{api.dv}/assets", cursor=cursor, order_by="created_at"))[0] == 400
    assert (await api.get(f"{api.dv}/assets", cursor=cursor, q='tags.name = "val"'))[0] == 400


async def test_offset_mode_with_order_by(api: Api, emu: Emulator) -> None:
    ids = list(emu.dataset.asset_ids())
    page = await api.ok(f"{api.dv}/assets", limit=10, offset=20, order_by="created_at")
    assert [i["id"] for i in page["items"]] == ids[20:30]
    assert page["count"] == 60
    assert page["next_cursor"] is None
    page = await api.ok(f"{api.dv}/assets", limit=10, offset=0, order_by="-created_at")
    assert [i["id"] for i in page["items"]] == ids[::-1][:10]
    page = await api.ok(f"{api.dv}/assets", limit=1000, order_by="filename")
    names = [i["data"]["filename"] for i in page["items"]]
    assert names == sorted(names)


async def test_q_filters_asset_and_data_tags(api: Api, emu: Emulator) -> None:
    expected = {a: emu.dataset.expected(a) for a in emu.dataset.asset_ids()}

    async def ids(q: str) -> list[str]:
        items = await api.list_all(limit=9, q=q)
        page = await api.ok(f"{api.dv}/assets", q=q, limit=1)
        assert page["count"] == len(items)
        return [i["id"] for i in items]

    assert await ids('tags.name in ("val","test")') == [
        a for a, e in expected.items() if {"val", "test"} & set(e.tags)
    ]
    assert await ids('tags.name = "train"') == [a for a, e in expected.items() if "train" in e.tags]
    assert await ids('data.tags.name = "camera-b"') == [
        a for a, e in expected.items() if "camera-b" in e.data_tags
    ]
    both = 'tags.name = "train" and data.tags.name in ("night", "blurry")'
    assert await ids(both) == [
        a
        for a, e in expected.items()
        if "train" in e.tags and {"night", "blurry"} & set(e.data_tags)
    ]
    assert await ids('tags.name = "no such tag"') == []


async def test_q_string_literals_use_json_escapes(api: Api, emu: Emulator) -> None:
    first, second = list(emu.dataset.asset_ids())[:2]
    emu.set_asset_tags(first, ['say "hi"', "back\\slash"])
    emu.set_data_tags(second, ["new\nline"])
    assert [i["id"] for i in await api.list_all(q='tags.name = "back\\\\slash"')] == [first]
    quoted = await api.list_all(q='tags.name in ("say \\"hi\\"")')
    assert first in [i["id"] for i in quoted]
    assert [i["id"] for i in await api.list_all(q='data.tags.name = "new\\nline"')] == [second]


async def test_upload_statuses_and_types_filter(api: Api) -> None:
    sdk_like = {"upload_statuses": ["PENDING", "COMPUTING", "DONE", "ERROR"], "types": ["IMAGE"]}
    assert (await api.ok(f"{api.dv}/assets", **sdk_like))["count"] == 60
    none = await api.ok(f"{api.dv}/assets", upload_statuses="PENDING")
    assert none == {"items": [], "count": 0, "next_cursor": None}
    assert (await api.ok(f"{api.dv}/assets", types="VIDEO"))["count"] == 0


async def test_null_presigned_urls(clock: FakeClock, session: aiohttp.ClientSession) -> None:
    async with Emulator(assets=100, null_url_share=0.3, clock=clock) as emu:
        api = Api(emu, session)
        items = await api.list_all(limit=100)
        nulls = [i for i in items if i["data"]["presigned_url"] is None]
        assert 10 <= len(nulls) <= 50
        # The other endpoints always sign afresh.
        one = nulls[0]
        _, body = await api.xget(f"{api.dv}/assets", {"ids": [one["id"]]})
        assert body["items"][0]["data"]["presigned_url"]
        presigned = await api.ok(f"/api/data/{one['data']['id']}/presigned-url")
        assert presigned["presigned_url"].startswith(emu.api_url)


async def test_asset_ids_paginated(api: Api, emu: Emulator) -> None:
    ids: list[str] = []
    page = await api.ok(f"{api.dv}/assets/ids/paginated", limit=8)
    assert page["count"] == 60
    ids += page["items"]
    while page["next_cursor"]:
        page = await api.ok(f"{api.dv}/assets/ids/paginated", limit=8, cursor=page["next_cursor"])
        ids += page["items"]
    assert ids == list(emu.dataset.asset_ids())
    filtered = await api.ok(f"{api.dv}/assets/ids/paginated", q='tags.name = "val"', limit=1000)
    assert filtered["items"] == [
        a for a in emu.dataset.asset_ids() if "val" in emu.dataset.expected(a).tags
    ]
    assert (await api.get(f"{api.dv}/assets/ids/paginated", limit=1001))[0] == 400


@pytest.mark.parametrize("key", ["ids", "data_ids", "object_names", "filenames"])
async def test_xget_by_each_key(api: Api, emu: Emulator, key: str) -> None:
    chosen = list(emu.dataset.asset_ids())[5:9]
    expected = [emu.dataset.expected(a) for a in chosen]
    attribute = {"ids": "asset_id", "data_ids": "data_id"}.get(key, key[:-1])
    values = [getattr(e, attribute) for e in expected][::-1]  # order asked is not order answered
    status, body = await api.xget(f"{api.dv}/assets", {key: values, "types": ["IMAGE"]})
    assert status == 200
    got = [i["id"] for i in body["items"]]
    if key == "filenames":  # names repeat: every asset with one of these names
        assert set(chosen) <= set(got)
    else:
        assert got == chosen
    assert body["count"] == len(body["items"])
    assert all(i["data"]["presigned_url"] for i in body["items"])


async def test_xget_filename_startswith_and_q(api: Api, emu: Emulator) -> None:
    status, body = await api.xget(f"{api.dv}/assets", {"filename_startswith": ["folder_"]})
    assert status == 200
    assert body["items"]
    assert all(i["data"]["filename"].startswith("folder_") for i in body["items"])
    ids = list(emu.dataset.asset_ids())
    status, body = await api.xget(f"{api.dv}/assets", {"ids": ids, "q": 'tags.name = "val"'})
    assert [i["id"] for i in body["items"]] == [
        a for a in ids if "val" in emu.dataset.expected(a).tags
    ]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"ids": []},
        {"ids": ["a"], "filenames": ["b"]},
        {"ids": "not-a-list"},
        {"ids": [str(uuid.uuid4())] * 1001},
        ["ids"],
        {"ids": ["x"], "types": ["PDF"]},
        {"ids": ["x"], "types": 5},
        {"ids": ["x"], "q": 5},
        {"ids": [1, 2]},
    ],
)
async def test_xget_malformed_bodies_are_400(api: Api, body: object) -> None:
    status, answer = await api.xget(f"{api.dv}/assets", body)
    assert status == 400
    assert answer["message"]


async def test_xget_body_that_is_not_json_is_400(api: Api, emu: Emulator) -> None:
    async with api.session.request(
        "XGET", emu.api_url + f"{api.dv}/assets", data=b"{nope", headers=api.headers
    ) as response:
        assert response.status == 400


async def test_asset_and_data_detail_with_tags(api: Api, emu: Emulator) -> None:
    asset_id = list(emu.dataset.asset_ids())[3]
    expected = emu.dataset.expected(asset_id)
    asset = await api.ok(f"/api/asset/{asset_id}")
    assert asset["id"] == asset_id
    assert asset["data"]["id"] == expected.data_id
    assert [t["name"] for t in asset["tags"]] == expected.tags
    assert {t["target_type"] for t in asset["tags"]} == {"ASSET"}
    data = await api.ok(f"/api/data/{expected.data_id}")
    assert data["id"] == expected.data_id
    assert data["datalake_id"] == emu.datalake_id
    assert [t["name"] for t in data["tags"]] == expected.data_tags
    assert {t["target_type"] for t in data["tags"]} == {"DATA"}
    for tag in asset["tags"] + data["tags"]:
        uuid.UUID(tag["id"])


async def test_version_datalake_tags_and_labels(api: Api, emu: Emulator) -> None:
    version_tags = (await api.ok(f"{api.dv}/tags"))["items"]
    names = {t["name"] for t in version_tags}
    used = {t for a in emu.dataset.asset_ids() for t in emu.dataset.expected(a).tags}
    assert used <= names
    lake = f"/api/datalake/{emu.datalake_id}/tags"
    all_tags = (await api.ok(lake, limit=1000))["items"]
    assert {t["target_type"] for t in all_tags} == {"DATA"}
    paged = (await api.ok(lake, limit=2, offset=0))["items"] + (
        await api.ok(lake, limit=1000, offset=2)
    )["items"]
    assert paged == all_tags
    labels = (await api.ok(f"{api.dv}/labels"))["items"]
    assert {"cat", "dog", "road", "eye"} <= {label["name"] for label in labels}
    assert all(set(label) == {"id", "name", "group_id"} for label in labels)


async def test_annotations_endpoints(api: Api, emu: Emulator) -> None:
    ids = list(emu.dataset.asset_ids())
    counts = {len(emu.dataset.expected(a).annotations) for a in ids}
    assert counts == {0, 1, 2, 3}
    asset_id = next(a for a in ids if len(emu.dataset.expected(a).annotations) == 3)
    expected = emu.dataset.expected(asset_id).annotations
    listed = (await api.ok(f"/api/asset/{asset_id}/annotations"))["items"]
    assert [a["id"] for a in listed] == [a["id"] for a in expected]
    assert all(set(a) == {"id", "asset_id", "duration", "status", "attributes"} for a in listed)
    by_asset = await api.ok(f"{api.dv}/annotations/ids", asset_ids=asset_id)
    assert by_asset == [a["id"] for a in expected]
    everything = await api.ok(f"{api.dv}/annotations/ids")
    assert len(everything) == sum(len(emu.dataset.expected(a).annotations) for a in ids)
    accepted = await api.ok(f"{api.dv}/annotations/ids", status="ACCEPTED")
    assert set(accepted) < set(everything)
    status, bulk = await api.xget(f"{api.dv}/annotations", everything[:100])
    assert status == 200
    assert [b["id"] for b in bulk] == everything[:100]
    kinds = {kind for b in bulk for kind in SHAPES if b[kind]}
    assert kinds == set(SHAPES)
    for b in bulk:
        assert b["status"] in STATUSES
        for rectangle in b["rectangles"]:
            assert set(rectangle) == {"x", "y", "w", "h", "label", "text", "attributes"}
    unknown = str(uuid.uuid4())
    status, bulk = await api.xget(f"{api.dv}/annotations", [unknown, everything[0]])
    assert [b["id"] for b in bulk] == [everything[0]]


@pytest.mark.parametrize(
    ("method", "suffix", "params", "body"),
    [
        ("GET", "/annotations/ids", {"status": "DONE"}, None),
        ("GET", "/annotations/ids", {"asset_ids": "not-a-uuid"}, None),
        ("XGET", "/annotations", None, {"ids": []}),
        ("XGET", "/annotations", None, [str(uuid.uuid4())] * 1001),
        ("GET", "/assets", {"limit": "5000"}, None),
    ],
)
async def test_annotation_and_listing_bad_parameters(
    api: Api, method: str, suffix: str, params: dict[str, str] | None, body: object
) -> None:
    status, answer = await api.call(method, api.dv + suffix, params=params, body=body)
    assert status == 400
    assert answer["message"]


async def test_presigned_url_endpoint_signs_afresh(
    api: Api, emu: Emulator, clock: FakeClock
) -> None:
    data_id = emu.dataset.expected(next(emu.dataset.asset_ids())).data_id
    first = (await api.ok(f"/api/data/{data_id}/presigned-url"))["presigned_url"]
    clock.advance(10)
    second = (await api.ok(f"/api/data/{data_id}/presigned-url"))["presigned_url"]
    assert first != second
    assert first.split("?")[0] == second.split("?")[0]


async def test_an_empty_version(clock: FakeClock, session: aiohttp.ClientSession) -> None:
    async with Emulator(assets=0, clock=clock) as emu:
        api = Api(emu, session)
        assert await api.ok(f"{api.dv}/assets") == {"items": [], "count": 0, "next_cursor": None}
        assert (await api.ok(f"{api.dv}/assets/ids/paginated"))["items"] == []
        assert await api.ok(f"{api.dv}/annotations/ids") == []
