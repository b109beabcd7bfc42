"""Pure byte-range arithmetic: segment plans, ``Range`` headers, ``Content-Range`` checks.

Internally every range is half-open, ``[start, stop)``; HTTP's ``bytes=a-b`` is inclusive, and
only the two functions that speak HTTP convert. Nothing here does I/O, so every rule is tested
exhaustively with Hypothesis.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "ContentRange",
    "RangeMismatch",
    "TotalMismatch",
    "check_partial_response",
    "contiguous_prefix",
    "parse_content_range",
    "plan_segments",
    "range_header",
]

_CONTENT_RANGE = re.compile(r"\s*bytes\s+(?:(\d{1,19})-(\d{1,19})|\*)\s*/\s*(\d{1,19}|\*)\s*")


def plan_segments(size: int, segment_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` pieces of ``segment_size`` covering ``[0, size)`` in order.

    The last piece is the remainder; an empty object has no pieces. The plan depends only on its
    two arguments, so a later process rebuilds the same segments from a sidecar's numbers.
    """
    if size < 0 or segment_size < 1:
        raise ValueError("size must be >= 0 and segment_size >= 1")
    return [(start, min(start + segment_size, size)) for start in range(0, size, segment_size)]


def range_header(start: int, stop: int | None) -> str:
    """The ``Range`` value asking for ``[start, stop)`` (``stop=None``: to the end)."""
    if start < 0 or (stop is not None and stop <= start):
        raise ValueError(f"empty or negative range [{start}, {stop})")
    return f"bytes={start}-" if stop is None else f"bytes={start}-{stop - 1}"


@dataclass(frozen=True, slots=True)
class ContentRange:
    """A parsed ``Content-Range``: ``[start, stop)`` of an object of ``total`` bytes.

    ``start``/``stop`` are None for the unsatisfied form (``bytes */total``, sent with 416);
    ``total`` is None when the server wrote ``*``.
    """

    start: int | None
    stop: int | None
    total: int | None


def parse_content_range(value: str | None) -> ContentRange | None:
    """Parse ``bytes a-b/total``, ``bytes a-b/*`` or ``bytes */total``; None if malformed."""
    if value is None:
        return None
    match = _CONTENT_RANGE.fullmatch(value)
    if match is None:
        return None
    first, last, total_text = match.groups()
    total = None if total_text == "*" else int(total_text)
    if first is None:
        if total is None:  # "bytes */*" says nothing at all
            return None
        return ContentRange(None, None, total)
    start, stop = int(first), int(last) + 1
    if stop <= start or (total is not None and stop > total):
        return None
    return ContentRange(start, stop, total)


class RangeMismatch(ValueError):
    """A 206 answer does not describe the bytes that were asked for."""


class TotalMismatch(RangeMismatch):
    """A 206 answer gives another total size than the one known for the object."""


def check_partial_response(
    content_range: str | None,
    content_length: int | None,
    *,
    start: int,
    stop: int,
    total: int | None,
) -> tuple[int, int]:
    """Check a 206 answer to a request for ``[start, stop)`` of an object of ``total`` bytes.

    Returns the ``(start, stop)`` the body really carries. A server may legally send less than
    asked (a prefix of the range: the rest is asked for next time), never a different place,
    never more, and never a different total size. Raises :class:`RangeMismatch` otherwise.
    """
    parsed = parse_content_range(content_range)
    if parsed is None or parsed.start is None or parsed.stop is None:
        raise RangeMismatch(f"206 with an unusable Content-Range {content_range!r}")
    if parsed.start != start:
        raise RangeMismatch(f"asked for bytes from {start}, got {parsed.start}")
    if parsed.stop > stop:
        raise RangeMismatch(f"asked for bytes up to {stop}, got up to {parsed.stop}")
    if total is not None and parsed.total is not None and parsed.total != total:
        raise TotalMismatch(f"object is {parsed.total} bytes, expected {total}")
    if content_length is not None and content_length != parsed.stop - parsed.start:
        raise RangeMismatch(
            f"Content-Length {content_length} does not match Content-Range {content_range!r}"
        )
    return parsed.start, parsed.stop


def contiguous_prefix(segments: list[tuple[int, int]], done: list[int]) -> int:
    """How many bytes from offset 0 are on disk, given per-segment progress.

    ``done[i]`` counts the bytes written at the start of ``segments[i]``. The prefix runs through
    every complete segment and stops inside the first incomplete one.
    """
    prefix = 0
    for (start, stop), got in zip(segments, done, strict=True):
        if start != prefix:
            raise ValueError("segments must be contiguous and start at 0")
        prefix = start + got
        if got < stop - start:
            break
    return prefix
