"""The scripted server serves an emulated version correctly when told to: the baseline every
hostile test departs from."""

from __future__ import annotations

from pathlib import Path

from engine.emulator import Emulator
from engine.mirroring import mirror
from engine.settings import load_settings
from tests.hostile.scripted import Conn, ScriptedServer, hostile_storage, object_bytes


async def test_a_well_behaved_script_mirrors_the_version(tmp_path: Path) -> None:
    emulator: list[Emulator] = []

    async def script(conn: Conn) -> None:
        while (request := await conn.read_request()) is not None:
            body = object_bytes(emulator[0], request.path)
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    with ScriptedServer(script) as server:
        async with hostile_storage(server, assets=5) as emu:
            emulator.append(emu)
            settings = load_settings(
                {
                    "api_url": emu.api_url,
                    "token": emu.token,
                    "dataset_version": emu.dataset_version_id,
                    "dest": tmp_path / "d",
                }
            )
            summary = await mirror(settings)
    assert summary.outcome == "ok", summary
    assert summary.downloaded == 5
    assert len(server.requests) == 5
    assert server.errors == []
    for asset_id in emu.dataset.asset_ids():
        expected = emu.dataset.expected(asset_id)
        assert (tmp_path / "d" / expected.filename).read_bytes() == emu.dataset.content(
            expected.data_id
        )
