"""Faults on what storage says about a body: ``ignore_if_range``, ``misrange``, ``chunked``."""

from __future__ import annotations

import aiohttp
import pytest
from multidict import CIMultiDict

from engine.emulator import FaultRule

from .conftest import Api

pytestmark = pytest.mark.anyio


async def _object(api: Api, min_size: int) -> tuple[str, str, bytes]:
    """(data_id, url, content) of a listed object of at least ``min_size`` bytes."""
    for item in await api.list_all(limit=100):
        expected = api.emu.dataset.expected(item["id"])
        if expected.size >= min_size:
            content = api.emu.dataset.content(expected.data_id)
            return expected.data_id, item["data"]["presigned_url"], content
    raise AssertionError("no object that large")


async def _get(
    api: Api, url: str, headers: dict[str, str] | None = None
) -> tuple[int, CIMultiDict[str], bytes]:
    async with api.session.get(url, headers=headers or {}) as response:
        return response.status, response.headers.copy(), await response.read()


# ----- ignore_if_range ----------------------------------------------------------------------


async def test_ignore_if_range_serves_206_of_the_new_object(api: Api) -> None:
    emu = api.emu
    data_id, url, old_content = await _object(api, 5000)
    old_etag = emu.dataset.expected_data(data_id).etag
    new = emu.rewrite_object(data_id)
    new_content = emu.dataset.content(data_id)
    assert new_content != old_content
    rule = emu.faults.add(FaultRule(target="storage", kind="ignore_if_range", count=1))
    # Without If-Range there is nothing to ignore: the rule does not fire.
    status, headers, body = await _get(api, url, {"Range": "bytes=100-199"})
    assert (status, body, rule.hits) == (206, new_content[100:200], 0)
    # A stale validator: a faithful store sends 200 + the whole object; this one sends 206.
    stale = {"Range": "bytes=100-199", "If-Range": old_etag}
    status, headers, body = await _get(api, url, stale)
    assert (status, body, rule.hits) == (206, new_content[100:200], 1)
    assert headers["ETag"] == new.etag != old_etag
    assert headers["Content-Range"] == f"bytes 100-199/{new.size}"
    # The count is spent: If-Range is honoured again.
    status, headers, body = await _get(api, url, stale)
    assert (status, body, rule.hits) == (200, new_content, 1)
    assert emu.counters.storage_statuses == {206: 2, 200: 1}


# ----- misrange -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "shift", "served"),
    [
        ((1000, 1999), 100, (1100, 2099)),  # later than asked
        ((1000, 1999), -500, (500, 1499)),  # earlier than asked
        ((0, 99), 7, (7, 106)),  # even the first bytes
    ],
)
async def test_misrange_shift_serves_other_bytes_and_says_so(
    api: Api, asked: tuple[int, int], shift: int, served: tuple[int, int]
) -> None:
    data_id, url, content = await _object(api, 5000)
    rule = api.emu.faults.add(FaultRule(target="storage", kind="misrange", shift=shift, count=1))
    assert (await _get(api, url))[0] == 200 and rule.hits == 0  # no range: nothing to misstate
    status, headers, body = await _get(api, url, {"Range": f"bytes={asked[0]}-{asked[1]}"})
    assert status == 206 and rule.hits == 1
    first, last = served
    assert headers["Content-Range"] == f"bytes {first}-{last}/{len(content)}"
    assert int(headers["Content-Length"]) == last - first + 1
    assert body == content[first : last + 1]
    assert api.emu.counters.storage_bytes_for(data_id) == len(content) + len(body)
    status, headers, body = await _get(api, url, {"Range": f"bytes={asked[0]}-{asked[1]}"})
    assert body == content[asked[0] : asked[1] + 1]  # the count is spent


async def test_misrange_shift_is_clamped_to_the_object(api: Api) -> None:
    _, url, content = await _object(api, 5000)
    size = len(content)
    api.emu.faults.add(FaultRule(target="storage", kind="misrange", shift=50))
    status, headers, body = await _get(api, url, {"Range": "bytes=-100"})  # the last 100 bytes
    assert status == 206
    assert headers["Content-Range"] == f"bytes {size - 50}-{size - 1}/{size}"
    assert body == content[size - 50 :]


async def test_misrange_fires_only_where_it_changes_the_answer(api: Api) -> None:
    _, url, content = await _object(api, 5000)
    rule = api.emu.faults.add(FaultRule(target="storage", kind="misrange", shift=-10, count=1))
    status, headers, body = await _get(api, url, {"Range": "bytes=0-99"})  # cannot be earlier
    assert (status, body, rule.hits) == (206, content[:100], 0)
    assert headers["Content-Range"] == f"bytes 0-99/{len(content)}"
    status, headers, body = await _get(api, url, {"Range": "bytes=5-104"})
    assert (status, body, rule.hits) == (206, content[:100], 1)
    assert headers["Content-Range"] == f"bytes 0-99/{len(content)}"


@pytest.mark.parametrize("total_shift", [-1, 7, -(10**9)])
async def test_misrange_total_shift_announces_a_wrong_size(api: Api, total_shift: int) -> None:
    _, url, content = await _object(api, 5000)
    api.emu.faults.add(FaultRule(target="storage", kind="misrange", total_shift=total_shift))
    status, headers, body = await _get(api, url, {"Range": "bytes=0-99"})
    assert status == 206 and body == content[:100]
    claimed = max(0, len(content) + total_shift)
    assert headers["Content-Range"] == f"bytes 0-99/{claimed}"


def test_misrange_needs_a_shift() -> None:
    with pytest.raises(ValueError, match="shift"):
        FaultRule(target="storage", kind="misrange")
    rule = FaultRule.from_dict(
        {"target": "storage", "kind": "misrange", "shift": 3, "total_shift": -2}
    )
    assert (rule.to_dict()["shift"], rule.to_dict()["total_shift"]) == (3, -2)


# ----- chunked ------------------------------------------------------------------------------


@pytest.mark.parametrize("min_size", [100, 100_000])  # a small body, and a streamed one
async def test_chunked_storage_bodies_have_no_content_length(api: Api, min_size: int) -> None:
    data_id, url, content = await _object(api, min_size)
    rule = api.emu.faults.add(FaultRule(target="storage", kind="chunked", data_id=data_id))
    status, headers, body = await _get(api, url)
    assert (status, body) == (200, content)
    assert "Content-Length" not in headers
    assert headers["Transfer-Encoding"] == "chunked"
    status, headers, body = await _get(api, url, {"Range": "bytes=10-"})
    assert (status, body) == (206, content[10:])
    assert "Content-Length" not in headers
    assert headers["Content-Range"] == f"bytes 10-{len(content) - 1}/{len(content)}"
    assert rule.hits == 2
    assert api.emu.counters.storage_bytes_for(data_id) == 2 * len(content) - 10


async def test_chunked_with_ignored_range_and_a_drop(api: Api) -> None:
    _, url, content = await _object(api, 100_000)
    faults = api.emu.faults
    faults.add(FaultRule(target="storage", kind="chunked"))
    faults.add(FaultRule(target="storage", kind="ignore_range"))
    # A body whose length nobody announces: no Content-Length, no Content-Range.
    status, headers, body = await _get(api, url, {"Range": "bytes=10-"})
    assert (status, body) == (200, content)
    assert "Content-Length" not in headers and "Content-Range" not in headers
    # Cut mid-body: the client can still tell (the terminating chunk never came).
    faults.add(FaultRule(target="storage", kind="drop", after_bytes=5000, count=1))
    received = bytearray()

    async def read() -> None:
        async with api.session.get(url) as response:
            async for chunk in response.content.iter_any():
                received.extend(chunk)

    with pytest.raises(aiohttp.ClientPayloadError):
        await read()
    assert bytes(received) == content[:5000]


async def test_chunked_api_answers(api: Api) -> None:
    rule = api.emu.faults.add(FaultRule(target="ping", kind="chunked", count=1))
    async with api.session.get(api.emu.api_url + "/api/home/ping", headers=api.headers) as response:
        assert response.status == 200
        assert "Content-Length" not in response.headers
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert (await response.json())["sdk_version"]
    assert rule.hits == 1
