"""Query-string and body validation for the API: every malformed value is a 400 ``ApiError``.

Choices where the contract is silent: ``limit`` must be an integer 1..1000 (absent: 100);
``offset`` an integer >= 0; ``cursor`` with ``offset`` or with ``order_by`` is contradictory and
gets 400; a cursor from another filter is 400; unknown ``upload_statuses`` / ``types`` values,
unknown ``order_by`` fields and malformed UUIDs in parameters are 400. Unknown parameters are
ignored, as web frameworks do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from multidict import MultiMapping

from engine.emulator.app import ApiError
from engine.emulator.query import Query, QueryError, parse_query

__all__ = [
    "DATA_TYPES",
    "UPLOAD_STATUSES",
    "ListingParams",
    "check_choices",
    "decode_cursor",
    "encode_cursor",
    "excluded",
    "parse_limit",
    "parse_listing",
    "parse_offset",
    "parse_q",
    "require_uuid",
]

UPLOAD_STATUSES = ("PENDING", "COMPUTING", "DONE", "ERROR")
DATA_TYPES = ("IMAGE", "VIDEO")
ORDER_FIELDS = ("created_at", "filename")
MAX_LIMIT = 1000


def parse_limit(query: MultiMapping[str], default: int = 100) -> int:
    raw = query.get("limit")
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "limit must be an integer.") from None
    if not 1 <= value <= MAX_LIMIT:
        raise ApiError(400, f"limit must be between 1 and {MAX_LIMIT}.")
    return value


def parse_offset(query: MultiMapping[str]) -> int | None:
    raw = query.get("offset")
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "offset must be an integer.") from None
    if value < 0:
        raise ApiError(400, "offset must be >= 0.")
    return value


def parse_q(raw: Any) -> Query | None:
    if raw is not None and not isinstance(raw, str):
        raise ApiError(400, "q must be a string.")
    if raw is None or not raw.strip():
        return None
    try:
        return parse_query(raw)
    except QueryError as exc:
        raise ApiError(400, "Invalid query.", detail=str(exc)) from None


def require_uuid(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be a UUID string.")
    try:
        uuid.UUID(value)
    except ValueError:
        raise ApiError(400, f"{name} is not a valid UUID.", detail=value) from None
    return value


def check_choices(values: Any, allowed: Sequence[str], name: str) -> list[str]:
    if not isinstance(values, list | tuple):
        raise ApiError(400, f"{name} must be a list.")
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ApiError(400, f"Invalid {name}.", detail=[str(v) for v in bad])
    return [str(v) for v in values]


def excluded(statuses: Sequence[str], types: Sequence[str]) -> bool:
    """Every emulated asset is a DONE IMAGE: filters without those select nothing."""
    return bool(statuses and "DONE" not in statuses) or bool(types and "IMAGE" not in types)


@dataclass(frozen=True)
class ListingParams:
    limit: int
    offset: int | None
    cursor: str | None
    order_by: list[str]
    query: Query | None
    statuses: list[str]
    types: list[str]

    @property
    def empty(self) -> bool:
        return excluded(self.statuses, self.types)

    def fingerprint(self) -> str:
        text = json.dumps(
            [
                self.query.fingerprint() if self.query else "",
                sorted(self.statuses),
                sorted(self.types),
            ]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def parse_listing(query: MultiMapping[str], *, with_filters: bool = True) -> ListingParams:
    order_by = query.getall("order_by", [])
    for field in order_by:
        if field.lstrip("-") not in ORDER_FIELDS:
            raise ApiError(400, "Invalid order_by.", detail=field)
    cursor = query.get("cursor") or None
    offset = parse_offset(query)
    if cursor is not None and offset is not None:
        raise ApiError(400, "offset cannot be used with cursor.")
    if cursor is not None and order_by:
        raise ApiError(400, "cursor cannot be used with order_by.")
    statuses = query.getall("upload_statuses", []) if with_filters else []
    types = query.getall("types", []) if with_filters else []
    return ListingParams(
        limit=parse_limit(query),
        offset=offset,
        cursor=cursor,
        order_by=list(order_by),
        query=parse_q(query.get("q")),
        statuses=check_choices(statuses, UPLOAD_STATUSES, "upload_statuses"),
        types=check_choices(types, DATA_TYPES, "types"),
    )


def encode_cursor(last_index: int, fingerprint: str) -> str:
    raw = json.dumps({"after": last_index, "f": fingerprint}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, fingerprint: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        after = data["after"]
        origin = data["f"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise ApiError(400, "Invalid cursor.") from None
    if not isinstance(after, int) or after < -1:
        raise ApiError(400, "Invalid cursor.")
    if origin != fingerprint:
        raise ApiError(400, "This cursor belongs to another listing (different filters).")
    return after
