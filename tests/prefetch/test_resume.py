"""Mid-epoch resume of the plain Prefetcher against the emulator: state_dict, then a new
prefetcher (a new process would do the same) yields the rest, each asset once, nothing fetched
from the storage twice."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from engine.emulator import Emulator
from engine.errors import UsageError
from engine.prefetch import Prefetcher, merge_states
from tests.prefetch.helpers import listing, settings_for


def _take(prefetcher: Prefetcher, count: int) -> list[str]:
    taken = []
    for item in prefetcher:
        taken.append(item.asset_id)
        if len(taken) == count:
            break
    return taken


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_new_prefetcher_resumes_the_epoch_from_a_state(tmp_path: Path, shuffle: bool):
    with Emulator(assets=50, seed=71, large_share=0.0, empty_share=0.0).in_thread() as emu:
        order = listing(emu)
        settings = settings_for(emu, tmp_path / "d")
        with Prefetcher(settings, window=6, shuffle=shuffle, seed=4) as prefetcher:
            first = _take(prefetcher, 17)
            state = prefetcher.state_dict()
        assert state["consumed"] == 17 and not state["finished"]
        with Prefetcher(settings, window=6, shuffle=shuffle, seed=4) as prefetcher:
            prefetcher.load_state_dict(state)
            rest = [item.asset_id for item in prefetcher]
            assert prefetcher.state_dict()["finished"]
            assert prefetcher.stats.yielded == len(order) - 17
        assert Counter(first + rest) == Counter(order)
        if not shuffle:
            assert first + rest == order
        assert emu.counters.storage_requests == len(order)
        with pytest.raises(ValueError, match="seed"):
            Prefetcher(settings, shuffle=True, seed=5).load_state_dict(state)


def test_two_shards_resumed_as_one(tmp_path: Path):
    with Emulator(assets=41, seed=72, large_share=0.0, empty_share=0.0).in_thread() as emu:
        order = listing(emu)
        settings = settings_for(emu, tmp_path / "d")
        states, first = [], []
        for index, count in ((0, 9), (1, 4)):
            with Prefetcher(settings, window=4, shuffle=True, shard=(index, 2)) as prefetcher:
                first += _take(prefetcher, count)
                states.append(prefetcher.state_dict())
        with pytest.raises(ValueError, match="merge"):
            Prefetcher(settings, shuffle=True).load_state_dict(states[0])
        with Prefetcher(settings, window=4, shuffle=True) as prefetcher:
            prefetcher.load_state_dict(merge_states(states))
            rest = [item.asset_id for item in prefetcher]
        assert Counter(first + rest) == Counter(order)
        assert emu.counters.storage_requests == len(order)


def test_a_resume_under_a_disk_budget_fetches_nothing_it_evicted(tmp_path: Path):
    """Issue 12: a fast-forward re-downloaded what the budget had evicted, just to skip it. A
    resumed epoch starts at the next position: what the consumer took is not fetched again."""
    with Emulator(
        assets=40, seed=73, large_share=0.0, empty_share=0.0, min_size=2000, max_size=4000
    ).in_thread() as emu:
        order = listing(emu)
        settings = settings_for(emu, tmp_path / "d")
        budget = {"max_bytes": 30_000, "window": 4, "window_bytes": None}
        with Prefetcher(settings, **budget) as prefetcher:
            first = _take(prefetcher, 25)
            state = prefetcher.state_dict()
            assert prefetcher.stats.evicted > 0  # what was taken early is gone from disk
        with Prefetcher(settings, **budget) as prefetcher:
            prefetcher.load_state_dict(state)
            rest = [item.asset_id for item in prefetcher]
        assert Counter(first + rest) == Counter(order)
        assert emu.counters.storage_requests == len(order)


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_resume_after_the_order_changed_is_refused(tmp_path: Path, shuffle: bool):
    """A state's positions are those of the order it was taken in. Two assets deleted among
    those the consumer took shift every later position by two: a resume by position silently
    skipped two assets (shuffled: skipped and repeated some). It is refused, in one line."""
    with Emulator(assets=40, seed=74, large_share=0.0, empty_share=0.0).in_thread() as emu:
        order = listing(emu)
        settings = settings_for(emu, tmp_path / "d")
        with Prefetcher(settings, window=6, shuffle=shuffle, seed=4) as prefetcher:
            first = _take(prefetcher, 15)
            state = prefetcher.state_dict()
        emu.delete_assets(first[:2])
        with Prefetcher(settings, window=6, shuffle=shuffle, seed=4) as prefetcher:
            prefetcher.load_state_dict(state)
            with pytest.raises(UsageError, match="changed since the state was taken") as caught:
                next(iter(prefetcher))
        assert "\n" not in str(caught.value)
        # Without the state, the epoch starts afresh over the version as it is now.
        with Prefetcher(settings, window=6, shuffle=shuffle, seed=4) as prefetcher:
            now = [item.asset_id for item in prefetcher]
        assert Counter(now) == Counter(a for a in order if a not in first[:2])


def test_a_resume_in_listing_order_takes_assets_added_at_the_end(tmp_path: Path):
    """Assets added after the state was taken come after every position it knows: the listing
    order's first positions are unchanged, so the resume goes on, and yields the new ones."""
    with Emulator(assets=30, seed=75, large_share=0.0, empty_share=0.0).in_thread() as emu:
        order = listing(emu)
        settings = settings_for(emu, tmp_path / "d")
        with Prefetcher(settings, window=6) as prefetcher:
            first = _take(prefetcher, 12)
            state = prefetcher.state_dict()
        added = emu.add_assets(4)
        assert listing(emu) == order + added
        with Prefetcher(settings, window=6) as prefetcher:
            prefetcher.load_state_dict(state)
            rest = [item.asset_id for item in prefetcher]
        assert first + rest == order + added
        # Shuffled, the same change moves every position: refused.
        with Prefetcher(settings, window=6, shuffle=True, seed=4) as prefetcher:
            _take(prefetcher, 5)
            state = prefetcher.state_dict()
        emu.add_assets(1)
        with Prefetcher(settings, window=6, shuffle=True, seed=4) as prefetcher:
            prefetcher.load_state_dict(state)
            with pytest.raises(UsageError, match="changed since the state was taken"):
                next(iter(prefetcher))
