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
asset goes to exactly one worker. ``transform`` runs in the worker, on the item whose file is on
disk, and turns it into what the loader collates (tensors); without it items are yielded as they
are (use ``batch_size=None`` or a ``collate_fn`` that accepts them).

Order: with ``batch_size=None`` a loader that takes from its workers in turn gives the epoch's
order item by item; with batches, each batch is consecutive items of one worker's share (with
``num_workers`` W and batch B, batch 0 holds positions 0, W, 2W... of the order): every item
comes once, but the epoch's order holds only from one batch to the next, not within the epoch.

Distributed training: ``rank``/``world_size`` come from ``torch.distributed`` when it is
initialised (else 0 and 1, or give them); the processes split the order first, then their
workers. Every worker of every rank then yields the same number of items (``equal_shards``:
``"pad"`` by default with several ranks, repeating the order's first items like
``DistributedSampler``; or ``"drop"``), so every rank gets the same number of batches.

``set_epoch`` reaches the workers through shared memory, so persistent workers
(``persistent_workers=True``) get each epoch's order too.

Mid-epoch resume: :meth:`PrefetchDataset.state_dict` / :meth:`~PrefetchDataset.load_state_dict`,
which torchdata's ``StatefulDataLoader`` calls in each worker: ``loader.state_dict()`` after
some batches, and a new loader with the same ``num_workers`` and ``load_state_dict(state)``
yields the rest of that epoch, nothing already yielded (files fetched ahead are on disk and
recorded: they are not downloaded again). With another number of workers or ranks, merge the
worker states of every rank's loader and load the result into the dataset of each rank (its
loader without ``load_state_dict``)::

    states = [s for loader_state in every_ranks_state for s in worker_states(loader_state)]
    dataset.load_state_dict(merge_states(states))

A state loaded into the dataset applies to the iterations of its epoch until ``set_epoch``
moves to another one.

With ``max_bytes`` every worker (of every rank on the machine) keeps to one budget, shared
through DEST's manifest (:mod:`engine.prefetch.budget`): no worker evicts a file another one is
about to hand out. A worker hands items to the loader ahead of the training loop (the loader
asks ``prefetch_factor`` batches ahead), so without a ``transform`` (which reads the file in the
worker) the paths it yields must stay on disk until the loop is past them: build the loader with
:meth:`PrefetchDataset.loader`, which sets ``hold`` to cover the batches in flight
(``(prefetch_factor + 2) x batch_size`` items), or set ``hold`` yourself.

This module imports torch; the rest of :mod:`engine.prefetch` never does.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.sharedctypes
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from engine.prefetch.items import PrefetchItem
from engine.prefetch.options import PrefetchOptions, options_with
from engine.prefetch.prefetcher import EpochIterator, Prefetcher
from engine.prefetch.resume import ResumeState
from engine.prefetch.split import Shard, shard_for
from engine.settings import Settings

__all__ = [
    "PrefetchDataset",
    "SharedEpoch",
    "distributed_rank",
    "loader_hold",
    "worker_shard",
    "worker_states",
]

T = TypeVar("T")
L = TypeVar("L", bound=DataLoader[Any])


def loader_hold(batch_size: int | None, num_workers: int, prefetch_factor: int | None) -> int:
    """How many items a worker must keep on disk after yielding them: the loader's batches in
    flight (``prefetch_factor`` per worker, torch's default 2), the batch the training loop is
    on, and the one before it (a loop may still read it). Without workers, the loop has the
    item as soon as it is yielded: one."""
    if num_workers <= 0:
        return 1
    batch = batch_size if batch_size is not None else 1
    return ((prefetch_factor if prefetch_factor is not None else 2) + 2) * batch


def worker_shard(rank: int = 0, world_size: int = 1) -> Shard:
    """This DataLoader worker's shard (the whole order outside a worker)."""
    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return shard_for(worker, workers, rank, world_size)


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) of this process in ``torch.distributed`` if it is initialised,
    else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def worker_states(loader_state: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The dataset states of each worker in a ``StatefulDataLoader.state_dict()`` (for
    :func:`~engine.prefetch.merge_states`, with those of the other ranks)."""
    if "_snapshot" in loader_state:  # worker processes
        workers = loader_state["_snapshot"]["_worker_snapshots"].values()
        states = [worker.get("dataset_state") for worker in workers]
    else:  # num_workers=0
        states = [loader_state.get("dataset_state")]
    if any(not isinstance(state, dict) for state in states):
        raise ValueError("not the state of a StatefulDataLoader over a PrefetchDataset")
    return states


class SharedEpoch:
    """An epoch number in shared memory: set in the main process, read by DataLoader workers at
    each iteration (persistent workers keep the copy of the dataset they started with)."""

    def __init__(self, value: int = 0) -> None:
        self._shared: Any = multiprocessing.sharedctypes.RawValue("q", value)

    @property
    def value(self) -> int:
        return int(self._shared.value)

    @value.setter
    def value(self, value: int) -> None:
        self._shared.value = value

    def __getstate__(self) -> dict[str, Any]:
        # Shared memory crosses only to a process being started (a spawned worker); any other
        # pickle (a checkpoint of the dataset, a copy) takes the number.
        if multiprocessing.context.get_spawning_popen() is not None:
            return {"shared": self._shared}
        return {"value": self.value}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "shared" in state:
            self._shared = state["shared"]
        else:
            self._shared = multiprocessing.sharedctypes.RawValue("q", state["value"])


class PrefetchDataset(IterableDataset[T], Generic[T]):
    """Every asset of the version (or of ``asset_ids``), once per epoch, split between workers.

    ``prefetch`` keywords go to :class:`~engine.prefetch.Prefetcher` (``window``, ``shuffle``,
    ``seed``, ``max_bytes``, ``on_failure``, ``equal_shards``...). The dataset pickles (spawned
    workers get a copy): settings, options and ids only; each worker opens its own session when
    it iterates.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transform: Callable[[PrefetchItem], T] | None = None,
        asset_ids: Iterable[str] | None = None,
        options: PrefetchOptions | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        clock: Callable[[], float] = time.time,
        **prefetch: Any,
    ) -> None:
        super().__init__()
        if rank is None or world_size is None:
            found_rank, found_world = distributed_rank()
            rank = found_rank if rank is None else rank
            world_size = found_world if world_size is None else world_size
        shard_for(0, 1, rank, world_size)  # checks rank and world_size now, not in a worker
        given = options.equal_shards if options is not None else None
        if world_size > 1 and "equal_shards" not in prefetch and given is None:
            prefetch["equal_shards"] = "pad"  # a rank with a batch more hangs the others
        options_with(options, dict(prefetch))  # a bad setting fails here, not in every worker
        self.settings = settings
        self.transform = transform
        self.asset_ids = list(asset_ids) if asset_ids is not None else None
        self.options = options
        self.rank = rank
        self.world_size = world_size
        self.clock = clock
        self.prefetch = prefetch
        self._epoch = SharedEpoch(0)
        self._pending: dict[str, Any] | None = None  # a loaded state, for the next iteration
        self._current: Prefetcher | None = None  # this copy's last iteration
        self.hold_for_loader: int | None = None  # set by loader()

    @property
    def epoch(self) -> int:
        return self._epoch.value

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration gives (its shuffled order); call it before each one,
        as with ``DistributedSampler``. Workers read it when they start an iteration."""
        if epoch < 0:
            raise ValueError("epochs are numbered from 0")
        self._epoch.value = epoch
        if self._pending is not None and self._pending.get("epoch") != epoch:
            self._pending = None  # a state of another epoch: that one is over

    def loader(self, loader_class: type[L] = DataLoader, **kwargs: Any) -> L:  # type: ignore[assignment]
        """``loader_class(self, **kwargs)`` (a ``DataLoader``, or torchdata's
        ``StatefulDataLoader``), with ``hold`` set so that, under a disk budget, no file the
        loader has handed out or may still hand out is evicted before the loop is past it
        (:func:`loader_hold`). A ``transform`` reads the files in the workers: then the items
        need no more than the ``hold`` given."""
        if self.transform is None:
            self.hold_for_loader = loader_hold(
                kwargs.get("batch_size", 1),
                kwargs.get("num_workers", 0),
                kwargs.get("prefetch_factor"),
            )
        return loader_class(self, **kwargs)

    def prefetcher(self, shard: Shard) -> Prefetcher:
        prefetch = dict(self.prefetch)
        if self.hold_for_loader is not None:
            given = prefetch.get("hold", self.options.hold if self.options is not None else 1)
            prefetch["hold"] = max(given, self.hold_for_loader)
        elif self._unprotected_paths():
            warnings.warn(
                "max_bytes with DataLoader workers and no transform: the items' files may be "
                "evicted before the training loop reads them; build the loader with "
                "dataset.loader(...) or give hold=(prefetch_factor + 2) * batch_size",
                stacklevel=2,
            )
        return Prefetcher(
            self.settings,
            asset_ids=self.asset_ids,
            options=self.options,
            shard=shard,
            clock=self.clock,
            **prefetch,
        )

    def _unprotected_paths(self) -> bool:
        """In a worker, under a budget, yielding paths with the default ``hold``."""
        options = self.options
        budget = self.prefetch.get("max_bytes", options.max_bytes if options else None)
        hold = self.prefetch.get("hold", options.hold if options else 1)
        in_worker = get_worker_info() is not None
        return in_worker and budget is not None and self.transform is None and hold <= 1

    # -- mid-epoch resume (torchdata's Stateful protocol) ------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Where this copy's iteration stands (in a worker: that worker's share), after the
        items it yielded; before any iteration, where the next one starts."""
        if self._current is not None:
            return self._current.state_dict()
        prefetcher = self.prefetcher(worker_shard(self.rank, self.world_size))
        if self._pending is not None:
            prefetcher.load_state_dict(self._pending)
        else:
            prefetcher.epoch(self.epoch)
        return prefetcher.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The next iteration resumes where ``state`` stands: one worker's state (what
        ``StatefulDataLoader`` hands each worker), or a merged one
        (:func:`~engine.prefetch.merge_states`) for any number of workers and ranks."""
        ResumeState.parse(state)  # a clear error here rather than in a worker
        self._pending = dict(state)
        self._current = None

    # -- iteration -----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[T]:
        # Set up now (the loader calls iter() before asking for a state): the state of a
        # worker that has yielded nothing yet is this iteration's start.
        prefetcher = self.prefetcher(worker_shard(self.rank, self.world_size))
        pending, self._pending = self._pending, None
        if pending is not None:
            prefetcher.load_state_dict(pending)
            epoch = prefetcher.epoch()
        else:
            epoch = prefetcher.epoch(self.epoch)
        self._current = prefetcher
        return self._items(prefetcher, epoch)

    def _items(self, prefetcher: Prefetcher, epoch: EpochIterator) -> Iterator[T]:
        # A worker that stops closes this generator as its loop returns: the session closes.
        with prefetcher:
            for item in epoch:
                yield self.transform(item) if self.transform is not None else item  # type: ignore[misc]
