"""Every fault kind, on the API and on storage, and the counters that observe them."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from engine.emulator import Emulator, FaultRule
from engine.emulator.counters import KINDS
from engine.emulator.faults import FAULT_KINDS

from .conftest import Api

pytestmark = pytest.mark.anyio


async def _object(api: Api, min_size: int = 20_000) -> tuple[str, str, bytes]:
    """(data_id, url, content) of a listed object of at least ``min_size`` bytes."""
    for item in await api.list_all(limit=100):
        expected = api.emu.dataset.expected(item["id"])
        if expected.size >= min_size:
            content = api.emu.dataset.content(expected.data_id)
            return expected.data_id, item["data"]["presigned_url"], content
    raise AssertionError("no object that large")


async def _read_until_cut(response: aiohttp.ClientResponse) -> tuple[bytes, bool]:
    """The body bytes that arrived, and whether the connection was cut before the end."""
    received = bytearray()
    try:
        async for chunk in response.content.iter_any():
            received += chunk
    except aiohttp.ClientPayloadError:
        return bytes(received), True
    return bytes(received), False


@pytest.mark.parametrize("status", [500, 502, 503, 429])
@pytest.mark.parametrize("retry_after", [None, 0.01, 2.0])
async def test_api_status_faults(api: Api, status: int, retry_after: float | None) -> None:
    rule = api.emu.faults.add(
        FaultRule(target="api", kind="status", status=status, retry_after=retry_after, count=2)
    )
    for _ in range(2):
        async with api.session.get(
            api.emu.api_url + f"{api.dv}/assets", headers=api.headers
        ) as response:
            assert response.status == status
            assert (await response.json())["message"]
            if retry_after is None:
                assert "Retry-After" not in response.headers
            else:
                assert float(response.headers["Retry-After"]) == retry_after
    assert rule.hits == 2
    assert (await api.get(f"{api.dv}/assets"))[0] == 200  # count exhausted
    assert rule.hits == 2
    assert api.emu.counters.requests["assets_list"] == 3


@pytest.mark.parametrize("status", [500, 502, 503, 429])
@pytest.mark.parametrize("retry_after", [None, 1.0])
async def test_storage_status_faults(api: Api, status: int, retry_after: float | None) -> None:
    _, url, content = await _object(api)
    api.emu.faults.add(
        FaultRule(target="storage", kind="status", status=status, retry_after=retry_after, count=1)
    )
    assert (await api.get("/api/home/ping"))[0] == 200  # storage faults leave the API alone
    async with api.session.get(url) as response:
        assert response.status == status
        assert response.headers["Content-Type"].startswith("application/xml")
        assert "<Error><Code>" in await response.text()
        assert ("Retry-After" in response.headers) == (retry_after is not None)
    async with api.session.get(url) as response:
        assert await response.read() == content


async def test_status_fault_on_one_endpoint_kind_and_one_object(api: Api) -> None:
    emu = api.emu
    emu.faults.add(FaultRule(target="presign", kind="status", status=503))
    data_id, url, content = await _object(api)
    assert (await api.get(f"/api/data/{data_id}/presigned-url"))[0] == 503
    assert (await api.get(f"/api/data/{data_id}"))[0] == 200
    emu.faults.clear()
    other_id, other_url, other_content = await _object(api, min_size=content.__len__() + 1)
    emu.faults.add(FaultRule(target="storage", kind="status", status=500, data_id=data_id))
    async with api.session.get(url) as response:
        assert response.status == 500
    async with api.session.get(other_url) as response:
        assert await response.read() == other_content
    assert other_id != data_id


async def test_probability_uses_a_seeded_rng(api: Api) -> None:
    rule = api.emu.faults.add(FaultRule(target="ping", kind="status", probability=0.5))
    statuses = [(await api.get("/api/home/ping"))[0] for _ in range(40)]
    assert set(statuses) == {200, 503}
    assert rule.hits == statuses.count(503)
    with pytest.raises(ValueError, match="probability"):
        FaultRule(target="api", kind="status", probability=1.5)


@pytest.mark.parametrize("after_bytes", [0, 1, 5000, 65536, 300_000])
async def test_storage_drop_at_an_offset(api: Api, after_bytes: int) -> None:
    data_id, url, content = await _object(api, min_size=100_000)
    rule = api.emu.faults.add(
        FaultRule(target="storage", kind="drop", after_bytes=after_bytes, count=1)
    )
    async with api.session.get(url) as response:
        assert response.status == 200
        received, cut = await _read_until_cut(response)
    cut_at = min(after_bytes, len(content))
    assert cut == (cut_at < len(content))
    assert received == content[:cut_at]
    assert api.emu.counters.storage_bytes_for(data_id) == cut_at
    assert rule.hits == 1
    async with api.session.get(url) as response:  # the next request is whole again
        assert await response.read() == content


async def test_storage_drop_at_a_random_offset_and_inside_a_range(api: Api) -> None:
    _, url, content = await _object(api, min_size=50_000)
    api.emu.faults.add(FaultRule(target="storage", kind="drop", count=3))
    for _ in range(2):
        async with api.session.get(url) as response:
            received, cut = await _read_until_cut(response)
        assert cut
        assert len(received) < len(content)
        assert received == content[: len(received)]
    async with api.session.get(url, headers={"Range": "bytes=1000-"}) as response:
        assert response.status == 206
        received, cut = await _read_until_cut(response)
    assert cut
    assert received == content[1000 : 1000 + len(received)]


async def test_drop_on_a_file_backed_object(tmp_path, api: Api, clock) -> None:
    (tmp_path / "f.bin").write_bytes(bytes(range(256)) * 1000)
    async with Emulator(from_dir=tmp_path, clock=clock) as emu:
        file_api = Api(emu, api.session)
        url = (await file_api.list_all())[0]["data"]["presigned_url"]
        emu.faults.add(FaultRule(target="storage", kind="drop", after_bytes=777, count=1))
        async with api.session.get(url) as response:
            received, cut = await _read_until_cut(response)
        assert cut
        assert received == (bytes(range(256)) * 1000)[:777]


async def test_api_drop_cuts_the_json_body(api: Api) -> None:
    rule = api.emu.faults.add(FaultRule(target="assets_list", kind="drop", after_bytes=50, count=1))
    async with api.session.get(
        api.emu.api_url + f"{api.dv}/assets", headers=api.headers
    ) as response:
        assert response.status == 200
        received, cut = await _read_until_cut(response)
    assert cut
    assert len(received) == 50
    assert rule.hits == 1
    assert (await api.get(f"{api.dv}/assets"))[0] == 200


async def test_stall_holds_bytes_back_then_finishes(api: Api) -> None:
    _, url, content = await _object(api)
    api.emu.faults.add(
        FaultRule(target="storage", kind="stall", after_bytes=1000, seconds=0.05, count=1)
    )
    async with api.session.get(url) as response:
        assert await response.read() == content


async def test_stall_trips_a_client_read_timeout(api: Api) -> None:
    _, url, content = await _object(api)
    api.emu.faults.add(
        FaultRule(target="storage", kind="stall", after_bytes=100, seconds=0.6, count=1)
    )
    timeout = aiohttp.ClientTimeout(sock_read=0.1)
    received = bytearray()

    async def read() -> None:
        async with api.session.get(url, timeout=timeout) as response:
            async for chunk in response.content.iter_any():
                received.extend(chunk)

    with pytest.raises(aiohttp.ServerTimeoutError):
        await read()
    assert bytes(received) == content[: len(received)]
    assert len(received) <= 100


async def test_api_stall(api: Api) -> None:
    api.emu.faults.add(FaultRule(target="ping", kind="stall", seconds=0.6, count=1))
    with pytest.raises(aiohttp.ServerTimeoutError):
        async with api.session.get(
            api.emu.api_url + "/api/home/ping",
            headers=api.headers,
            timeout=aiohttp.ClientTimeout(sock_read=0.1),
        ) as response:
            await response.read()
    assert (await api.get("/api/home/ping"))[0] == 200


async def test_throttle_delivers_intact_bytes(api: Api) -> None:
    _, url, content = await _object(api, min_size=20_000)
    rule = api.emu.faults.add(
        FaultRule(target="storage", kind="throttle", bytes_per_second=4 * len(content))
    )
    async with api.session.get(url) as response:
        assert await response.read() == content
    assert rule.hits == 1
    assert rule.bucket is not None


async def test_throttle_is_slow(api: Api) -> None:
    _, url, _ = await _object(api, min_size=50_000)
    api.emu.faults.add(FaultRule(target="storage", kind="throttle", bytes_per_second=10_000))
    # 50 kB at 10 kB/s takes at least 4 s: a 0.3 s budget must run out.
    with pytest.raises(TimeoutError):
        async with api.session.get(url, timeout=aiohttp.ClientTimeout(total=0.3)) as response:
            await response.read()


async def test_ignore_range(api: Api) -> None:
    _, url, content = await _object(api)
    rule = api.emu.faults.add(FaultRule(target="storage", kind="ignore_range", count=1))
    async with api.session.get(url, headers={"Range": "bytes=100-199"}) as response:
        assert response.status == 200
        assert "Content-Range" not in response.headers
        assert await response.read() == content
    async with api.session.get(url, headers={"Range": "bytes=100-199"}) as response:
        assert response.status == 206
        assert await response.read() == content[100:200]
    assert rule.hits == 1


@pytest.mark.parametrize(("add", "remove"), [(5, 0), (0, 5), (3, 4)])
async def test_listing_drift(api: Api, add: int, remove: int) -> None:
    emu = api.emu
    before = list(emu.dataset.asset_ids())
    rule = emu.faults.add(
        FaultRule(target="assets_list", kind="drift", add=add, remove=remove, count=1)
    )
    items = await api.list_all(limit=10)
    after = list(emu.dataset.asset_ids())
    listed = [i["id"] for i in items]
    assert rule.hits == 1
    assert len(after) == len(before) + add - remove
    assert len(listed) == len(set(listed))  # never twice
    assert set(after) - set(before) <= set(listed)  # additions land at the end of the listing
    removed = set(before) - set(after)
    assert len(removed) == remove
    # What was listed after the drift excludes removed assets; survivors all appear.
    assert set(after) <= set(listed)
    assert listed == sorted(listed, key=lambda a: emu.dataset.codec.decode("asset", a) or 0)


async def test_drift_never_fires_on_a_first_page(api: Api) -> None:
    rule = api.emu.faults.add(FaultRule(target="api", kind="drift", add=5))
    await api.ok(f"{api.dv}/assets", limit=5)
    await api.ok(f"{api.dv}/assets/ids/paginated", limit=5)
    assert rule.hits == 0
    page = await api.ok(f"{api.dv}/assets/ids/paginated", limit=5, offset=5)
    assert rule.hits == 1
    assert page["count"] == 65


async def test_counters(api: Api) -> None:
    emu = api.emu
    counters = emu.counters
    assert set(counters.requests) == set(KINDS)
    _, url, content = await _object(api)
    await api.get("/api/home/ping")
    await api.call("GET", "/api/home/ping", headers={})  # a 401 is counted too
    async with api.session.get(url, headers={"Range": "bytes=0-99"}) as response:
        await response.read()
    async with api.session.get(url) as response:
        await response.read()
    assert counters.requests["ping"] == 2
    assert counters.requests["storage"] == 2
    assert counters.storage_requests == 2
    assert counters.storage_bytes == 100 + len(content)
    assert counters.storage_statuses == {206: 1, 200: 1}
    async with api.session.get(url, headers={"Range": f"bytes={len(content)}-"}) as response:
        assert response.status == 416
    async with api.session.get(url + "0") as response:  # tampered
        assert response.status == 403
    assert counters.storage_statuses == {206: 1, 200: 1, 416: 1, 403: 1}
    assert counters.storage_requests == 4
    assert counters.api_requests == sum(n for k, n in counters.requests.items() if k != "storage")
    snapshot = counters.snapshot()
    assert snapshot["storage_bytes"] == counters.storage_bytes
    assert snapshot["requests"]["assets_list"] == counters.requests["assets_list"]
    counters.reset()
    assert counters.snapshot()["api_requests"] == 0
    assert counters.storage_bytes == 0
    assert counters.storage_statuses == {}


async def test_rules_can_be_removed_and_cleared(api: Api) -> None:
    faults = api.emu.faults
    first = faults.add(FaultRule(target="ping", kind="status", status=500))
    second = faults.add(FaultRule(target="ping", kind="status", status=502))
    assert (await api.get("/api/home/ping"))[0] == 500
    assert faults.remove(first)
    assert not faults.remove(first)
    assert (await api.get("/api/home/ping"))[0] == 502
    faults.clear()
    assert (await api.get("/api/home/ping"))[0] == 200
    assert second.hits == 1


def test_rule_validation() -> None:
    with pytest.raises(ValueError, match="kind"):
        FaultRule(target="api", kind="explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bytes_per_second"):
        FaultRule(target="storage", kind="throttle")
    with pytest.raises(ValueError, match="unknown fault fields"):
        FaultRule.from_dict({"target": "api", "kind": "status", "colour": "red"})
    rule = FaultRule.from_dict({"target": "api", "kind": "status", "status": 429})
    assert rule.to_dict()["status"] == 429
    assert rule.to_dict()["id"].startswith("rule-")


def test_every_fault_kind_is_exercised() -> None:
    """A guard for new kinds: each one of FAULT_KINDS appears in a rule of these tests."""
    here = Path(__file__).parent
    sources = "".join(path.read_text() for path in here.glob("test_*.py"))
    missing = [kind for kind in FAULT_KINDS if f'kind="{kind}"' not in sources]
    assert not missing, f"fault kinds without a test in tests/emulator: {missing}"
