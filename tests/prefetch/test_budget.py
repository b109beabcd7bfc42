"""The disk budget: a version twice the budget streams through it, evictions on record."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import LockHeldError, UsageError
from engine.manifest import Manifest
from engine.mirroring import mirror
from engine.prefetch import Prefetcher
from tests.prefetch.helpers import (
    budget_settings,
    budget_version,
    data_bytes_on_disk,
    listing,
    sha256_of,
)


async def test_a_version_twice_the_budget_streams_through_it(tmp_path: Path):
    dest = tmp_path / "d"
    async with budget_version(31) as emu:
        order = listing(emu)
        total = sum(emu.dataset.expected(a).size for a in order)
        budget = total // 2
        settings = budget_settings(emu, dest)
        samples = []
        async with Prefetcher(settings, window=4, max_bytes=budget) as prefetcher:
            for epoch in range(2):
                got = []
                async for item in prefetcher:
                    assert item.path is not None
                    assert sha256_of(item.path) == emu.dataset.expected(item.asset_id).sha256
                    samples.append(data_bytes_on_disk(dest))
                    assert samples[-1] <= budget, (epoch, len(got), samples[-1], budget)
                    got.append(item.asset_id)
                assert got == order
            stats = prefetcher.stats
        assert max(samples) > budget // 2  # the budget was used, not avoided
        assert stats.evicted > 0 and stats.over_budget_starts == 0
        assert stats.peak_usage <= budget
        assert data_bytes_on_disk(dest) <= budget

        # Evictions are on record: evicted rows have no file, ok rows have theirs.
        with Manifest.open(dest, create=False) as manifest:
            rows = {row.asset_id: row for row in manifest.iter_rows()}
        evicted = [r for r in rows.values() if r.state == "evicted"]
        kept = [r for r in rows.values() if r.state == "ok"]
        assert evicted and kept and len(evicted) + len(kept) == len(order)
        for row in evicted:
            assert row.path is not None and not (dest / row.path).exists()
        for row in kept:
            assert row.path is not None and (dest / row.path).stat().st_size == row.size
        assert sum(r.size or 0 for r in kept) <= budget

        # A new session starts with the disk full of files it did not touch yet (cold):
        # they are evicted as needed, and the budget holds from the first download.
        emu.counters.reset()
        async with Prefetcher(settings, window=4, max_bytes=budget) as prefetcher:
            async for _ in prefetcher:
                assert data_bytes_on_disk(dest) <= budget
            assert prefetcher.stats.cached > 0  # what was still there was used, not re-fetched
            assert prefetcher.stats.over_budget_starts == 0
        assert emu.counters.storage_requests < len(order)


async def test_files_over_the_budget_already_go_only_when_room_is_needed(tmp_path: Path):
    dest = tmp_path / "d"
    async with budget_version(33) as emu:
        settings = budget_settings(emu, dest)
        async with Prefetcher(settings) as prefetcher:  # no budget: everything stays
            assert len([item async for item in prefetcher]) == 60
        full = data_bytes_on_disk(dest)
        budget = full // 3
        async with Prefetcher(settings, window=3, max_bytes=budget) as prefetcher:
            # Everything is on disk already: nothing to download, so nothing is deleted (the
            # budget bounds what the prefetcher adds; untouched files go when room is needed).
            async for item in prefetcher:
                assert item.cached
            assert prefetcher.stats.evicted == 0
        assert data_bytes_on_disk(dest) == full
        # Room is needed once assets are added: untouched files go, down to the budget.
        emu.add_assets(6)
        async with Prefetcher(settings, window=3, max_bytes=budget) as prefetcher:
            async for item in prefetcher:
                assert item.path is not None and item.path.is_file()
            assert prefetcher.stats.downloaded >= 6 and prefetcher.stats.evicted > 0
        assert data_bytes_on_disk(dest) <= budget


async def test_the_prefetchers_of_a_dest_agree_on_one_budget(tmp_path: Path):
    """They share one budget's books: a second one with the same budget joins; one with
    another budget, or none, would fill the disk behind the others' backs and is refused in one
    line; a mirror is refused while they run."""
    dest = tmp_path / "d"
    async with budget_version(35) as emu:
        settings = budget_settings(emu, dest)
        async with Prefetcher(settings, max_bytes=10**9) as first:
            async with Prefetcher(settings, max_bytes=10**9) as second:
                assert len([item async for item in second]) == 60
            assert len([item async for item in first]) == 60
            for other in ({}, {"max_bytes": 10**8}):
                with pytest.raises(UsageError, match="another disk budget") as info:
                    async with Prefetcher(settings, **other):
                        pass
                assert "\n" not in str(info.value)
            with pytest.raises(LockHeldError):
                await mirror(settings)
        async with Prefetcher(settings):
            with pytest.raises(UsageError, match="another disk budget"):
                async with Prefetcher(settings, max_bytes=10**9):
                    pass
        # Once they are gone, the next one may bring any budget.
        async with Prefetcher(settings, max_bytes=10**8) as alone:
            assert len([item async for item in alone]) == 60
