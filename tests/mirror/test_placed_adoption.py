"""A run killed between putting files in place and recording them: the next run adopts them.

The state such a kill leaves is built here exactly (files in place, their journal lines written,
their rows absent) rather than hoped for from a kill's timing; tests/soak/test_kill_soak.py
kills real runs at random moments and bounds the bytes served over all of them.
"""

from __future__ import annotations

from pathlib import Path

from engine.emulator import Emulator
from engine.manifest import AssetUpdate, FileInfo, Manifest
from engine.mirroring import mirror
from engine.pipeline.placed_journal import PlacedJournal
from engine.sharding import WHOLE
from engine.state_folder import StateFolder
from tests.mirror.helpers import assert_mirror_matches, settings_for


def _journal_path(dest: Path) -> Path:
    state = StateFolder(dest)
    return state.placed_journal(state.shard_files(WHOLE))


def _forget(dest: Path, asset_ids: list[str]) -> dict[str, str]:
    """Leave ``asset_ids`` as a kill after their rename and before their commit would: files in
    place, lines in the journal, no rows. Returns their paths."""
    with Manifest.open(dest) as manifest:
        rows = manifest.rows(asset_ids)
        journal = PlacedJournal(_journal_path(dest))
        journal.open()
        for row in rows.values():
            assert row.path is not None and row.size is not None and row.sha256 is not None
            journal.record(
                AssetUpdate(
                    asset_id=row.asset_id,
                    data_id=row.data_id,
                    object_name=row.object_name,
                    filename=row.filename,
                    content_type=row.content_type,
                    width=row.width,
                    height=row.height,
                    tags=None,
                    data_tags=None,
                    file=FileInfo(row.path, row.size, row.sha256, etag=row.etag),
                )
            )
        journal.close()
        assert manifest.remove(asset_ids) == len(asset_ids)
    return {asset_id: str(row.path) for asset_id, row in rows.items()}


async def test_files_a_killed_run_placed_are_adopted_not_fetched_again(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    async with Emulator(assets=40, seed=31, large_share=0.0, max_size=8192) as emu:
        first = await mirror(settings_for(emu, dest))
        assert first.outcome == "ok", first
        ids = list(emu.dataset.asset_ids())
        adopted, tampered = ids[:5], ids[5]
        paths = _forget(dest, [*adopted, tampered])
        with Manifest.open(dest) as manifest:
            row_count = manifest.count_assets()
        assert row_count == len(ids) - 6
        # One of them changed on disk since: it must not be adopted, but fetched again.
        (dest / paths[tampered]).write_bytes(b"not the object")

        emu.counters.reset()
        again = await mirror(settings_for(emu, dest))
        assert again.outcome == "ok", again
        for asset_id in adopted:
            data_id = emu.dataset.expected(asset_id).data_id
            assert emu.counters.storage_bytes_for(data_id) == 0, asset_id
        assert emu.counters.storage_bytes_for(emu.dataset.expected(tampered).data_id) > 0
        assert again.downloaded == 1
        assert_mirror_matches(emu, dest)  # every file the version's bytes, every row right
        with Manifest.open(dest) as manifest:
            assert manifest.count_assets() == len(ids)
            for asset_id in adopted:
                # Adopted without metadata, then given it by the run's planning.
                assert manifest.annotations(asset_id) == emu.dataset.expected(asset_id).annotations
        assert _journal_path(dest).stat().st_size == 0  # emptied once all was committed
