"""Pure byte-range arithmetic: segment plans, ``Range`` headers, ``Content-Range`` checks.

Internally every range is half-open, ``[start, stop)``; HTTP's ``bytes=a-b`` is inclusive, and
only the two functions that speak HTTP convert. Nothing here does I/O, so every rule is tested
exhaustively with Hypothesis.

A plan and its progress take memory for the segments being worked on, never for the size a
server claims: a ``206`` saying ``/1000000000000000000`` once made a list of 3e10 pieces.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

__all__ = [
    "ContentRange",
    "RangeMismatch",
    "SegmentPlan",
    "SegmentProgress",
    "TotalMismatch",
    "check_partial_response",
    "contiguous_prefix",
    "parse_content_range",
    "plan_segments",
    "range_header",
]

_CONTENT_RANGE = re.compile(r"\s*bytes\s+(?:(\d{1,19})-(\d{1,19})|\*)\s*/\s*(\d{1,19}|\*)\s*")


class SegmentPlan(Sequence[tuple[int, int]]):
    """``[start, stop)`` pieces of ``segment_size`` covering ``[0, size)`` in order, computed
    when asked for: the same few integers whatever the size.

    The last piece is the remainder; an empty object has no pieces. The plan depends only on its
    two numbers, so a later process rebuilds the same segments from a sidecar's numbers.
    """

    __slots__ = ("pieces", "segment_size", "size")

    def __init__(self, size: int, segment_size: int) -> None:
        if size < 0 or segment_size < 1:
            raise ValueError("size must be >= 0 and segment_size >= 1")
        self.size = size
        self.segment_size = segment_size
        # The number of pieces. Use this rather than len(): a claimed size over 2**63 bytes in
        # pieces of a few bytes would be a count len() cannot return (OverflowError).
        self.pieces = -(-size // segment_size)

    def __len__(self) -> int:
        return self.pieces

    @overload
    def __getitem__(self, index: int) -> tuple[int, int]: ...

    @overload
    def __getitem__(self, index: slice) -> list[tuple[int, int]]: ...

    def __getitem__(self, index: int | slice) -> tuple[int, int] | list[tuple[int, int]]:
        if isinstance(index, slice):
            return [self[i] for i in range(self.pieces)[index]]
        if index < 0:
            index += self.pieces
        if not 0 <= index < self.pieces:
            raise IndexError("segment index out of range")
        start = index * self.segment_size
        return start, min(start + self.segment_size, self.size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        size, step = self.size, self.segment_size
        for start in range(0, size, step):
            yield start, min(start + step, size)

    def length(self, index: int) -> int:
        """Bytes in piece ``index``."""
        start, stop = self[index]
        return stop - start

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SegmentPlan):
            return NotImplemented
        # Equal pieces: a segment size beyond the object makes one piece of any such size.
        return self.size == other.size and (
            self.size == 0
            or min(self.segment_size, self.size) == min(other.segment_size, other.size)
        )

    def __hash__(self) -> int:
        return hash((self.size, min(self.segment_size, self.size) if self.size else 0))

    def __repr__(self) -> str:
        return f"SegmentPlan(size={self.size}, segment_size={self.segment_size})"


def plan_segments(size: int, segment_size: int) -> SegmentPlan:
    """The :class:`SegmentPlan` of ``[0, size)`` in pieces of ``segment_size``."""
    return SegmentPlan(size, segment_size)


class SegmentProgress:
    """How many bytes are on disk at the start of each piece of a plan.

    Pieces below :attr:`floor` are complete and cost nothing; the others with bytes are counted
    in a dict. Workers take pieces in order, so the dict holds only pieces between the contiguous
    prefix and the furthest piece claimed (those in flight, and those finished ahead of the
    slowest), never one entry per piece of the plan.
    """

    __slots__ = ("_got", "complete", "floor", "plan", "total")

    def __init__(self, plan: SegmentPlan, done: Iterable[tuple[int, int]] = ()) -> None:
        """``done``: ``(index, bytes)`` pairs, for the pieces with bytes on disk."""
        self.plan = plan
        self._got: dict[int, int] = {}
        self.floor = 0  # the first incomplete piece (plan.pieces when none is)
        self.total = 0  # bytes on disk, all pieces
        self.complete = 0  # complete pieces, all of them
        for index, got in done:
            if got:
                self.add(index, got - self[index])

    def __getitem__(self, index: int) -> int:
        if index < self.floor:
            return self.plan.length(index)
        return self._got.get(index, 0)

    def add(self, index: int, n: int) -> int:
        """``n`` more bytes right after those of piece ``index``; returns its new count."""
        length = self.plan.length(index)
        got = self[index] + n
        if n < 0 or got > length:
            raise ValueError(f"piece {index} cannot hold {got} of its {length} bytes")
        self.total += n
        if got == length and n:
            self.complete += 1
        if index == self.floor and got == length:
            self._got.pop(index, None)
            floor = index + 1
            count = self.plan.pieces
            # Pieces completed out of order wait in the dict until the floor reaches them.
            while floor < count and self._got.get(floor, 0) == self.plan.length(floor):
                del self._got[floor]
                floor += 1
            self.floor = floor
        elif n:
            self._got[index] = got
        return got

    def clear(self) -> None:
        """No byte on disk any more (the partial file was emptied)."""
        self._got.clear()
        self.floor = self.total = self.complete = 0

    def prefix(self) -> int:
        """How many bytes from offset 0 are on disk without a hole."""
        if self.floor >= self.plan.pieces:
            return self.plan.size
        return self.plan[self.floor][0] + self._got.get(self.floor, 0)

    def pending(self) -> int:
        """Pieces with bytes missing."""
        return self.plan.pieces - self.complete

    def entries(self) -> list[tuple[int, int]]:
        """``(index, bytes)`` of the pieces at or above the floor that have bytes."""
        return sorted(self._got.items())


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


def contiguous_prefix(segments: Sequence[tuple[int, int]], done: Sequence[int]) -> int:
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
