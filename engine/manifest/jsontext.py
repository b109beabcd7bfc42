"""JSON text the manifest stores: compact, strict (no NaN), in the key order it was given."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["dump_json", "dump_sorted_json"]

_STORED = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str, allow_nan=False)
_SORTED = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, default=str, allow_nan=False, sort_keys=True
)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def dump_json(value: Any) -> str:
    """Compact JSON keeping the given key order (the API's), for storage.

    NaN and infinities (which Python's json reads and writes, but JSON has not) become null:
    stored text is spliced verbatim into exports, so it must be valid JSON.
    """
    try:
        return _STORED.encode(value)
    except ValueError:
        return _STORED.encode(_finite(value))


def dump_sorted_json(value: Any) -> str:
    """As :func:`dump_json`, with sorted keys (derived values such as a shape's geometry)."""
    try:
        return _SORTED.encode(value)
    except ValueError:
        return _SORTED.encode(_finite(value))
