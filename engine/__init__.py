"""assetsync: mirror Picsellia-style dataset versions to local disk, fast and verified.

import anyio
from engine import load_settings, mirror

summary = anyio.run(mirror, load_settings({"dataset_version": "...", "dest": "data"}))
"""

from __future__ import annotations

from engine.errors import EngineError
from engine.mirror import mirror
from engine.settings import Settings, load_settings
from engine.summary import Failure, MirrorSummary

__all__ = ["EngineError", "Failure", "MirrorSummary", "Settings", "load_settings", "mirror"]
__version__ = "0.1.0"
