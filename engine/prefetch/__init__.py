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

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# Imported on first use: the pure modules (split, window) load no I/O library, and importing
# one of them must not load the whole prefetcher through this package.
_LAZY = {
    "AssetUnavailable": "engine.prefetch.items",
    "PrefetchItem": "engine.prefetch.items",
    "PrefetchStats": "engine.prefetch.items",
    "FailurePolicy": "engine.prefetch.options",
    "Order": "engine.prefetch.options",
    "PrefetchOptions": "engine.prefetch.options",
    "load_prefetch_config": "engine.prefetch.options",
    "load_prefetch_options": "engine.prefetch.options",
    "EpochIterator": "engine.prefetch.prefetcher",
    "Prefetcher": "engine.prefetch.prefetcher",
    "Shard": "engine.prefetch.split",
    "shard_for": "engine.prefetch.split",
    # The torch extra: imported only when asked for; the core never imports torch.
    "PrefetchDataset": "engine.prefetch.torch_dataset",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine.prefetch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
