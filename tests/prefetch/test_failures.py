"""Faults, expired URLs and failed assets during prefetch: the iterator finishes or says why."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import anyio
import pytest

from engine.emulator import Emulator, FaultRule
from engine.errors import ApiUnavailable, EngineError
from engine.manifest import Manifest
from engine.prefetch import AssetUnavailable, Prefetcher
from tests.prefetch.helpers import listing, settings_for, sha256_of

FAST_TIMEOUTS = {"timeouts": {"stall": 0.5, "read": 5, "connect": 5, "api": 30}}


async def test_faults_on_api_and_storage_still_deliver_every_item(tmp_path: Path):
    async with Emulator(assets=60, seed=21, fault_seed=3) as emu:
        emu.faults.add(FaultRule(target="storage", kind="drop", probability=0.25, count=12))
        emu.faults.add(
            FaultRule(target="storage", kind="status", status=503, retry_after=0.01, count=5)
        )
        emu.faults.add(
            FaultRule(target="storage", kind="status", status=429, retry_after=0.01, count=3)
        )
        emu.faults.add(
            FaultRule(target="storage", kind="stall", seconds=3, after_bytes=100, count=2)
        )
        emu.faults.add(FaultRule(target="assets_list", kind="status", status=503, count=1))
        emu.faults.add(FaultRule(target="assets_xget", kind="status", status=502, count=1))
        emu.faults.add(FaultRule(target="annotations_bulk", kind="status", status=502, count=1))
        settings = settings_for(emu, tmp_path / "d", transfer=FAST_TIMEOUTS)
        async with Prefetcher(settings, window=12) as prefetcher:
            with anyio.fail_after(60):  # a hang would be the bug
                items = [item async for item in prefetcher]
            stats = prefetcher.stats
        assert [i.asset_id for i in items] == listing(emu)
        for item in items:
            assert item.path is not None
            assert sha256_of(item.path) == emu.dataset.expected(item.asset_id).sha256
        assert stats.retries > 0 and stats.failed == 0


async def test_urls_expiring_during_prefetch_are_refreshed(tmp_path: Path):
    async with Emulator(assets=50, seed=23, url_ttl=600, large_share=0.0) as emu:
        emu.faults.add(FaultRule(target="storage", kind="throttle", bytes_per_second=3_000_000))
        settings = settings_for(emu, tmp_path / "d", limits={"concurrency": 4})
        items = []
        async with Prefetcher(settings, window=8, clock=emu.now) as prefetcher:
            async for item in prefetcher:
                items.append(item)
                if len(items) == 10:
                    emu.advance_clock(3600)  # every URL handed out so far is now expired
            stats = prefetcher.stats
        assert [i.asset_id for i in items] == listing(emu)
        for item in items:
            assert item.path is not None
            assert sha256_of(item.path) == emu.dataset.expected(item.asset_id).sha256
        assert stats.url_refreshes > 0
        # Stale URLs of queued jobs were refreshed in batches (XGET), not one by one.
        assert emu.counters.requests["assets_xget"] >= 1


async def _version_with_a_broken_asset(emu: Emulator) -> str:
    broken = listing(emu)[5]
    data_id = emu.dataset.expected(broken).data_id
    emu.faults.add(FaultRule(target="storage", kind="status", status=404, data_id=data_id))
    return broken


async def test_failure_policy_raise(tmp_path: Path):
    async with Emulator(assets=20, seed=25) as emu:
        broken = await _version_with_a_broken_asset(emu)
        settings = settings_for(emu, tmp_path / "d")
        got: list[str] = []

        async def consume(prefetcher: Prefetcher) -> None:
            async for item in prefetcher:
                got.append(item.asset_id)

        async with Prefetcher(settings, window=4, on_failure="raise") as prefetcher:
            with pytest.raises(AssetUnavailable) as caught:
                await consume(prefetcher)
        assert caught.value.asset_id == broken
        assert got == listing(emu)[:5]  # everything before it came out, in order
        with Manifest.open(tmp_path / "d", create=False) as manifest:
            row = manifest.row(broken)
        assert row is not None and row.state == "failed"  # recorded for the next mirror


def test_plain_iterator_raises_a_failure_it_finds_ready(tmp_path: Path):
    """A slow consumer finds each next item already settled, failures included: the plain
    iterator takes those without waiting on the loop, and must raise just the same."""
    with Emulator(assets=20, seed=25).in_thread() as emu:
        broken = listing(emu)[5]
        data_id = emu.dataset.expected(broken).data_id
        emu.faults.add(FaultRule(target="storage", kind="status", status=404, data_id=data_id))
        settings = settings_for(emu, tmp_path / "d")
        got: list[str] = []

        def train(prefetcher: Prefetcher) -> None:
            for item in prefetcher:
                got.append(item.asset_id)
                threading.Event().wait(0.05)  # the window fills while "training"

        with Prefetcher(settings, window=4, on_failure="raise") as prefetcher:
            with pytest.raises(AssetUnavailable) as caught:
                train(prefetcher)
            stats = prefetcher.stats
        assert caught.value.asset_id == broken
        assert got == listing(emu)[:5]
        assert stats.failed == 1


def test_plain_iterator_second_epoch_from_disk_in_order(tmp_path: Path):
    with Emulator(assets=30, seed=26).in_thread() as emu:
        settings = settings_for(emu, tmp_path / "d")
        with Prefetcher(settings, window=8) as prefetcher:
            first = [item.asset_id for item in prefetcher]
            storage = emu.counters.snapshot()["storage_requests"]
            second = [item for item in prefetcher]
        assert first == [item.asset_id for item in second] == listing(emu)
        assert all(item.cached for item in second)
        assert emu.counters.snapshot()["storage_requests"] == storage  # nothing fetched again


async def test_failure_policy_skip_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    async with Emulator(assets=20, seed=25) as emu:
        broken = await _version_with_a_broken_asset(emu)
        settings = settings_for(emu, tmp_path / "d")
        with caplog.at_level(logging.WARNING, logger="engine.prefetch"):
            async with Prefetcher(settings, window=4, on_failure="skip") as prefetcher:
                got = [item.asset_id async for item in prefetcher]
                stats = prefetcher.stats
        assert got == [a for a in listing(emu) if a != broken]
        assert stats.failed == 1 and broken in stats.failures[0]
        assert any(broken in record.getMessage() for record in caplog.records)


async def test_failure_policy_yield(tmp_path: Path):
    async with Emulator(assets=20, seed=25) as emu:
        broken = await _version_with_a_broken_asset(emu)
        settings = settings_for(emu, tmp_path / "d")
        async with Prefetcher(settings, window=4, on_failure="yield") as prefetcher:
            items = [item async for item in prefetcher]
        assert [i.asset_id for i in items] == listing(emu)
        failed = [i for i in items if not i.ok]
        assert [i.asset_id for i in failed] == [broken]
        assert failed[0].path is None and "404" in (failed[0].error or "")
        with pytest.raises(AssetUnavailable):
            failed[0].read_bytes()
        assert failed[0].tags == tuple(sorted(emu.dataset.expected(broken).tags))


async def test_a_listing_that_keeps_failing_ends_the_iteration_with_the_error(tmp_path: Path):
    async with Emulator(assets=10, seed=27) as emu:
        emu.faults.add(FaultRule(target="assets_list", kind="status", status=503))
        settings = settings_for(
            emu, tmp_path / "d", transfer={"retry": {"attempts": 2, "base_delay": 0.01}}
        )
        async with Prefetcher(settings) as prefetcher:
            with anyio.fail_after(30), pytest.raises(ApiUnavailable):
                async for _ in prefetcher:
                    pass


async def test_a_storage_that_stalls_forever_fails_the_asset_instead_of_hanging(tmp_path: Path):
    async with Emulator(assets=6, seed=29, large_share=0.0) as emu:
        stuck = listing(emu)[2]
        emu.faults.add(
            FaultRule(
                target="storage",
                kind="stall",
                seconds=30,
                data_id=emu.dataset.expected(stuck).data_id,
            )
        )
        settings = settings_for(
            emu,
            tmp_path / "d",
            transfer={
                "timeouts": {"stall": 0.2, "read": 0.3, "connect": 5, "api": 30},
                "retry": {"attempts": 2, "base_delay": 0.01, "max_delay": 0.02},
            },
        )
        async with Prefetcher(settings, on_failure="yield", cancel_grace=0.1) as prefetcher:
            with anyio.fail_after(30):
                items = [item async for item in prefetcher]
        assert [i.asset_id for i in items if not i.ok] == [stuck]


async def test_bad_inputs_are_refused_before_anything_happens(tmp_path: Path):
    async with Emulator(assets=3) as emu:
        settings = settings_for(emu, tmp_path / "d", tags=["train"])
        with pytest.raises(EngineError, match="either asset ids or a tag filter"):
            async with Prefetcher(settings, asset_ids=["x"]):
                pass
        with pytest.raises(EngineError, match="not found"):
            async with Prefetcher(
                settings.model_copy(update={"tags": (), "dataset_version": "nope"})
            ):
                pass
        assert not (tmp_path / "d" / "x").exists()
