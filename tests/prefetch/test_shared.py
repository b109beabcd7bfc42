"""One DEST shared: the manifest with ``mirror``, and the lock between mirror and prefetchers."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from engine.emulator import Emulator
from engine.errors import LockHeldError
from engine.mirroring import mirror
from engine.pipeline.lock import DestLock
from engine.prefetch import Prefetcher
from tests.mirror.helpers import assert_mirror_matches
from tests.prefetch.helpers import listing, settings_for, sha256_of


async def test_what_the_prefetcher_fetched_a_mirror_does_not_fetch_again(tmp_path: Path):
    dest = tmp_path / "d"
    async with Emulator(assets=50, seed=41, null_url_share=0.2) as emu:
        settings = settings_for(emu, dest)
        async with Prefetcher(settings, window=8) as prefetcher:
            assert len([item async for item in prefetcher]) == 50
        emu.counters.reset()
        summary = await mirror(settings)
        assert summary.outcome == "ok", summary
        assert (summary.downloaded, summary.skipped, summary.updated) == (0, 50, 0)
        assert summary.tag_changes == 0 and summary.annotation_changes == 0
        assert emu.counters.storage_requests == 0
        assert_mirror_matches(emu, dest)


async def test_what_a_mirror_fetched_the_prefetcher_yields_without_a_storage_request(
    tmp_path: Path,
):
    dest = tmp_path / "d"
    async with Emulator(assets=50, seed=43) as emu:
        settings = settings_for(emu, dest)
        assert (await mirror(settings)).outcome == "ok"
        emu.counters.reset()
        async with Prefetcher(settings, window=8) as prefetcher:
            items = [item async for item in prefetcher]
        assert all(item.cached for item in items)
        assert [item.asset_id for item in items] == listing(emu)
        assert emu.counters.storage_requests == 0
        # A changed asset is fetched again, and only that one.
        changed = listing(emu)[7]
        emu.replace_data(changed)
        emu.counters.reset()
        async with Prefetcher(settings, window=8) as prefetcher:
            items = [item async for item in prefetcher]
        assert [item.asset_id for item in items if not item.cached] == [changed]
        assert emu.counters.storage_requests == 1
        item = next(i for i in items if i.asset_id == changed)
        assert item.path is not None
        assert sha256_of(item.path) == emu.dataset.expected(changed).sha256


async def test_mirror_and_prefetchers_keep_to_the_lock_rule(tmp_path: Path):
    """The rule (engine.pipeline.sharing): mirror alone; prefetchers together (shared lock),
    with a disk budget too (tests/prefetch/test_budget.py: they share it)."""
    dest = tmp_path / "d"
    async with Emulator(assets=10, seed=45) as emu:
        settings = settings_for(emu, dest)
        async with Prefetcher(settings), Prefetcher(settings):  # two at once: fine
            with pytest.raises(LockHeldError):
                await mirror(settings)
        # What a mirror (or verify) holds while it runs:
        with DestLock(dest), pytest.raises(LockHeldError, match="mirror"):
            async with Prefetcher(settings):
                pass
        assert (await mirror(settings)).outcome == "ok"  # all released


async def test_two_prefetchers_share_one_dest_and_one_manifest(tmp_path: Path):
    """Two prefetchers (say two training jobs) on one DEST at once, over a version with
    duplicate and colliding filenames: each gets every asset with the right bytes, no two
    assets end on one path, and the manifest is a correct mirror afterwards."""
    dest = tmp_path / "d"
    async with Emulator(assets=80, seed=47) as emu:
        names = [emu.dataset.expected(a).filename for a in listing(emu)]
        assert len(set(names)) < len(names)  # duplicates are in play
        settings = settings_for(emu, dest, limits={"concurrency": 6})
        results: dict[str, list] = {}

        async def consume(name: str, shuffle: bool) -> None:
            async with Prefetcher(settings, window=10, shuffle=shuffle, seed=5) as prefetcher:
                results[name] = [item async for item in prefetcher]

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume, "ordered", False)
            tg.start_soon(consume, "shuffled", True)
        for items in results.values():
            assert sorted(i.asset_id for i in items) == sorted(listing(emu))
            for item in items:
                assert item.path is not None
                assert sha256_of(item.path) == emu.dataset.expected(item.asset_id).sha256
        assert {i.asset_id: i.path for i in results["ordered"]} == {
            i.asset_id: i.path for i in results["shuffled"]
        }
        assert_mirror_matches(emu, dest)
        emu.counters.reset()
        summary = await mirror(settings)
        assert summary.downloaded == 0 and emu.counters.storage_requests == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_two_prefetchers_in_one_order_download_each_object_once(tmp_path: Path, seed: int):
    """Two prefetchers walking one version in the same order race for every object: the one
    that comes second uses the other's file, whether it waited for the object's fetch lock or
    came after the other let go. The old tree downloaded 49 of 60 objects twice: the lock was
    released before the row was committed (group commit delays it), a prefetcher that had not
    waited never looked, and a path claim planned before the other's commit overwrote its row
    with "missing"."""
    dest = tmp_path / "d"
    async with Emulator(assets=60, seed=50 + seed) as emu:
        settings = settings_for(emu, dest, limits={"concurrency": 4})
        results: dict[int, list] = {}

        async def consume(name: int) -> None:
            async with Prefetcher(settings, window=6) as prefetcher:
                results[name] = [item async for item in prefetcher]

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume, 0)
            tg.start_soon(consume, 1)
        assert len(results) == 2
        for items in results.values():
            assert [i.asset_id for i in items] == listing(emu)
        twice = {}
        for asset_id in listing(emu):
            asset = emu.dataset.expected(asset_id)
            served = emu.counters.storage_bytes_for(asset.data_id)
            if served != asset.size:
                twice[asset_id] = (served, asset.size)
        assert twice == {}
        assert_mirror_matches(emu, dest)
