"""PyTorch adapter (the ``torch`` extra): an ``IterableDataset`` over a prefetcher.

::

    from torch.utils.data import DataLoader
    from engine.prefetch import PrefetchDataset

    dataset = PrefetchDataset(settings, transform=load_sample, shuffle=True, seed=0)
    loader = DataLoader(dataset, batch_size=32, num_workers=4)
    for epoch in range(10):
        dataset.set_epoch(epoch)          # as with DistributedSampler: a new order per epoch
        for batch in loader:
            ...

Each DataLoader worker runs its own :class:`~engine.prefetch.Prefetcher` on the shared DEST
(a shared lock: see :mod:`engine.prefetch.locking`) over its share of the epoch's order:
positions ``k`` with ``k % (workers x world_size) == its index`` (:func:`shard_for`), so every
asset goes to exactly one worker, and a loader that takes from its workers in turn keeps the
order. ``transform`` runs in the worker, on the item whose file is on disk, and turns it into
what the loader collates (tensors); without it items are yielded as they are (use
``batch_size=None`` or a ``collate_fn`` that accepts them). ``rank``/``world_size`` split the
order between the processes of a distributed job first.

With ``max_bytes`` the prefetcher owns DEST (an exclusive lock: it deletes files), so only one
worker can use it: ``num_workers`` 0 or 1.

This module imports torch; the rest of :mod:`engine.prefetch` never does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from torch.utils.data import IterableDataset, get_worker_info

from engine.errors import UsageError
from engine.prefetch.items import PrefetchItem
from engine.prefetch.options import PrefetchOptions
from engine.prefetch.prefetcher import Prefetcher
from engine.prefetch.split import Shard, shard_for
from engine.settings import Settings

__all__ = ["PrefetchDataset", "check_workers", "worker_shard"]

T = TypeVar("T")


def worker_shard(rank: int = 0, world_size: int = 1) -> Shard:
    """This DataLoader worker's shard (the whole order outside a worker)."""
    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return shard_for(worker, workers, rank, world_size)


def check_workers(options: PrefetchOptions, num_workers: int) -> None:
    """A disk budget makes a prefetcher own DEST: several workers cannot all own it."""
    if options.max_bytes is not None and num_workers > 1:
        raise UsageError(
            "max_bytes makes the prefetcher own DEST (it deletes files): use num_workers "
            "0 or 1 with it, or no max_bytes"
        )


class PrefetchDataset(IterableDataset[T], Generic[T]):
    """Every asset of the version (or of ``asset_ids``), once per epoch, split between workers.

    ``prefetch`` keywords go to :class:`~engine.prefetch.Prefetcher` (``window``, ``shuffle``,
    ``seed``, ``max_bytes``, ``on_failure``...). The dataset pickles (spawned workers get a
    copy): settings, options and ids only; each worker opens its own session when it iterates.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transform: Callable[[PrefetchItem], T] | None = None,
        asset_ids: Iterable[str] | None = None,
        options: PrefetchOptions | None = None,
        rank: int = 0,
        world_size: int = 1,
        clock: Callable[[], float] = time.time,
        **prefetch: Any,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.transform = transform
        self.asset_ids = list(asset_ids) if asset_ids is not None else None
        self.options = options
        self.rank = rank
        self.world_size = world_size
        self.clock = clock
        self.prefetch = prefetch
        self.epoch = 0
        shard_for(0, 1, rank, world_size)  # checks rank and world_size now, not in a worker

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration gives (its shuffled order); call it before each one."""
        self.epoch = epoch

    def prefetcher(self, shard: Shard) -> Prefetcher:
        return Prefetcher(
            self.settings,
            asset_ids=self.asset_ids,
            options=self.options,
            shard=shard,
            clock=self.clock,
            **self.prefetch,
        )

    def __iter__(self) -> Iterator[T]:
        info = get_worker_info()
        shard = worker_shard(self.rank, self.world_size)
        prefetcher = self.prefetcher(shard)
        check_workers(prefetcher.options, info.num_workers if info is not None else 0)
        with prefetcher:
            for item in prefetcher.epoch(self.epoch):
                yield self.transform(item) if self.transform is not None else item  # type: ignore[misc]
