"""assetsync: mirror Picsellia-style dataset versions to local disk, fast and verified.

    import anyio
    from engine import load_settings, mirror

    summary = anyio.run(mirror, load_settings({"dataset_version": "...", "dest": "data"}))

Names are imported on first use, so ``import engine.cli`` (every command) does not pay for the
HTTP stack until a command needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from engine._version import __version__

if TYPE_CHECKING:
    from engine.errors import EngineError
    from engine.mirroring import mirror
    from engine.pipeline.summary import Failure, MirrorSummary
    from engine.prefetch import Prefetcher, PrefetchItem
    from engine.settings import Settings, load_settings

__all__ = [
    "EngineError",
    "Failure",
    "MirrorSummary",
    "PrefetchItem",
    "Prefetcher",
    "Settings",
    "__version__",
    "load_settings",
    "mirror",
]

_LAZY = {
    "EngineError": "engine.errors",
    "Failure": "engine.pipeline.summary",
    "MirrorSummary": "engine.pipeline.summary",
    "Settings": "engine.settings",
    "load_settings": "engine.settings",
    "mirror": "engine.mirroring",
    "Prefetcher": "engine.prefetch",
    "PrefetchItem": "engine.prefetch",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
