"""Pure: the shuffled order of an epoch, and how an order is split between workers.

Shuffle. An epoch's order is the listing (or the given ids) sorted by a keyed hash of each
asset id, ties broken by the original position. The key comes from ``(seed, epoch)``, so the
order is deterministic for a seed, different from one epoch to the next, and a permutation by
construction (a sort of the same rows). Because the sort key is a function of one row, SQLite can
sort a listing of any size on disk (:mod:`engine.prefetch.order`) without the listing ever being
in memory, which a Fisher-Yates shuffle would need.

Split. Worker ``index`` of ``count`` takes the items at order positions ``k`` with
``k % count == index``: every item goes to exactly one worker, the shares differ by at most one,
and a ``DataLoader`` that takes from its workers in turn gives back the epoch's order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["Shard", "rank", "shard_for", "shuffle_key"]

_KEY_BYTES = 32


def shuffle_key(seed: int, epoch: int) -> bytes:
    """The hash key of one epoch's order (at most 64 bytes: a BLAKE2b key)."""
    return hashlib.blake2b(
        f"assetsync-shuffle:{seed}:{epoch}".encode(), digest_size=_KEY_BYTES
    ).digest()


def rank(key: bytes, asset_id: str) -> int:
    """The sort key of ``asset_id`` under ``key``: a signed 64-bit integer (SQLite's INTEGER)."""
    digest = hashlib.blake2b(asset_id.encode("utf-8", "surrogatepass"), digest_size=8, key=key)
    return int.from_bytes(digest.digest(), "big", signed=True)


@dataclass(frozen=True, slots=True)
class Shard:
    """This worker's share of an order: positions ``k`` with ``k % count == index``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} of {self.count} does not exist")

    def holds(self, position: int) -> bool:
        return position % self.count == self.index

    def size_of(self, total: int) -> int:
        """How many of ``total`` positions fall in this shard."""
        return max(0, (total - self.index + self.count - 1) // self.count)


def shard_for(worker_id: int, num_workers: int, rank: int = 0, world_size: int = 1) -> Shard:
    """The shard of one data-loader worker of one process among ``world_size`` processes
    (distributed training): processes split the order first, then their workers."""
    if num_workers < 1 or not 0 <= worker_id < num_workers:
        raise ValueError(f"worker {worker_id} of {num_workers} does not exist")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} of {world_size} does not exist")
    return Shard(rank * num_workers + worker_id, world_size * num_workers)
