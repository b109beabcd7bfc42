"""Short-lived signed URLs: the prefetcher uses them while they are usable and re-signs in batches.

The engine and the emulator share one clock that only the consumer moves (a fixed amount per
item), so what a URL's age is when its download starts depends on the consumer's pace alone,
not on how fast this machine runs the test.
"""

from __future__ import annotations

from pathlib import Path

from engine.emulator import Emulator
from engine.prefetch import Prefetcher
from tests.prefetch.helpers import listing, settings_for, sha256_of

ASSETS = 300
T0 = 1_800_000_000.0  # a whole second: the emulator signs from the second it is in


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def _emulator(clock: Clock) -> Emulator:
    return Emulator(
        assets=ASSETS, seed=8, url_ttl=10.0, clock=clock, large_share=0.0, empty_share=0.0
    )


async def test_ten_second_urls_cost_one_signing_per_asset_and_epoch(tmp_path: Path) -> None:
    """URLs living 10 s, an epoch of 3 s: each URL the listing (or an epoch's XGET) signed is
    the one its download uses. (With a 30 s margin and 60 s of queue slack every URL was stale
    on arrival, and each download re-signed it with up to 999 queued ones.)"""
    clock = Clock()
    async with _emulator(clock) as emu:
        settings = settings_for(emu, tmp_path / "d", limits={"concurrency": 8})
        async with Prefetcher(settings, window=32, clock=clock) as prefetcher:
            for epoch in range(2):
                before = emu.counters.url_signings
                items = []
                async for item in prefetcher:
                    items.append(item)
                    clock.now += 0.01  # the consumer's pace: 3 s of URL time an epoch
                assert [i.asset_id for i in items] == listing(emu)
                signings = emu.counters.url_signings - before
                assert signings <= 1.1 * ASSETS, (epoch, signings)
        assert emu.counters.requests["presign"] == 0  # no URL was re-signed one by one
        for item in items:
            assert item.path is not None and item.sha256 == sha256_of(item.path)


async def test_urls_that_age_while_queued_are_re_signed_once_in_batches(tmp_path: Path) -> None:
    """A slow consumer (15 s of URL time for the epoch): URLs listed at the start age past half
    their life before their downloads start. They are re-signed in a few XGET batches just
    before they are needed, each once, never one request per asset."""
    clock = Clock()
    async with _emulator(clock) as emu:
        settings = settings_for(emu, tmp_path / "d", limits={"concurrency": 8})
        async with Prefetcher(settings, window=32, clock=clock) as prefetcher:
            items = []
            async for item in prefetcher:
                items.append(item)
                clock.now += 0.05
        assert len(items) == ASSETS
        re_signed = emu.counters.url_signings - ASSETS  # the listing signed each once
        assert 0 < re_signed <= ASSETS
        assert emu.counters.requests["presign"] == 0
        assert emu.counters.requests["assets_xget"] <= 10
        for item in items:
            assert item.path is not None and item.sha256 == sha256_of(item.path)
