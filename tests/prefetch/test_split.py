"""Property tests of the epoch order (seeded shuffle in SQLite) and of the worker split."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import UsageError
from engine.prefetch.order import OrderStore
from engine.prefetch.split import Shard, rank, shard_for, shuffle_key

ids_strategy = st.lists(
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=12),
    unique=True,
    max_size=60,
)


def _order(store: OrderStore, key: bytes | None, shard: Shard, chunk: int = 7) -> list:
    cursor = store.cursor(key, shard)
    out = []
    while batch := cursor.take(chunk):
        out += batch
    cursor.close()
    return out


@settings(max_examples=60)
@given(ids=ids_strategy, seed=st.integers(-(2**63), 2**63 - 1), epoch=st.integers(0, 1000))
def test_shuffled_order_is_the_keyed_hash_sort_and_a_permutation(ids, seed, epoch):
    store = OrderStore()
    try:
        assert store.append(ids) == ids
        key = shuffle_key(seed, epoch)
        got = [asset_id for _, asset_id in _order(store, key, Shard())]
        assert got == [ids[i] for _, i in sorted((rank(key, a), i) for i, a in enumerate(ids))]
        assert sorted(got) == sorted(ids)  # a permutation
        # Deterministic for a seed and epoch: the same order again.
        assert [a for _, a in _order(store, key, Shard(), chunk=3)] == got
    finally:
        store.close()


@settings(max_examples=30)
@given(seed=st.integers(0, 2**32), epoch=st.integers(0, 100))
def test_each_epoch_gets_another_order(seed, epoch):
    ids = [str(uuid.UUID(int=i)) for i in range(40)]
    store = OrderStore()
    try:
        store.append(ids)
        first = _order(store, shuffle_key(seed, epoch), Shard())
        second = _order(store, shuffle_key(seed, epoch + 1), Shard())
        other_seed = _order(store, shuffle_key(seed + 1, epoch), Shard())
        # 40! orders: an accidental repeat is beyond any test's lifetime.
        assert first != second and first != other_seed
        assert [a for _, a in first] != ids
    finally:
        store.close()


@settings(max_examples=60)
@given(
    total=st.integers(0, 80),
    workers=st.integers(1, 5),
    world=st.integers(1, 3),
    shuffled=st.booleans(),
)
def test_worker_shards_give_every_item_to_exactly_one_worker(total, workers, world, shuffled):
    ids = [f"asset-{i}" for i in range(total)]
    store = OrderStore()
    try:
        store.append(ids)
        key = shuffle_key(1, 2) if shuffled else None
        whole = _order(store, key, Shard())
        shares = [
            _order(store, key, shard_for(w, workers, r, world))
            for r in range(world)
            for w in range(workers)
        ]
        seen = [item for share in shares for item in share]
        assert sorted(seen) == sorted(whole)  # every item, exactly once
        sizes = [len(share) for share in shares]
        assert max(sizes, default=0) - min(sizes, default=0) <= 1  # balanced
        for share, shard in zip(
            shares,
            [shard_for(w, workers, r, world) for r in range(world) for w in range(workers)],
            strict=True,
        ):
            assert len(share) == shard.size_of(total)
            assert [index for index, _ in share] == sorted(index for index, _ in share)
        # Taking from the shares in turn gives back the whole order (a DataLoader in order).
        merged = sorted(seen)
        assert merged == whole
    finally:
        store.close()


def test_shards_and_ids_are_checked():
    with pytest.raises(ValueError, match="does not exist"):
        Shard(2, 2)
    with pytest.raises(ValueError, match="worker"):
        shard_for(3, 2)
    with pytest.raises(ValueError, match="rank"):
        shard_for(0, 2, rank=1, world_size=1)
    store = OrderStore()
    try:
        with pytest.raises(UsageError, match="repeat"):
            store.append(["a", "b", "a"], strict=True)
        assert store.append(["x", "y", "x"]) == ["x", "y"]  # a listing's repeat is dropped
    finally:
        store.close()


@settings(max_examples=40)
@given(
    ids=ids_strategy,
    seed=st.integers(0, 2**32),
    shuffled=st.booleans(),
    count=st.integers(1, 4),
    start=st.integers(0, 70),
    data=st.data(),
)
def test_an_order_read_from_a_position_is_the_rest_of_the_order(
    ids, seed, shuffled, count, start, data
):
    """Arithmetic, not replay: the order from position ``start`` is the tail of the whole
    order, shard by shard, whatever the chunk sizes."""
    shard = Shard(data.draw(st.integers(0, count - 1)), count)
    key = shuffle_key(seed, 0) if shuffled else None
    store = OrderStore()
    try:
        store.append(ids)
        whole = _order(store, key, shard)
        cursor = store.cursor(key, shard, start)
        tail = []
        while batch := cursor.take(data.draw(st.integers(1, 9))):
            tail += batch
        cursor.close()
        assert tail == [(index, a) for index, a in whole if index >= start]
    finally:
        store.close()
