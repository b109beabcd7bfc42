"""Generated annotations: 0-3 per asset, every shape kind, deterministic per (seed, asset, gen).

Annotation ids encode ``(asset index, generation, position)`` so the bulk endpoint can find an
annotation from its id alone; :func:`annotation_number` and :func:`split_annotation_number` are
the two halves of that encoding. Position 0 is the newest annotation.
"""

from __future__ import annotations

import random
from typing import Any

__all__ = [
    "LABELS",
    "STATUSES",
    "annotation_number",
    "generate_annotations",
    "split_annotation_number",
]

LABELS: tuple[str, ...] = ("cat", "dog", "car", "person", "road", "eye")
STATUSES: tuple[str, ...] = ("ACCEPTED", "PENDING", "REFUSED", "SKIPPED")
_GEN_BITS = 22
_POS_BITS = 2


def annotation_number(index: int, gen: int, position: int) -> int:
    return (index << (_GEN_BITS + _POS_BITS)) | (gen << _POS_BITS) | position


def split_annotation_number(number: int) -> tuple[int, int, int]:
    position = number & ((1 << _POS_BITS) - 1)
    gen = (number >> _POS_BITS) & ((1 << _GEN_BITS) - 1)
    return number >> (_GEN_BITS + _POS_BITS), gen, position


def annotation_count(draw: int) -> int:
    """0..3 annotations, from one byte of the asset's digest."""
    return draw % 4


def generate_annotations(
    *,
    seed: int,
    index: int,
    gen: int,
    count: int,
    width: int,
    height: int,
    ids: list[str],
    asset_id: str,
) -> list[dict[str, Any]]:
    """BulkAnnotation dicts for one asset, newest first (``ids[k]`` is annotation k's id)."""
    rng = random.Random(f"ann:{seed}:{index}:{gen}")
    out: list[dict[str, Any]] = []
    for position in range(count):
        # Position 0 carries every shape kind so any asset with an annotation exercises all of them.
        full = position == 0
        out.append(
            {
                "id": ids[position],
                "asset_id": asset_id,
                "status": STATUSES[rng.randrange(len(STATUSES))],
                "duration": round(rng.uniform(0.0, 120.0), 3),
                "attributes": {},
                "rectangles": _rectangles(rng, width, height, 1 + rng.randrange(2)),
                "polygons": _polygons(rng, width, height, 1 if full else rng.randrange(2)),
                "classifications": _classifications(rng, 1 if full else rng.randrange(2)),
                "lines": _lines(rng, width, height, 1 if full else rng.randrange(2)),
                "points": _points(rng, width, height, 1 if full else rng.randrange(3)),
            }
        )
    return out


def _label(rng: random.Random) -> str:
    return LABELS[rng.randrange(len(LABELS))]


def _xy(rng: random.Random, width: int, height: int) -> list[int]:
    return [rng.randrange(max(width, 1)), rng.randrange(max(height, 1))]


def _shape(rng: random.Random, extra: dict[str, Any]) -> dict[str, Any]:
    return {**extra, "label": _label(rng), "text": None, "attributes": {}}


def _rectangles(rng: random.Random, width: int, height: int, n: int) -> list[dict[str, Any]]:
    shapes = []
    for _ in range(n):
        x, y = _xy(rng, width, height)
        w = 1 + rng.randrange(max(width - x, 1))
        h = 1 + rng.randrange(max(height - y, 1))
        shapes.append(_shape(rng, {"x": x, "y": y, "w": w, "h": h}))
    return shapes


def _polygons(rng: random.Random, width: int, height: int, n: int) -> list[dict[str, Any]]:
    return [
        _shape(rng, {"polygon": [_xy(rng, width, height) for _ in range(3 + rng.randrange(4))]})
        for _ in range(n)
    ]


def _classifications(rng: random.Random, n: int) -> list[dict[str, Any]]:
    return [_shape(rng, {}) for _ in range(n)]


def _lines(rng: random.Random, width: int, height: int, n: int) -> list[dict[str, Any]]:
    return [
        _shape(rng, {"line": [_xy(rng, width, height) for _ in range(2 + rng.randrange(3))]})
        for _ in range(n)
    ]


def _points(rng: random.Random, width: int, height: int, n: int) -> list[dict[str, Any]]:
    return [_shape(rng, {"point": _xy(rng, width, height)}) for _ in range(n)]
