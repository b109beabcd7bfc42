"""The prefetcher's durability rule is the mirror's: group commit through the writer's barrier.

Small files are placed without an fsync each; the manifest writer awaits the transfer core's
barrier before a transaction records them, so no row vouches for bytes not yet durable (the
power-cut soak, :mod:`tests.soak.test_group_commit_power_cut`, checks that on a real device).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.emulator import Emulator
from engine.manifest import Manifest
from engine.prefetch import Prefetcher
from tests.prefetch.helpers import listing, settings_for, sha256_of


@pytest.mark.parametrize("barrier", ["files", "syncfs"])
async def test_small_files_are_recorded_after_a_barrier_made_them_durable(
    tmp_path: Path, barrier: str
) -> None:
    dest = tmp_path / "d"
    async with Emulator(assets=40, seed=21, empty_share=0.0, large_share=0.0) as emu:
        settings = settings_for(emu, dest, transfer={"fsync": True, "barrier": barrier})
        async with Prefetcher(settings, window=16) as prefetcher:
            session = prefetcher._session
            assert session is not None
            items = [item async for item in prefetcher]
            await session.writer.flush()
            # Every file the epoch placed was covered by a barrier before its row went in.
            assert session.transferer.awaiting_barrier == 0
            assert session.writer.barriers >= 1
        assert [item.asset_id for item in items] == listing(emu)
    with Manifest.open(dest, create=False, read_only=True) as manifest:
        rows = manifest.rows([item.asset_id for item in items])
    for item in items:
        row = rows[item.asset_id]
        assert item.path is not None
        assert (row.state, row.sha256) == ("ok", item.sha256)
        assert sha256_of(item.path) == item.sha256
