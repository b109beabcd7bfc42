"""The platform API: client, models, ``q`` builders. Nothing else knows its paths or JSON."""

from __future__ import annotations

from engine.platform import models, query
from engine.platform.client import PlatformClient

__all__ = ["PlatformClient", "models", "query"]
