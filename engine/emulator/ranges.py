"""Pure HTTP range arithmetic for the storage side (RFC 9110 sections 13.1.5 and 14).

:func:`select_range` turns a request's ``Range`` and ``If-Range`` headers into what to send:

* ``None``: the whole object with 200 (no Range, a Range that is not one valid ``bytes`` range,
  a multi-range request, or an ``If-Range`` that does not match the current representation);
* ``(start, end)``: bytes ``[start, end)`` with 206 and ``Content-Range``;
* :data:`UNSATISFIABLE`: 416 with ``Content-Range: bytes */size``.

Object stores answer a multi-range request with the whole object, and so does the emulator.
"""

from __future__ import annotations

import re
from email.utils import formatdate, parsedate_to_datetime
from typing import Final, Literal

__all__ = ["UNSATISFIABLE", "RangeResult", "http_date", "parse_range", "select_range"]

UNSATISFIABLE: Final = "unsatisfiable"
RangeResult = tuple[int, int] | Literal["unsatisfiable"] | None

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def http_date(epoch: int) -> str:
    """An IMF-fixdate, as in ``Last-Modified``."""
    return formatdate(epoch, usegmt=True)


def parse_range(header: str, size: int) -> RangeResult:
    """Parse one ``bytes=`` range against an object of ``size`` bytes."""
    match = _RANGE.match(header)
    if match is None:
        return None  # not a single valid byte range: ignored, as RFC 9110 allows
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            return UNSATISFIABLE
        return max(0, size - suffix), size
    start = int(first)
    if last and int(last) < start:
        return None  # syntactically invalid: ignore the header
    if start >= size:
        return UNSATISFIABLE
    end = size if not last else min(int(last) + 1, size)
    return start, end


def _if_range_holds(if_range: str, etag: str, last_modified: int) -> bool:
    value = if_range.strip()
    if value.startswith(('"', "W/")):
        # Strong comparison: a weak validator never matches (RFC 9110 section 13.1.5).
        return not value.startswith("W/") and value == etag
    try:
        return int(parsedate_to_datetime(value).timestamp()) == last_modified
    except (TypeError, ValueError, IndexError, OverflowError):
        return False


def select_range(
    range_header: str | None,
    if_range: str | None,
    *,
    size: int,
    etag: str,
    last_modified: int,
) -> RangeResult:
    """What to send for these request headers (see the module docstring)."""
    if range_header is None:
        return None
    if if_range is not None and not _if_range_holds(if_range, etag, last_modified):
        return None
    return parse_range(range_header, size)
