"""assetsync: mirror Picsellia-style dataset versions to local disk, fast and verified."""

from __future__ import annotations

from engine.errors import EngineError
from engine.settings import Settings, load_settings

__all__ = ["EngineError", "Settings", "load_settings"]
__version__ = "0.1.0"
