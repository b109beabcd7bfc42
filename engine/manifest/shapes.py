"""Flatten a BulkAnnotation into one row per shape, so SQL can query shapes by label and kind.

The annotation itself is stored verbatim; these rows are an index over it. API data is never
trusted to be well formed: a malformed shape becomes a row with what could be read (or no row),
never an exception that would lose a whole batch.

(Deriving the rows inside SQLite with ``json_each`` was measured too: no cheaper in CPU on
SQLite 3.40, and it would make the JSON1 functions a requirement.)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from engine.manifest.jsontext import dump_sorted_json

__all__ = ["SHAPE_KINDS", "Shape", "shapes_of"]

# BulkAnnotation list key -> (kind, the key holding the geometry; None: the box, or none).
_LISTS: tuple[tuple[str, str, str | None], ...] = (
    ("rectangles", "rectangle", None),
    ("polygons", "polygon", "polygon"),
    ("classifications", "classification", None),
    ("lines", "line", "line"),
    ("points", "point", "point"),
)
SHAPE_KINDS = tuple(kind for _, kind, _ in _LISTS)
_BOX = ("x", "y", "w", "h")


class Shape(NamedTuple):
    kind: str
    idx: int  # position in the annotation's list of this kind
    label: str | None
    text: str | None
    geometry: str | None  # JSON: {"h","w","x","y"}, [[x, y], ...], [x, y]; None: classification


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, Mapping):  # tolerate {"name": ...} label objects
        value = value.get("name")
        return None if value is None else str(value)
    return str(value)


def shapes_of(annotation: Mapping[str, Any]) -> Iterator[Shape]:
    """The shapes of one annotation, kind by kind, each list in the API's order."""
    for list_key, kind, geometry_key in _LISTS:
        items = annotation.get(list_key)
        if not isinstance(items, list):
            continue
        for idx, item in enumerate(items):
            if not isinstance(item, Mapping):
                continue
            if kind == "rectangle":
                geometry: str | None = dump_sorted_json({k: item.get(k) for k in _BOX})
            elif geometry_key is not None:
                value = item.get(geometry_key)
                geometry = None if value is None else dump_sorted_json(value)
            else:
                geometry = None
            yield Shape(kind, idx, _text(item.get("label")), _text(item.get("text")), geometry)
