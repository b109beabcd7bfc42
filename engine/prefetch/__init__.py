"""Prefetch for data loaders: a version's files on local disk just before the loader asks.

::

    from engine.prefetch import Prefetcher

    with Prefetcher(settings, window=64, shuffle=True, seed=0) as prefetcher:
        for epoch in range(10):
            for item in prefetcher:             # item.path is complete and verified
                ...

Modules: :mod:`~engine.prefetch.prefetcher` (the public class), :mod:`~engine.prefetch.epoch`
(one epoch: planner, fetchers, consumer), :mod:`~engine.prefetch.window` (pure: look-ahead,
priority, disk budget), :mod:`~engine.prefetch.split` (pure: shuffle and worker split),
:mod:`~engine.prefetch.order` (the epoch order on disk), :mod:`~engine.prefetch.source`,
:mod:`~engine.prefetch.session` (what the epochs share, over one run of
:mod:`engine.pipeline`), :mod:`~engine.prefetch.budget` (evictions),
:mod:`~engine.prefetch.locking` (one download of an object at a time across processes),
:mod:`~engine.prefetch.sync` (the plain iterator), :mod:`~engine.prefetch.options`, and
:mod:`~engine.prefetch.torch_dataset` (the ``torch`` extra; imported only when
``PrefetchDataset`` is asked for: the core never imports torch). Opening a run, URL freshness
and what is recorded when are the pipeline's (:mod:`engine.pipeline`), as for the mirror.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.prefetch.items import AssetUnavailable, PrefetchItem, PrefetchStats
from engine.prefetch.options import (
    FailurePolicy,
    Order,
    PrefetchOptions,
    load_prefetch_config,
    load_prefetch_options,
)
from engine.prefetch.prefetcher import EpochIterator, Prefetcher
from engine.prefetch.split import Shard, shard_for

if TYPE_CHECKING:
    from engine.prefetch.torch_dataset import PrefetchDataset

__all__ = [
    "AssetUnavailable",
    "EpochIterator",
    "FailurePolicy",
    "Order",
    "PrefetchDataset",
    "PrefetchItem",
    "PrefetchOptions",
    "PrefetchStats",
    "Prefetcher",
    "Shard",
    "load_prefetch_config",
    "load_prefetch_options",
    "shard_for",
]


def __getattr__(name: str) -> Any:
    if name == "PrefetchDataset":
        from engine.prefetch.torch_dataset import PrefetchDataset

        return PrefetchDataset
    raise AttributeError(f"module 'engine.prefetch' has no attribute {name!r}")
