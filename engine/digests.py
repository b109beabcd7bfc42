"""Pure keys and digests shared by the planner, the layout and the store.

The planner compares digests of what the API says now with the digests the manifest stored, so
"did tags or annotations change?" costs one string comparison per asset instead of loading the
stored tags and annotations. Both sides must compute them with these functions.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

__all__ = ["annotations_digest", "canonical_json", "path_key", "tags_digest"]


# One encoder for every call: json.dumps with options builds a new encoder each time.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> str:
    """One spelling per JSON value: sorted keys, no spaces, non-ASCII kept as is."""
    return _CANONICAL.encode(value)


def tags_digest(tags: Iterable[str], data_tags: Iterable[str]) -> str:
    """Digest of an asset's tag names and data tag names.

    Tags are sets: order and duplicates do not change the digest. The two kinds stay apart
    (moving a name from the asset tags to the data tags is a change), and the JSON encoding keeps
    names containing separators from colliding.
    """
    value = [sorted(set(tags)), sorted(set(data_tags))]
    try:
        # orjson spells a list of strings exactly as canonical_json does (a property test
        # holds it to that), at a fifth of the cost: one call per asset on every run.
        payload = orjson.dumps(value)
    except orjson.JSONEncodeError:  # a lone surrogate, which only the stdlib encodes
        payload = canonical_json(value).encode("utf-8", "surrogatepass")
    return hashlib.sha256(payload).hexdigest()


def annotations_digest(annotations: Iterable[Mapping[str, Any]]) -> str:
    """Digest of an asset's annotations (BulkAnnotation dicts as the API gave them).

    Independent of the order of the annotations: the scheduler assembles them from bulk answers
    fetched in chunks, and a different chunking must not look like a change. Everything inside
    an annotation (the order of its shapes included) is content, and counts.
    """
    # Canonical JSON never holds a raw newline (JSON escapes control characters in strings),
    # so newline-joined parts cannot be confused with other parts.
    parts = sorted(_canonical_bytes(annotation) for annotation in annotations)
    return hashlib.sha256(b"\n".join(parts)).hexdigest()


def _canonical_bytes(value: Mapping[str, Any]) -> bytes:
    # orjson: five times the stdlib encoder's speed (11 -> 2 us per annotation), which is a
    # fifth of a no-change rerun's CPU. What it cannot encode (an integer beyond 64 bits) takes
    # the stdlib's spelling: the same value always takes the same path, so digests stay stable.
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return _CANONICAL.encode(value).encode("utf-8")


def path_key(path: str) -> str:
    """The key two paths share when a case-insensitive file system would confuse them.

    Unicode canonical caseless matching (NFD, case fold, NFD): ``Cat.JPG`` and ``cat.jpg``, or a
    precomposed and a decomposed ``é``, are one file on macOS and Windows, so they get one key and
    the manifest's UNIQUE index refuses to give them to two assets.
    """
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", path).casefold())
