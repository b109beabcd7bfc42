"""Builders for the platform's ``q`` filter language.

The syntax is the SDK's (``picsellia.utils.convert_tag_list_to_query_language``)::

    tags.name in ("train","val")
    data.tags.name = "cat"
    <clause> and <clause>

The SDK pastes a tag name between double quotes as it is, so a name containing ``"`` ends the
string early and breaks (or changes) the query. We quote every name as a JSON string literal
instead: ``"`` becomes ``\\"``, ``\\`` becomes ``\\\\`` and control characters are escaped. For
every ordinary name this is byte-for-byte what the SDK sends; for the odd ones it is the
convention a query language with double-quoted strings most plausibly follows, and the one the
project's emulator implements.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

__all__ = [
    "DATA_TAGS",
    "TAGS",
    "and_",
    "quote",
    "tag_equals",
    "tag_filter",
    "tags_filter",
    "tags_in",
]

TAGS = "tags.name"
DATA_TAGS = "data.tags.name"


def quote(value: str) -> str:
    """A double-quoted string literal for ``q`` (JSON escaping, non-ASCII kept as is)."""
    return json.dumps(value, ensure_ascii=False)


def _field(data: bool) -> str:
    return DATA_TAGS if data else TAGS


def _unique(names: Iterable[str]) -> list[str]:
    # Order kept (deterministic queries), duplicates dropped (they add nothing to an "in").
    return list(dict.fromkeys(names))


def tags_in(names: Iterable[str], *, data: bool = False) -> str | None:
    """``tags.name in ("a","b")``: assets carrying any of ``names``; ``None`` for no names."""
    unique = _unique(names)
    if not unique:
        return None
    return f"{_field(data)} in ({','.join(quote(n) for n in unique)})"


def tag_equals(name: str, *, data: bool = False) -> str:
    """``tags.name = "a"``: assets carrying this one tag."""
    return f"{_field(data)} = {quote(name)}"


def tag_filter(field: str, name: str) -> str:
    """``<field> = "name"`` for ``field`` :data:`TAGS` or :data:`DATA_TAGS`."""
    if field not in (TAGS, DATA_TAGS):
        raise ValueError(f"not a tag field: {field!r}")
    return f"{field} = {quote(name)}"


def and_(*clauses: str | None) -> str | None:
    """Join the clauses that are not ``None`` with ``and``; ``None`` if none is left."""
    kept = [c for c in clauses if c]
    return " and ".join(kept) if kept else None


def tags_filter(tags: Iterable[str] = (), data_tags: Iterable[str] = ()) -> str | None:
    """The ``q`` for the command line's ``--tag`` / ``--data-tag`` options.

    Several ``--tag`` mean "any of these asset tags", several ``--data-tag`` "any of these data
    tags", and both together must hold (the SDK's ``list_assets(tags=..., data_tags=...)``).
    ``None`` when there is nothing to filter on.
    """
    return and_(tags_in(tags), tags_in(data_tags, data=True))
