"""EmulatorThread: a running emulator for synchronous callers."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from engine.emulator import Emulator, EmulatorThread, FaultRule

from .conftest import http_get


def _get_json(url: str, token: str) -> Any:
    status, body = http_get(url, token)
    assert status == 200, status
    return json.loads(body)


@pytest.mark.parametrize("use_uvloop", [False, True])
def test_thread_serves_and_marshals_mutations(use_uvloop: bool) -> None:
    with EmulatorThread(assets=10, use_uvloop=use_uvloop) as emu:
        url = f"{emu.api_url}/api/dataset/version/{emu.dataset_version_id}/assets"
        assert _get_json(url, emu.token)["count"] == 10
        added = emu.add_assets(2)  # called from this thread, run on the emulator's loop
        emu.set_asset_tags(added[0], ["fresh"])
        page = _get_json(url + "?limit=1000", emu.token)
        assert [i["id"] for i in page["items"]][-2:] == added
        emu.faults.add(FaultRule(target="ping", kind="status", status=500, count=1))
        assert http_get(f"{emu.api_url}/api/home/ping", emu.token)[0] == 500
    with pytest.raises(ConnectionRefusedError):
        http_get(f"{emu.api_url}/api/home/ping", emu.token)


def test_in_thread_context_manager_and_start_errors() -> None:
    emulator = Emulator(assets=1)
    with emulator.in_thread() as emu:
        assert emu is emulator
        port = emu.port
        with pytest.raises(OSError, match="in use"), EmulatorThread(assets=1, port=port):
            pass
    with socket.socket() as sock:  # the port is free again
        sock.bind(("127.0.0.1", port))


@pytest.mark.parametrize("use_uvloop", [False, True])
def test_quiesce_from_the_callers_thread(use_uvloop: bool) -> None:
    with EmulatorThread(assets=5, min_size=70_000, empty_share=0, use_uvloop=use_uvloop) as emu:
        asset_id = next(emu.dataset.asset_ids())
        expected = emu.dataset.expected(asset_id)
        detail = _get_json(f"{emu.api_url}/api/asset/{asset_id}", emu.token)
        status, body = http_get(detail["data"]["presigned_url"])
        assert status == 200 and len(body) == expected.size
        emu.quiesce_sync()
        assert emu.storage_active == 0
        assert emu.counters.storage_bytes_for(expected.data_id) == expected.size


async def test_quiesce_awaited_on_another_loop() -> None:
    with EmulatorThread(assets=3) as emu:
        await emu.quiesce()  # hops onto the emulator's loop and back
        assert emu.storage_active == 0
