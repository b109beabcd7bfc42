"""Builders and Hypothesis strategies shared by the manifest tests."""

from __future__ import annotations

import hashlib
from typing import Any

from hypothesis import strategies as st

from engine.manifest import AssetUpdate, FileInfo

__all__ = ["annotation", "annotations_st", "update", "updates_st"]


def annotation(
    asset_id: str, index: int, label: str = "cat", status: str = "ACCEPTED"
) -> dict[str, Any]:
    """A BulkAnnotation with one shape of every kind, in the contract's key order."""
    return {
        "id": f"{asset_id}-ann-{index}",
        "asset_id": asset_id,
        "status": status,
        "attributes": {},
        "rectangles": [
            {"x": index, "y": 2, "w": 3, "h": 4, "label": label, "text": None, "attributes": {}}
        ],
        "polygons": [
            {
                "polygon": [[1, 2], [3, 4], [5, index]],
                "label": label,
                "text": None,
                "attributes": {},
            }
        ],
        "classifications": [{"label": label, "text": "note", "attributes": {}}],
        "lines": [{"line": [[1, 2], [3, 4]], "label": "road", "text": None, "attributes": {}}],
        "points": [{"point": [1, 2], "label": "eye", "text": None, "attributes": {}}],
    }


def update(
    asset_id: str,
    *,
    gen: int = 0,
    path: str | None = None,
    with_file: bool = True,
    tags: tuple[str, ...] | None = None,
    data_tags: tuple[str, ...] | None = None,
    annotations: list[dict[str, Any]] | str | None = "default",
    **changes: Any,
) -> AssetUpdate:
    """An update for ``asset_id``; ``gen`` varies everything that may change between runs."""
    file = None
    if with_file:
        digest = hashlib.sha256(f"{asset_id}/{gen}".encode()).hexdigest()
        file = FileInfo(
            path or f"images/{asset_id}.jpg", 1000 + gen, digest, f'"{gen}"', 1.0e9 + gen
        )
    if annotations == "default":
        annotations = [annotation(asset_id, i) for i in range(gen % 3 + 1)]
    assert not isinstance(annotations, str)
    return AssetUpdate(
        asset_id=asset_id,
        data_id=changes.pop("data_id", f"data-{asset_id}-{gen}"),
        object_name=changes.pop("object_name", f"obj/{asset_id}-{gen}.jpg"),
        filename=changes.pop("filename", f"{asset_id}.jpg"),
        content_type=changes.pop("content_type", "image/jpeg"),
        width=changes.pop("width", 640),
        height=changes.pop("height", 480),
        metadata=changes.pop("metadata", {"gen": gen, "camera": "é"}),
        tags=("train", f"g{gen}") if tags is None else tags,
        data_tags=("raw",) if data_tags is None else data_tags,
        annotations=annotations,
        file=file,
        **changes,
    )


_names = st.text(min_size=1, max_size=12)
_leaf = _names.filter(lambda s: "/" not in s and s not in (".", ".."))
_json_scalar = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8)
_json = st.recursive(
    _json_scalar,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_point = st.lists(st.integers(-5000, 5000), min_size=2, max_size=2)
_shape_common: dict[str, st.SearchStrategy[Any]] = {
    "label": _names | st.none(),
    "text": st.text(max_size=6) | st.none(),
    "attributes": st.just({}),
}


def annotations_st(asset_id: str) -> st.SearchStrategy[list[dict[str, Any]]]:
    one = st.fixed_dictionaries(
        {
            "id": st.uuids().map(str),
            "asset_id": st.just(asset_id),
            "status": st.sampled_from(["PENDING", "ACCEPTED", "REFUSED", "SKIPPED"]),
            "attributes": st.dictionaries(st.text(max_size=5), _json, max_size=2),
            "rectangles": st.lists(
                st.fixed_dictionaries(
                    {
                        "x": st.integers(0, 99),
                        "y": st.integers(0, 99),
                        "w": st.integers(1, 99),
                        "h": st.integers(1, 99),
                        **_shape_common,
                    }
                ),
                max_size=3,
            ),
            "polygons": st.lists(
                st.fixed_dictionaries(
                    {"polygon": st.lists(_point, min_size=3, max_size=6), **_shape_common}
                ),
                max_size=2,
            ),
            "classifications": st.lists(st.fixed_dictionaries(dict(_shape_common)), max_size=2),
            "lines": st.lists(
                st.fixed_dictionaries(
                    {"line": st.lists(_point, min_size=2, max_size=4), **_shape_common}
                ),
                max_size=2,
            ),
            "points": st.lists(
                st.fixed_dictionaries({"point": _point, **_shape_common}), max_size=2
            ),
        }
    )
    return st.lists(one, max_size=4)


@st.composite
def updates_st(draw: st.DrawFn, max_size: int = 12) -> list[AssetUpdate]:
    """Distinct assets with distinct paths and arbitrary tags, metadata and annotations."""
    ids = draw(st.lists(st.uuids().map(str), min_size=1, max_size=max_size, unique=True))
    result = []
    for index, asset_id in enumerate(ids):
        with_file = draw(st.booleans())
        result.append(
            AssetUpdate(
                asset_id=asset_id,
                data_id=draw(st.uuids()).hex,
                object_name=draw(st.text(min_size=1, max_size=20)),
                filename=draw(st.text(max_size=20)),
                content_type=draw(st.sampled_from([None, "image/png", "image/jpeg"])),
                width=draw(st.none() | st.integers(1, 10000)),
                height=draw(st.none() | st.integers(1, 10000)),
                metadata=draw(st.dictionaries(st.text(max_size=6), _json, max_size=3)),
                tags=draw(st.lists(_names, max_size=4)),
                data_tags=draw(st.lists(_names, max_size=4)),
                annotations=draw(st.none() | annotations_st(asset_id)),
                file=FileInfo(
                    f"d/{index}-{draw(_leaf)}",
                    draw(st.integers(0, 2**40)),
                    "0" * 64,
                )
                if with_file
                else None,
                state=draw(st.sampled_from(["ok", "failed", "corrupt"])),
                error=draw(st.none() | st.text(max_size=10)),
            )
        )
    return result
