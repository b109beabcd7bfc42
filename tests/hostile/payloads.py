"""Hypothesis strategies for API payloads a broken or hostile platform could send.

Valid assets, pages and bulk annotations (as ``/work/shared/platform-api.md`` fixes them), and
the same mutated: fields deleted, replaced with values of any JSON type (integers beyond 64 bits
and beyond 4300 digits, NaN and infinities, lone surrogates, long strings, nesting deeper than
any parser allows), extra fields. Values are encoded with :func:`encode`, which splices
:class:`Raw` JSON text where a Python value cannot say it (a 100,000-deep array, a 5000-digit
number).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

__all__ = [
    "Raw",
    "annotation_lists",
    "asset_items",
    "encode",
    "hostile_values",
    "listing_pages",
    "uuid_like",
]


@dataclass(frozen=True)
class Raw:
    """JSON text spliced as it is into the encoded payload."""

    text: str


def encode(value: Any) -> bytes:
    """JSON bytes for ``value``, NaN and infinities spelt as Python's json spells them."""

    def text(v: Any) -> str:
        if isinstance(v, Raw):
            return v.text
        if isinstance(v, dict):
            return "{" + ",".join(json.dumps(str(k)) + ":" + text(x) for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ",".join(text(x) for x in v) + "]"
        return json.dumps(v)

    return text(value).encode("utf-8")


def _deep(depth: int, kind: str) -> Raw:
    if kind == "array":
        return Raw("[" * depth + "]" * depth)
    return Raw('{"a":' * depth + "1" + "}" * depth)


_specials = st.one_of(
    # Past jiter's 201 levels, orjson's 1024 and CPython's recursion limit; the explicit tests
    # go to 100,000 (slow to shrink here).
    st.builds(_deep, st.sampled_from([150, 202, 1_100, 5_000]), st.sampled_from(["array", "obj"])),
    st.sampled_from(
        [
            Raw("1" * 4301),  # one digit more than jiter (and Python's int()) accept
            Raw("9" * 400),
            Raw("1e400"),
            Raw("-1e400"),
            Raw("NaN"),
            Raw("Infinity"),
            Raw('"\\ud800"'),  # a lone surrogate
            Raw('"a\\u0000b"'),
        ]
    ),
    st.integers(1_000, 300_000).map(lambda n: "x" * n),
    st.integers(2**63 - 2, 2**63 + 2),
    st.just(10**20),
)

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(10**30), 10**30),
    st.floats(),  # NaN and infinities included
    st.text(max_size=20),
)

hostile_values = st.recursive(
    st.one_of(_scalars, _specials),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=12,
)

uuid_like = st.uuids().map(str)
# What a well-behaved platform sends in free-form fields.
_tame = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)


def _set(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        inner = target.get(key)
        if not isinstance(inner, dict):
            return
        target = inner
    target[path[-1]] = value


def _delete(target: dict[str, Any], path: tuple[str, ...]) -> None:
    for key in path[:-1]:
        inner = target.get(key)
        if not isinstance(inner, dict):
            return
        target = inner
    target.pop(path[-1], None)


_ASSET_PATHS: list[tuple[str, ...]] = [
    ("id",),
    ("data",),
    ("data", "id"),
    ("data", "object_name"),
    ("data", "filename"),
    ("data", "type"),
    ("data", "content_type"),
    ("data", "upload_status"),
    ("data", "presigned_url"),
    ("data", "metadata"),
    ("data", "custom_metadata"),
    ("data", "meta"),
    ("data", "meta", "width"),
    ("data", "meta", "height"),
    ("data", "unknown_extra"),
    ("extra",),
]

_NUMBERS = st.sampled_from([10**20, -1, 2**31, 2**31 - 1, 2**63, -(2**63) - 1, 1e400, 0.5])
_ID_SPECIALS = st.sampled_from(["..", ".", "", "a/b", "../x", "x" * 129, "a b", "%2e%2e", "\n"])


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any], paths: list[tuple[str, ...]]) -> Any:
    """``base`` with zero to three fields deleted or replaced (or the whole item replaced)."""
    if draw(st.integers(0, 20)) == 0:
        return draw(hostile_values)
    id_paths = [path for path in paths if path[-1] in ("id", "asset_id")] or paths
    # Mostly one small change: an item broken in three ways hides the other two.
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2]))):
        action = draw(st.sampled_from(["delete", "replace", "id", "id", "number", "number"]))
        path = draw(st.sampled_from(id_paths if action == "id" else paths))
        if action == "delete":
            _delete(base, path)
        elif action == "id":
            _set(base, path, draw(_ID_SPECIALS))
        elif action == "number":
            _set(base, path, draw(_NUMBERS))
        else:
            _set(base, path, draw(hostile_values))
    return base


@st.composite
def asset_items(draw: st.DrawFn, *, mutate: bool = True) -> Any:
    filename = draw(st.text(max_size=30))
    base: dict[str, Any] = {
        "id": draw(uuid_like),
        "data": {
            "id": draw(uuid_like),
            "object_name": draw(st.text(max_size=40)),
            "filename": filename,
            "type": "IMAGE",
            "content_type": draw(st.sampled_from(["image/jpeg", "image/png", None, "x/../y"])),
            "upload_status": draw(st.sampled_from(["DONE", "DONE", "PENDING", None, "X"])),
            "presigned_url": draw(
                st.one_of(
                    st.none(),
                    st.just(
                        "https://storage.example/b/o?X-Amz-Date=20261126T120000Z"
                        "&X-Amz-Expires=3600&X-Amz-Signature=abc"
                    ),
                    st.text(max_size=40),
                )
            ),
            "metadata": draw(
                st.dictionaries(
                    st.text(max_size=5),
                    hostile_values if mutate and draw(st.booleans()) else _tame,
                    max_size=3,
                )
            ),
            "custom_metadata": {},
            "meta": {
                "width": draw(st.integers(0, 10_000)),
                "height": draw(st.integers(0, 10_000)),
            },
        },
    }
    if not mutate:
        return base
    return draw(mutated(base, _ASSET_PATHS))


@st.composite
def listing_pages(draw: st.DrawFn, *, mutate: bool = True) -> Any:
    items = draw(st.lists(asset_items(mutate=mutate), max_size=6))
    if mutate and items and draw(st.booleans()):
        items.append(items[0])  # a repeat within the page
    page: dict[str, Any] = {
        "items": items,
        "count": draw(st.integers(0, 100)),
        "next_cursor": draw(st.one_of(st.none(), st.text(max_size=10))),
    }
    if not mutate:
        return page
    return draw(mutated(page, [("items",), ("count",), ("next_cursor",), ("extra",)]))


_SHAPE_LISTS = {
    "rectangles": lambda d: {"x": 1, "y": 2, "w": 3, "h": 4, "label": "cat", "text": None},
    "polygons": lambda d: {"polygon": [[1, 2], [3, 4], [5, 6]], "label": "cat"},
    "classifications": lambda d: {"label": "cat", "text": None, "attributes": {}},
    "lines": lambda d: {"line": [[1, 2], [3, 4]], "label": "road"},
    "points": lambda d: {"point": [1, 2], "label": "eye"},
}
_ANNOTATION_PATHS = [
    ("id",),
    ("asset_id",),
    ("status",),
    ("attributes",),
    ("rectangles",),
    ("polygons",),
    ("classifications",),
    ("lines",),
    ("points",),
    ("extra",),
]


@st.composite
def annotations(draw: st.DrawFn, asset_ids: list[str], *, mutate: bool = True) -> Any:
    owner = draw(st.sampled_from(asset_ids)) if asset_ids else draw(uuid_like)
    base: dict[str, Any] = {
        "id": draw(uuid_like),
        "asset_id": owner,
        "status": draw(st.sampled_from(["ACCEPTED", "PENDING", None])),
        "attributes": {},
    }
    for key, make in _SHAPE_LISTS.items():
        shapes = []
        for _ in range(draw(st.integers(0, 2))):
            shape = make(None)
            if mutate and draw(st.booleans()):
                shape[draw(st.sampled_from([*sorted(shape), "attributes", "extra"]))] = draw(
                    hostile_values
                )
            shapes.append(shape)
        base[key] = shapes
    if not mutate:
        return base
    return draw(mutated(base, _ANNOTATION_PATHS))


@st.composite
def annotation_lists(draw: st.DrawFn, asset_ids: list[str], *, mutate: bool = True) -> Any:
    listed = draw(st.lists(annotations(asset_ids, mutate=mutate), max_size=6))
    if mutate and draw(st.integers(0, 15)) == 0:
        return draw(hostile_values)
    return listed
