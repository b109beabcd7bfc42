"""The control endpoint: guarded by its own secret, and able to change a running emulator."""

from __future__ import annotations

from typing import Any

import pytest

from engine.emulator import Emulator, FaultRule

from .conftest import Api, FakeClock

pytestmark = pytest.mark.anyio


RIGHT = object()  # stands for the emulator's own control secret


async def _control(
    api: Api, method: str, path: str, body: Any = None, secret: object = RIGHT
) -> tuple[int, Any]:
    if secret is RIGHT:
        secret = api.emu.control_secret
    headers = {} if secret is None else {"X-Emulator-Secret": str(secret)}
    return await api.call(method, f"/_emulator{path}", body=body, headers=headers)


@pytest.mark.parametrize("secret", [None, "", "wrong"])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/state"),
        ("PUT", "/url-ttl"),
        ("POST", "/faults"),
        ("DELETE", "/faults"),
        ("POST", "/mutations"),
        ("POST", "/clock"),
        ("POST", "/quiesce"),
        ("PATCH", "/state"),
    ],
)
async def test_without_the_secret_it_does_not_exist(
    api: Api, secret: str | None, method: str, path: str
) -> None:
    status, body = await _control(api, method, path, {"seconds": 1}, secret=secret)
    assert status == 404
    assert body == {"message": "Not found."}
    # Not even the API token opens it.
    status, _ = await api.call(method, f"/_emulator{path}", headers=api.headers)
    assert status == 404
    assert api.emu.faults.url_ttl == 3600.0
    assert api.emu.faults.rules == []


async def test_state_and_counters(api: Api, emu: Emulator) -> None:
    await api.get("/api/home/ping")
    status, state = await _control(api, "GET", "/state")
    assert status == 200
    assert state["dataset_version_id"] == emu.dataset_version_id
    assert state["assets"] == 60
    assert state["counters"]["requests"]["ping"] == 1
    status, counters = await _control(api, "GET", "/counters")
    assert counters["requests"]["ping"] == 1
    status, counters = await _control(api, "POST", "/counters/reset")
    assert counters["api_requests"] == 0
    assert emu.counters.api_requests == 0


async def test_faults_over_http(api: Api, emu: Emulator) -> None:
    rule = {"target": "ping", "kind": "status", "status": 429, "retry_after": 0.5, "count": 1}
    status, created = await _control(api, "POST", "/faults", rule)
    assert status == 200
    assert created["id"]
    assert created["hits"] == 0
    ping_status, _ = await api.get("/api/home/ping")
    assert ping_status == 429
    _, state = await _control(api, "GET", "/state")
    assert state["faults"][0]["hits"] == 1
    status, _ = await _control(api, "DELETE", f"/faults/{created['id']}")
    assert status == 200
    assert emu.faults.rules == []
    assert (await _control(api, "DELETE", f"/faults/{created['id']}"))[0] == 400
    await _control(api, "POST", "/faults", {"target": "api", "kind": "status"})
    assert (await api.get("/api/home/ping"))[0] == 503
    await _control(api, "DELETE", "/faults")
    assert (await api.get("/api/home/ping"))[0] == 200
    for bad in ({"target": "api", "kind": "nope"}, {"kind": "status"}, ["x"], {"x": 1}):
        status, body = await _control(api, "POST", "/faults", bad)
        assert status == 400, bad
        assert body["message"]


async def test_url_ttl_and_clock(api: Api, emu: Emulator, clock: FakeClock) -> None:
    status, body = await _control(api, "PUT", "/url-ttl", {"seconds": 30})
    assert (status, body) == (200, {"url_ttl": 30.0})
    assert emu.faults.url_ttl == 30.0
    url = (await api.list_all(limit=100))[0]["data"]["presigned_url"]
    async with api.session.get(url) as response:
        assert response.status == 200
    status, body = await _control(api, "POST", "/clock", {"advance": 31})
    assert status == 200
    assert body["now"] == pytest.approx(clock.now + 31)
    async with api.session.get(url) as response:
        assert response.status in (400, 403)
    assert (await _control(api, "PUT", "/url-ttl", {"seconds": -1}))[0] == 400
    assert (await _control(api, "PUT", "/url-ttl", {}))[0] == 400


async def test_mutations_over_http(api: Api, emu: Emulator) -> None:
    ids = list(emu.dataset.asset_ids())
    status, body = await _control(api, "POST", "/mutations", {"op": "add_assets", "n": 2})
    assert status == 200
    assert len(body["asset_ids"]) == 2
    _, body = await _control(
        api, "POST", "/mutations", {"op": "delete_assets", "asset_ids": [ids[0]]}
    )
    assert ids[0] not in list(emu.dataset.asset_ids())
    _, body = await _control(api, "POST", "/mutations", {"op": "replace_data", "asset_id": ids[1]})
    assert emu.dataset.expected(ids[1]).data_id == body["data_id"]
    await _control(
        api, "POST", "/mutations", {"op": "set_asset_tags", "asset_id": ids[1], "names": ["x"]}
    )
    await _control(
        api, "POST", "/mutations", {"op": "set_data_tags", "asset_id": ids[1], "names": ["y"]}
    )
    expected = emu.dataset.expected(ids[1])
    assert (expected.tags, expected.data_tags) == (["x"], ["y"])
    _, body = await _control(
        api,
        "POST",
        "/mutations",
        {"op": "set_annotations", "asset_id": ids[1], "annotations": [{"status": "PENDING"}]},
    )
    assert [a["id"] for a in emu.dataset.expected(ids[1]).annotations] == body["ids"]
    _, body = await _control(
        api, "POST", "/mutations", {"op": "mutate_annotations", "asset_id": ids[1]}
    )
    assert [a["id"] for a in emu.dataset.expected(ids[1]).annotations] == body["ids"]
    for bad in ({"op": "explode"}, {"op": "replace_data", "asset_id": ids[0]}, {}, [1]):
        status, answer = await _control(api, "POST", "/mutations", bad)
        assert status == 400, bad
        assert answer["message"]


async def test_bad_json_is_400(api: Api, emu: Emulator) -> None:
    async with api.session.post(
        emu.api_url + "/_emulator/faults",
        data=b"{nope",
        headers={"X-Emulator-Secret": emu.control_secret},
    ) as response:
        assert response.status == 400


async def test_rewrite_object_over_http(api: Api, emu: Emulator) -> None:
    asset_id = list(emu.dataset.asset_ids())[3]
    old = emu.dataset.expected(asset_id)
    url = (await api.ok(f"/api/asset/{asset_id}"))["data"]["presigned_url"]
    op = {"op": "rewrite_object", "data_id": old.data_id, "size": 4321}
    status, body = await _control(api, "POST", "/mutations", op)
    assert status == 200
    new = emu.dataset.expected(asset_id)
    assert body == {
        "data_id": old.data_id,
        "revision": 1,
        "size": 4321,
        "etag": new.etag,
        "last_modified": new.last_modified,
        "sha256": new.sha256,
    }
    async with api.session.get(url) as response:
        assert response.headers["ETag"] == new.etag
        assert len(await response.read()) == 4321
    for bad in (
        {"op": "rewrite_object", "data_id": "nope"},
        {"op": "rewrite_object", "data_id": old.data_id, "size": -5},
        {"op": "rewrite_object"},
    ):
        status, _ = await _control(api, "POST", "/mutations", bad)
        assert status == 400, bad


async def test_new_fault_kinds_over_http(api: Api, emu: Emulator) -> None:
    for rule in (
        {"target": "storage", "kind": "ignore_if_range", "count": 1},
        {"target": "storage", "kind": "misrange", "shift": -4, "total_shift": 9},
        {"target": "storage", "kind": "chunked", "probability": 0.5},
    ):
        status, created = await _control(api, "POST", "/faults", rule)
        assert status == 200, created
        assert {k: created[k] for k in rule} == rule
    assert [r.kind for r in emu.faults.rules] == ["ignore_if_range", "misrange", "chunked"]
    status, body = await _control(api, "POST", "/faults", {"target": "storage", "kind": "misrange"})
    assert status == 400 and "shift" in body["detail"]


async def test_quiesce_over_http(api: Api, emu: Emulator) -> None:
    asset_id = next(iter(emu.dataset.asset_ids()))
    url = (await api.ok(f"/api/asset/{asset_id}"))["data"]["presigned_url"]
    async with api.session.get(url) as response:
        size = len(await response.read())
    status, body = await _control(api, "POST", "/quiesce")
    assert status == 200
    assert body["storage_bytes"] == size and body["storage_statuses"] == {"200": 1}
    status, body = await _control(api, "POST", "/quiesce", {"timeout": 5})
    assert status == 200 and body["storage_requests"] == 1


async def test_quiesce_over_http_times_out_while_a_response_is_held(
    api: Api, emu: Emulator
) -> None:
    asset_id = next(a for a in emu.dataset.asset_ids() if emu.dataset.expected(a).size > 1000)
    url = (await api.ok(f"/api/asset/{asset_id}"))["data"]["presigned_url"]
    emu.faults.add(FaultRule(target="storage", kind="stall", after_bytes=10, seconds=3600))
    async with api.session.get(url) as response:
        assert response.status == 200  # headers sent, body held for an hour
        status, body = await _control(api, "POST", "/quiesce", {"timeout": 0.2})
        assert status == 503 and "busy" in body["message"]
        response.close()  # the client leaves: the held response is abandoned
    status, _ = await _control(api, "POST", "/quiesce", {"timeout": 30})
    assert status == 200
