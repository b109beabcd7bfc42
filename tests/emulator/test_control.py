"""The control endpoint: guarded by its own secret, and able to change a running emulator."""

from __future__ import annotations

from typing import Any

import pytest

from engine.emulator import Emulator

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
