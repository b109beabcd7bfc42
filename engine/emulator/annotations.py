"""Generated annotations: 0-3 per asset, every shape kind, deterministic per (seed, asset, gen).

Annotation ids encode ``(asset index, generation, position)`` so the bulk endpoint can find an
annotation from its id alone; :func:`annotation_number` and :func:`split_annotation_number` are
the two halves of that encoding. Position 0 is the newest annotation.

The draws are those of ``random.Random(f"ann:{seed}:{index}:{gen}")``: ``randrange(n)`` and
``uniform(a, b)`` in a fixed order. Generating is what the bulk endpoint spends its time on, so:

* the generator is seeded the way ``Random.seed`` seeds from a string (SHA-512 appended, as one
  integer) on one reused instance per thread;
* ``randrange(n)`` is computed as ``Random._randbelow`` does it (``getrandbits`` of
  ``n.bit_length()`` bits until below ``n``): the same numbers, a third of the calls;
* each annotation is written straight as the JSON text the API sends
  (:func:`generate_annotation_texts`, exactly ``dumps`` of the BulkAnnotation dict, key order
  included); :func:`generate_annotations` parses those texts for the callers that want dicts.

A test compares both with the dicts that plain ``random.Random`` calls give.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections.abc import Callable
from typing import Any

__all__ = [
    "LABELS",
    "STATUSES",
    "annotation_number",
    "generate_annotation_texts",
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


_GetRandBits = Callable[[int], int]
_local = threading.local()


def _seeded(text: str) -> random.Random:
    """A generator in the state ``random.Random(text)`` starts in (reused within a thread)."""
    rng: random.Random | None = getattr(_local, "rng", None)
    if rng is None:
        rng = _local.rng = random.Random(0)
    data = text.encode()
    # Random.seed(str) (version 2): the bytes and their SHA-512 as one big-endian integer.
    super(random.Random, rng).seed(int.from_bytes(data + hashlib.sha512(data).digest(), "big"))
    return rng


def _below(getrandbits: _GetRandBits, n: int) -> int:
    """``Random.randrange(n)`` for ``n > 0``, from the same generator's ``getrandbits``."""
    k = n.bit_length()
    r = getrandbits(k)
    while r >= n:
        r = getrandbits(k)
    return r


# What json.dumps(..., ensure_ascii=False) writes for a str (quotes included).
_encode_str: Callable[[str], str] = json.encoder.encode_basestring
# The end of a shape's JSON object after its own keys, per label: label, text, attributes.
_SHAPE_ENDS = tuple(f',"label":"{label}","text":null,"attributes":{{}}}}' for label in LABELS)


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
    texts = generate_annotation_texts(
        seed=seed,
        index=index,
        gen=gen,
        count=count,
        width=width,
        height=height,
        ids=ids,
        asset_id=asset_id,
    )
    return [json.loads(text) for _, _, text in texts]


def generate_annotation_texts(
    *,
    seed: int,
    index: int,
    gen: int,
    count: int,
    width: int,
    height: int,
    ids: list[str],
    asset_id: str,
) -> list[tuple[str, str, str]]:
    """``(id, status, JSON text)`` of each annotation of one asset, newest first; the text is
    what ``dumps`` gives for the BulkAnnotation dict (compact, non-ASCII kept)."""
    rng = _seeded(f"ann:{seed}:{index}:{gen}")
    bits = rng.getrandbits
    owner = _encode_str(asset_id)
    out: list[tuple[str, str, str]] = []
    for position in range(count):
        # Position 0 carries every shape kind so any asset with an annotation exercises all of them.
        full = position == 0
        status = STATUSES[_below(bits, 4)]
        duration = round(0.0 + 120.0 * rng.random(), 3)  # rng.uniform(0.0, 120.0)
        rectangles = _rectangles(bits, width, height, 1 + _below(bits, 2))
        polygons = _paths(bits, "polygon", 3, 4, width, height, 1 if full else _below(bits, 2))
        classifications = _classifications(bits, 1 if full else _below(bits, 2))
        lines = _paths(bits, "line", 2, 3, width, height, 1 if full else _below(bits, 2))
        points = _points(bits, width, height, 1 if full else _below(bits, 3))
        text = (
            f'{{"id":{_encode_str(ids[position])},"asset_id":{owner},"status":"{status}",'
            f'"duration":{duration!r},"attributes":{{}},"rectangles":[{rectangles}],'
            f'"polygons":[{polygons}],"classifications":[{classifications}],'
            f'"lines":[{lines}],"points":[{points}]}}'
        )
        out.append((ids[position], status, text))
    return out


# Each helper returns the JSON text of a list's items; a shape's label is drawn after its
# geometry, as in {**geometry, "label": ..., "text": None, "attributes": {}}.


def _end(bits: _GetRandBits) -> str:
    return _SHAPE_ENDS[_below(bits, 6)]


def _xy(bits: _GetRandBits, width: int, height: int) -> str:
    x = _below(bits, max(width, 1))
    return f"[{x},{_below(bits, max(height, 1))}]"


def _rectangles(bits: _GetRandBits, width: int, height: int, n: int) -> str:
    shapes = []
    for _ in range(n):
        x = _below(bits, max(width, 1))
        y = _below(bits, max(height, 1))
        w = 1 + _below(bits, max(width - x, 1))
        h = 1 + _below(bits, max(height - y, 1))
        shapes.append(f'{{"x":{x},"y":{y},"w":{w},"h":{h}{_end(bits)}')
    return ",".join(shapes)


def _paths(
    bits: _GetRandBits, key: str, least: int, extra: int, width: int, height: int, n: int
) -> str:
    """``n`` shapes of ``least + randrange(extra)`` points under ``key`` (polygon, line)."""
    shapes = []
    for _ in range(n):
        points = ",".join(_xy(bits, width, height) for _ in range(least + _below(bits, extra)))
        shapes.append(f'{{"{key}":[{points}]{_end(bits)}')
    return ",".join(shapes)


def _classifications(bits: _GetRandBits, n: int) -> str:
    return ",".join("{" + _end(bits)[1:] for _ in range(n))


def _points(bits: _GetRandBits, width: int, height: int, n: int) -> str:
    return ",".join(f'{{"point":{_xy(bits, width, height)}{_end(bits)}' for _ in range(n))
