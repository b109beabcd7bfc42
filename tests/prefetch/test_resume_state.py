"""Property tests of mid-epoch resume's arithmetic: shares, equal shards, state dicts, merges."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.prefetch.order import OrderStore
from engine.prefetch.resume import (
    EpochProgress,
    OrderMark,
    ResumeState,
    Share,
    ShareScan,
    merge_states,
)
from engine.prefetch.split import Shard, shuffle_key


def _read(store: OrderStore, key: bytes | None, share: Share, chunk: int = 5) -> list:
    cursor = store.cursor(key, ShareScan(share, store.count))
    out = []
    while batch := cursor.take(chunk):
        out += batch
    cursor.close()
    return out


def _store(total: int) -> OrderStore:
    store = OrderStore()
    store.append([f"asset-{i}" for i in range(total)])
    store.complete = True
    return store


@st.composite
def _stops(draw, total: int, count: int) -> list[int]:
    """How many items each of ``count`` shards of a fresh epoch consumed before the stop."""
    sizes = [Shard(i, count).size_of(total) for i in range(count)]
    return [draw(st.integers(0, size)) for size in sizes]


@settings(max_examples=80, deadline=None)
@given(
    total=st.integers(0, 60),
    count=st.integers(1, 4),
    again=st.integers(1, 4),
    shuffled=st.booleans(),
    data=st.data(),
)
def test_a_merged_state_resumes_the_rest_exactly_once_with_any_split(
    total, count, again, shuffled, data
):
    """Shards stop anywhere; their merged state, resumed with another number of shards (and
    stopped and merged again), yields exactly what none of them had consumed."""
    key = shuffle_key(3, 1) if shuffled else None
    store = _store(total)
    try:
        whole = _read(store, key, Share())
        consumed: list[tuple[int, str]] = []
        states = []
        for i, stop in enumerate(data.draw(_stops(total, count))):
            share = Share(Shard(i, count))
            items = _read(store, key, share)
            progress = EpochProgress(1, share, 3, shuffled)
            for index, _ in items[:stop]:
                progress.took(index, total)
            if stop == len(items) and data.draw(st.booleans()):
                progress.finish(total)
            consumed += items[:stop]
            states.append(progress.state())
        merged = merge_states(states)
        # A second stop: the resumed shards consume some more, then merge again.
        resumed = ResumeState.parse(merged)
        states = []
        for i, stop in enumerate(data.draw(_stops(len(whole) - len(consumed), again))):
            share = resumed.share_for(Shard(i, again), None)
            items = [] if resumed.finished else _read(store, key, share)
            assert stop <= len(items)
            # As the prefetcher does: a finished epoch's share resumes finished.
            progress = EpochProgress(1, share, 3, shuffled, finished=resumed.finished)
            for index, _ in items[:stop]:
                progress.took(index, total)
            consumed += items[:stop]
            states.append(progress.state())
        last = ResumeState.parse(merge_states(states))
        rest = []
        for i in range(count):
            if not last.finished:  # a finished epoch resumes as nothing left
                rest += _read(store, key, last.share_for(Shard(i, count), None))
        assert Counter(consumed + rest) == Counter(whole)  # each item exactly once
        assert sorted(rest) == [item for item in whole if item not in consumed]
    finally:
        store.close()


@settings(max_examples=60, deadline=None)
@given(
    total=st.integers(1, 70),
    count=st.integers(1, 6),
    equal=st.sampled_from(["pad", "drop"]),
    base=st.integers(0, 10),
    shuffled=st.booleans(),
)
def test_equal_shards_have_one_size(total, count, equal, base, shuffled):
    key = shuffle_key(5, 0) if shuffled else None
    store = _store(total)
    try:
        whole = _read(store, key, Share())
        rest = [item for item in whole if item[0] >= base]
        shares = [
            _read(store, key, Share(Shard(i, count), base=base, equal=equal)) for i in range(count)
        ]
        sizes = {len(items) for items in shares}
        assert len(sizes) == 1
        real = [item for items in shares for item in items if item[0] < total]
        if equal == "drop":
            assert sizes == {len(rest) // count}
            assert sorted(real) == rest[: count * (len(rest) // count)]
        else:
            assert sizes == {-(-len(rest) // count)}
            assert sorted(real) == rest  # every real item once, then repeats
            pads = [item for items in shares for item in items if item[0] >= total]
            by_position = dict(whole)
            for index, asset_id in pads:
                assert asset_id == rest[(index - total) % len(rest)][1]
                assert asset_id in by_position.values()
            for i, items in enumerate(shares):
                share = Share(Shard(i, count), base=base, equal=equal)
                for n, (index, _) in enumerate(items, 1):
                    assert share.consumed_through(index, total) == n
    finally:
        store.close()


def test_states_are_checked():
    share = Share(Shard(0, 2))
    state = EpochProgress(4, share, 0, False).state()
    with pytest.raises(ValueError, match="all 2 shards"):
        merge_states([state])
    with pytest.raises(ValueError, match="not a prefetcher state"):
        ResumeState.parse({"epoch": 1})
    with pytest.raises(ValueError, match="merge every shard"):
        ResumeState.parse(state).share_for(Shard(0, 1), None)
    other = EpochProgress(5, Share(Shard(1, 2)), 0, False).state()
    with pytest.raises(ValueError, match="one epoch"):
        merge_states([state, other])


@settings(max_examples=60, deadline=None)
@given(
    pages=st.lists(st.lists(st.text(min_size=1, max_size=6), max_size=8), max_size=6),
)
def test_the_order_mark_is_the_digest_of_the_first_ids(pages):
    """What a state carries (the store's running mark after each page) is what a resumed epoch
    computes again from its own store for the same first ids: equal for the same ids in the
    same order, different for another first id list."""
    store = OrderStore()
    marks = [store.listed]
    try:
        for page in pages:
            store.append(page)
            marks.append(store.listed)
        for count, digest in marks:
            assert store.prefix_digest(count) == digest
        stored = [store.id_at(None, i) for i in range(store.count)]
        for count, digest in marks:
            if count:
                other = OrderStore()
                try:
                    other.append([*stored[1:count], "another id"])  # first id gone, one added
                    assert other.prefix_digest(count) != digest
                finally:
                    other.close()
    finally:
        store.close()


def test_order_marks_are_checked_and_merged():
    share0, share1 = Share(Shard(0, 2)), Share(Shard(1, 2))
    near, far = OrderMark(10, "a" * 32), OrderMark(25, "b" * 32)
    states = [
        EpochProgress(1, share0, 0, False, order=near).state(),
        EpochProgress(1, share1, 0, False, order=far).state(),
    ]
    # Each worker lists the order itself: the furthest mark covers both shards' positions.
    assert merge_states(states)["order"] == [25, "b" * 32]
    assert ResumeState.parse(merge_states(states)).order == far
    # Two marks of one length that differ are two orders.
    clash = EpochProgress(1, share1, 0, False, order=OrderMark(10, "c" * 32)).state()
    with pytest.raises(ValueError, match="one order"):
        merge_states([states[0], clash])
    # A state from before marks (no "order") still loads, and is not checked.
    old = {k: v for k, v in states[0].items() if k != "order"}
    assert ResumeState.parse(old).order is None
    for bad in ([10], [-1, "a" * 32], [True, "a" * 32], [3, "short"], "10:abc"):
        with pytest.raises(ValueError, match="order mark"):
            ResumeState.parse({**states[0], "order": bad})


def test_the_resume_arithmetic_is_pure():
    """It is loaded where no I/O is wanted (a checkpoint merge): it loads none."""
    from tests.test_pure_modules import test_importing_a_pure_module_loads_no_io

    test_importing_a_pure_module_loads_no_io("engine.prefetch.resume")
