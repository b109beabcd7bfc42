"""The prefetcher against the in-process emulator: order, look-ahead, priority, epochs, stops."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import anyio
import pytest

from engine.emulator import Emulator, FaultRule
from engine.prefetch import Prefetcher
from tests.prefetch.helpers import (
    engine_tasks,
    engine_threads,
    listing,
    settings_for,
    sha256_of,
)


async def test_ordered_delivery_to_a_slow_consumer_never_runs_more_than_the_window_ahead(
    tmp_path: Path,
):
    window = 5
    async with Emulator(assets=40, seed=2, empty_share=0.0, large_share=0.0) as emu:
        order = listing(emu)
        data_ids = [emu.dataset.expected(a).data_id for a in order]
        settings = settings_for(emu, tmp_path / "d", limits={"concurrency": 8})
        got = []
        async with Prefetcher(settings, window=window, window_bytes=None) as prefetcher:
            async for item in prefetcher:
                k = len(got)
                got.append(item.asset_id)
                # The storage has sent bytes only for items within the window of the consumer.
                fetched = [i for i, d in enumerate(data_ids) if emu.counters.storage_bytes_for(d)]
                assert max(fetched) < k + 1 + window, (k, max(fetched))
                assert item.index == k
                await anyio.sleep(0.01)  # a slow consumer: the fetchers run ahead meanwhile
        assert got == order
        # Every file was fetched once, and in full.
        assert emu.counters.storage_bytes == sum(emu.dataset.expected(a).size for a in order)


async def test_downloads_start_in_priority_order(tmp_path: Path):
    """One download at a time and slow storage: whenever an item is handed out, the files the
    storage has started sending are exactly the first ones in order (the lowest positions
    first, never a later one ahead of an earlier one)."""
    async with Emulator(assets=20, seed=3, empty_share=0.0, large_share=0.0) as emu:
        emu.faults.add(FaultRule(target="storage", kind="throttle", bytes_per_second=4_000_000))
        order = listing(emu)
        data_ids = [emu.dataset.expected(a).data_id for a in order]
        settings = settings_for(emu, tmp_path / "d", limits={"concurrency": 1})
        async with Prefetcher(settings, window=6) as prefetcher:
            async for item in prefetcher:
                started = [i for i, d in enumerate(data_ids) if emu.counters.storage_bytes_for(d)]
                assert started == list(range(len(started))), started
                assert item.index < len(started)


async def test_items_carry_the_record_and_a_verified_file(tmp_path: Path):
    async with Emulator(assets=60, seed=5, null_url_share=0.3, signing="mixed") as emu:
        settings = settings_for(emu, tmp_path / "d")
        async with Prefetcher(settings, window=16) as prefetcher:
            items = [item async for item in prefetcher]
        assert [i.asset_id for i in items] == listing(emu)
        paths = Counter(item.path for item in items)
        assert max(paths.values()) == 1  # nasty duplicate names still get distinct files
        for item in items:
            expected = emu.dataset.expected(item.asset_id)
            assert item.ok and item.path is not None and item.path.is_file()
            assert item.path.is_relative_to(tmp_path / "d")
            assert (item.data_id, item.filename, item.size) == (
                expected.data_id,
                expected.filename,
                expected.size,
            )
            assert item.sha256 == expected.sha256 == sha256_of(item.path)
            assert list(item.tags) == sorted(expected.tags)
            assert list(item.data_tags) == sorted(expected.data_tags)
            assert item.annotations == expected.annotations
            assert not item.cached


async def test_explicit_ids_come_in_the_given_order(tmp_path: Path):
    async with Emulator(assets=30, seed=7) as emu:
        order = listing(emu)
        wanted = [order[i] for i in (17, 3, 29, 0, 11, 4)]
        emu.delete_assets([order[11]])  # gone before the prefetcher asks for it
        settings = settings_for(emu, tmp_path / "d")
        async with Prefetcher(settings, asset_ids=wanted, on_failure="yield") as prefetcher:
            items = [item async for item in prefetcher]
        assert [i.asset_id for i in items] == wanted
        assert [i.ok for i in items] == [True, True, True, True, False, True]
        assert "no longer in the dataset version" in (items[4].error or "")
        assert items[4].path is None
        # Only the wanted files were fetched.
        assert emu.counters.storage_requests == 5


async def test_as_completed_does_not_wait_for_a_slow_first_item(tmp_path: Path):
    async with Emulator(assets=12, seed=9, empty_share=0.0, large_share=0.0) as emu:
        order = listing(emu)
        slow = emu.dataset.expected(order[0]).data_id
        emu.faults.add(
            FaultRule(target="storage", kind="throttle", bytes_per_second=20_000, data_id=slow)
        )
        settings = settings_for(emu, tmp_path / "d", limits={"concurrency": 4})
        async with Prefetcher(settings, window=4, order="as_completed") as prefetcher:
            got = [item.asset_id async for item in prefetcher]
        assert sorted(got) == sorted(order)
        assert got[0] != order[0]  # the others went out while the first one crawled
        assert got.index(order[0]) > 0


async def test_epochs_reuse_the_disk_and_shuffle_with_a_seed(tmp_path: Path):
    async with Emulator(assets=40, seed=11) as emu:
        order = listing(emu)
        settings = settings_for(emu, tmp_path / "d")
        async with Prefetcher(settings, shuffle=True, seed=123) as prefetcher:
            first = [item.asset_id async for item in prefetcher]
            emu.counters.reset()
            second_items = [item async for item in prefetcher]
            again = [item.asset_id async for item in prefetcher.epoch(0)]
        second = [i.asset_id for i in second_items]
        assert sorted(first) == sorted(second) == sorted(order)  # permutations
        assert first != order and second != first  # shuffled, differently per epoch
        assert again == first  # epoch 0 again: the same order
        assert all(item.cached for item in second_items)
        assert emu.counters.storage_requests == 0  # the second epoch re-used every file
        assert [item.epoch for item in second_items] == [1] * len(order)
        # Another session with the same seed gives the same orders.
        async with Prefetcher(settings, shuffle=True, seed=123) as prefetcher:
            assert [item.asset_id async for item in prefetcher] == first
        async with Prefetcher(settings, shuffle=True, seed=124) as prefetcher:
            assert [item.asset_id async for item in prefetcher] != first


async def test_breaking_out_early_leaves_no_task_thread_or_request(tmp_path: Path):
    async with Emulator(assets=80, seed=13, empty_share=0.0) as emu:
        emu.faults.add(FaultRule(target="storage", kind="throttle", bytes_per_second=2_000_000))
        settings = settings_for(emu, tmp_path / "d", limits={"concurrency": 8})
        async with Prefetcher(settings, window=16) as prefetcher:
            async for item in prefetcher:
                if item.index == 3:
                    break
            assert engine_tasks()  # the epoch is still prefetching its window...
        assert engine_tasks() == []  # ...until the prefetcher closes
        assert engine_threads() == set()
        requests = emu.counters.snapshot()
        await anyio.sleep(0.3)
        assert emu.counters.snapshot() == requests  # nobody asks the platform anything now
        assert requests["storage_requests"] < 80


def test_plain_iterator_break_and_exception_leave_no_thread(tmp_path: Path):
    with Emulator(assets=60, seed=17).in_thread() as emu:
        baseline = {t.ident for t in threading.enumerate()}
        settings = settings_for(emu, tmp_path / "d")
        for item in Prefetcher(settings, window=8):  # one session for one epoch
            if item.index == 4:
                break
        _wait_for_threads(baseline)
        requests = emu.counters.snapshot()

        def train(prefetcher: Prefetcher) -> None:
            for item in prefetcher:
                if item.index == 2:
                    _ = 1 / 0

        with Prefetcher(settings, window=8) as prefetcher, pytest.raises(ZeroDivisionError):
            train(prefetcher)
        _wait_for_threads(baseline)
        assert emu.counters.snapshot()["storage_requests"] >= requests["storage_requests"]
        settled = emu.counters.snapshot()
        threading.Event().wait(0.3)
        assert emu.counters.snapshot() == settled

        # The same prefetcher, held open across epochs, with the loop in its thread.
        with Prefetcher(settings, window=8) as prefetcher:
            for _ in range(2):
                assert len([item for item in prefetcher]) == 60
        _wait_for_threads(baseline)


def _wait_for_threads(baseline: set[int | None], rounds: int = 100) -> None:
    # The loop thread is joined on close; anyio's worker threads stop on their own as soon as
    # their loop is gone: give them a moment (bounded), then insist.
    for _ in range(rounds):
        if {t.ident for t in threading.enumerate()} <= baseline:
            return
        threading.Event().wait(0.02)
    left = [t.name for t in threading.enumerate() if t.ident not in baseline]
    raise AssertionError(f"threads left running: {left}")
