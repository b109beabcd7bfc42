"""``await emu.quiesce()``: storage responses finished or abandoned, so byte counts are final."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import anyio
import pytest

from engine.emulator import Emulator, FaultRule

from .conftest import Api

pytestmark = pytest.mark.anyio


async def _large(api: Api) -> tuple[str, str, int]:
    """(data_id, url, size) of the largest listed object."""
    items = await api.list_all(limit=100)
    best = max(items, key=lambda item: api.emu.dataset.expected(item["id"]).size)
    expected = api.emu.dataset.expected(best["id"])
    return expected.data_id, best["data"]["presigned_url"], expected.size


async def _start(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw GET whose headers have arrived (the caller reads or abandons the body)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    target = f"{parts.path}?{parts.query}"
    writer.write(f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return reader, writer


async def test_quiet_at_once_when_nothing_is_sent(emu: Emulator) -> None:
    await emu.quiesce()
    assert emu.storage_active == 0
    await Emulator().quiesce()  # never started: nothing to wait for
    with pytest.raises(RuntimeError, match="await"):
        emu.quiesce_sync()  # would block the loop the emulator runs on


async def test_waits_for_a_response_being_read_to_its_end(api: Api) -> None:
    emu = api.emu
    data_id, url, size = await _large(api)
    emu.faults.add(FaultRule(target="storage", kind="throttle", bytes_per_second=size * 4))
    reader, writer = await _start(url)
    assert emu.storage_active == 1
    async with anyio.create_task_group() as tg:
        tg.start_soon(reader.readexactly, size)
        await emu.quiesce()
        # Every byte has been handed over: the count is exact without polling.
        assert emu.counters.storage_bytes_for(data_id) == size
        assert emu.storage_active == 0
    writer.close()


@pytest.mark.parametrize("how", ["reset", "close"])
async def test_a_throttled_response_abandoned_by_its_client(api: Api, how: str) -> None:
    emu = api.emu
    data_id, url, size = await _large(api)
    emu.faults.add(FaultRule(target="storage", kind="throttle", bytes_per_second=size / 4))
    reader, writer = await _start(url)
    await reader.readexactly(1000)
    if how == "reset":
        writer.transport.abort()  # RST, as from a killed process with unread data
    else:
        writer.close()  # FIN
    await emu.quiesce()
    assert emu.storage_active == 0
    sent = emu.counters.storage_bytes_for(data_id)
    assert 1000 <= sent < size
    await anyio.sleep(0.3)  # a few throttle pieces' worth: nothing more goes out
    assert emu.counters.storage_bytes_for(data_id) == sent


async def test_a_stalled_response_abandoned_by_its_client(api: Api) -> None:
    emu = api.emu
    data_id, url, _ = await _large(api)
    emu.faults.add(FaultRule(target="storage", kind="stall", after_bytes=1000, seconds=3600))
    reader, writer = await _start(url)
    await reader.readexactly(1000)
    writer.close()
    # The stall would hold the response for an hour; the client's departure ends it.
    with anyio.fail_after(30):
        await emu.quiesce()
    assert emu.storage_active == 0
    assert emu.counters.storage_bytes_for(data_id) == 1000
