"""Answers read item by item when the whole does not validate: one bad item fails on its own.

A listing page or a bulk-annotation answer is first validated whole, in one fast call. Only when
that fails does this module split the JSON array into its elements (a scan of strings and
brackets with one regular expression, no recursion, so a page nested 100,000 deep costs one pass
over its bytes) and validate each element alone. An element that fails is reported with what can
be read of it (its id, its asset), so the engine can fail that asset and go on:

- :func:`asset_page`: a cursor page of assets; malformed assets become :class:`Rejected`;
- :func:`annotation_answer`: a bulk-annotation answer; annotations that are not objects with
  string ``id`` and ``asset_id`` (and a string or null ``status``) make their asset's
  annotations unreadable, or every asset's when their asset cannot be told.

What cannot be split (not an object with one ``items`` array, brackets that do not balance) is
a :class:`~engine.errors.PlatformError` for the whole answer, as before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails, from_json

from engine.errors import PlatformError
from engine.platform import models

__all__ = [
    "AnnotationAnswer",
    "ListingPage",
    "Rejected",
    "annotation_answer",
    "asset_page",
    "describe",
    "split_array",
]

# A JSON string (escapes included), or one structural character. Everything else (numbers,
# literals, white space) lies between tokens and is left to the real parser.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},:]', re.DOTALL)
_OPEN_OBJECT, _CLOSE_OBJECT = ord("{"), ord("}")
_OPEN_ARRAY, _CLOSE_ARRAY = ord("["), ord("]")
_QUOTE, _COMMA, _COLON = ord('"'), ord(","), ord(":")
_REASON_LIMIT = 200
_VALUE_LIMIT = 60


@dataclass(frozen=True, slots=True)
class Rejected:
    """A listed item the engine cannot use: its asset fails, the listing goes on.

    ``asset_id`` is ``None`` when not even the id could be read (then the listing cannot say
    which asset it was, and the run must not delete anything)."""

    asset_id: str | None
    filename: str
    reason: str


@dataclass(slots=True)
class ListingPage:
    """One page of the asset listing: the usable assets, and the rejected ones."""

    items: list[models.Asset]
    count: int | None
    next_cursor: str | None
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Entries the page carried, usable or not (what the listing's bounds count)."""
        return len(self.items) + len(self.rejected)


@dataclass(slots=True)
class AnnotationAnswer:
    """Bulk annotations as the API sent them, and the assets whose annotations could not be read.

    ``unattributed`` is set when a malformed annotation's asset could not be told: then no
    asset's annotations in the request are known to be complete."""

    annotations: list[dict[str, Any]] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    unattributed: str | None = None

    def merge(self, other: AnnotationAnswer) -> None:
        self.annotations += other.annotations
        for asset_id, reason in other.unreadable.items():
            self.unreadable.setdefault(asset_id, reason)
        if self.unattributed is None:
            self.unattributed = other.unattributed


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(error: ErrorDetails) -> str:
    """One validation error as a short line: where, and what was wrong."""
    where = ".".join(str(part) for part in error["loc"]) or "item"
    kind = error["type"]
    if kind == "string_pattern_mismatch":
        message = "not a valid id (expected a UUID-like token)"
    elif kind == "json_invalid":
        message = "not valid JSON: " + str(error.get("ctx", {}).get("error", error["msg"]))
    else:
        message = error["msg"]
    value = error.get("input")
    if isinstance(value, str):
        value = value[:_VALUE_LIMIT]
    if kind != "json_invalid" and (isinstance(value, str | int | float | bool) or value is None):
        message += f" (got {_clip(repr(value), _VALUE_LIMIT)})"
    return _clip(f"{where}: {message}", _REASON_LIMIT)


def _span_end(raw: bytes, start: int, end: int) -> bytes:
    return raw[start:end].strip()


def split_array(raw: bytes, key: str | None) -> tuple[list[bytes], bytes] | None:
    """The elements of the top-level array (``key=None``) or of the array under the top-level
    object's ``key``, each as its raw bytes, and the answer with that array emptied (its
    envelope). ``None`` when there is no such single array or the brackets do not balance."""
    wanted = None if key is None else b'"' + key.encode() + b'"'
    stack = bytearray()
    elements: list[bytes] = []
    array_open = -1
    array_close = -1
    array_depth = -1  # len(stack) inside the wanted array
    element_start = -1
    expect_key = False
    last_key: bytes | None = None
    for match in _TOKEN.finditer(raw):
        pos = match.start()
        char = raw[pos]
        depth = len(stack)
        if char == _QUOTE:
            if wanted is not None and depth == 1 and expect_key:
                last_key = match.group()
                expect_key = False
            continue
        if char == _COLON:
            continue
        if char in (_OPEN_OBJECT, _OPEN_ARRAY):
            is_wanted = char == _OPEN_ARRAY and (
                (wanted is None and depth == 0)
                or (wanted is not None and depth == 1 and last_key == wanted)
            )
            if is_wanted:
                if array_open >= 0:
                    return None  # two arrays under the same key: which one counts is unclear
                array_open, array_depth, element_start = pos, depth + 1, pos + 1
            elif depth == 0 and wanted is not None and char != _OPEN_OBJECT:
                return None
            stack.append(char)
            expect_key = char == _OPEN_OBJECT and depth == 0
            continue
        if char == _COMMA:
            if depth == array_depth and array_close < 0:
                elements.append(_span_end(raw, element_start, pos))
                element_start = pos + 1
            elif depth == 1 and wanted is not None:
                expect_key, last_key = True, None
            continue
        # A closing bracket.
        if not stack:
            return None
        opened = stack.pop()
        if (opened == _OPEN_OBJECT) != (char == _CLOSE_OBJECT):
            return None
        if depth == array_depth and array_close < 0 and array_open >= 0:
            last = _span_end(raw, element_start, pos)
            if last or elements:
                elements.append(last)
            array_close = pos
    if stack or array_open < 0 or array_close < 0:
        return None
    return elements, raw[:array_open] + b"[]" + raw[array_close + 1 :]


def _shallow_string(element: bytes, key: str) -> str | None:
    """The string value of ``key`` at the top level of an object that may not parse as a whole
    (too deep, an integer too long): found by the same scan, decoded alone."""
    wanted = b'"' + key.encode() + b'"'
    depth = 0
    expect_key = False
    after_key = False
    previous: bytes | None = None
    for match in _TOKEN.finditer(element):
        char = element[match.start()]
        if char == _QUOTE:
            token = match.group()
            if depth == 1 and after_key and previous == wanted:
                try:
                    value = from_json(token)
                except ValueError:
                    return None
                return value if isinstance(value, str) else None
            if depth == 1 and expect_key:
                previous, expect_key = token, False
            continue
        if char == _COLON:
            after_key = depth == 1 and previous is not None
            continue
        after_key = False
        if char in (_OPEN_OBJECT, _OPEN_ARRAY):
            depth += 1
            expect_key = depth == 1 and char == _OPEN_OBJECT
        elif char in (_CLOSE_OBJECT, _CLOSE_ARRAY):
            depth -= 1
        elif char == _COMMA and depth == 1:
            expect_key, previous = True, None
    return None


def _valid_id(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return models.IdCheck.validate_python(value)
    except ValidationError:
        return None


def _rejected(element: bytes, error: ValidationError) -> Rejected:
    asset_id: object = None
    filename: object = ""
    try:
        parsed = from_json(element)
    except ValueError:
        asset_id = _shallow_string(element, "id")
    else:
        if isinstance(parsed, dict):
            asset_id = parsed.get("id")
            data = parsed.get("data")
            if isinstance(data, dict):
                filename = data.get("filename", "")
    return Rejected(
        asset_id=_valid_id(asset_id),
        filename=_clip(filename, _REASON_LIMIT) if isinstance(filename, str) else "",
        reason=describe(error.errors(include_url=False)[0]),
    )


def asset_page(raw: bytes) -> ListingPage:
    """A page of the cursor listing; raises :class:`ValidationError` (or
    :class:`~engine.errors.PlatformError`) only when the page as a whole is unusable."""
    try:
        page = models.AssetPage.model_validate_json(raw)
    except ValidationError:
        split = split_array(raw, "items")
        if split is None:
            raise
        elements, envelope = split
        shell = models.AssetPage.model_validate_json(envelope)
        out = ListingPage([], shell.count, shell.next_cursor)
        for element in elements:
            try:
                out.items.append(models.Asset.model_validate_json(element))
            except ValidationError as exc:
                out.rejected.append(_rejected(element, exc))
        return out
    return ListingPage(page.items, page.count, page.next_cursor)


def _annotation_problem(value: object) -> str | None:
    if not isinstance(value, dict):
        return "an annotation is not a JSON object"
    if not isinstance(value.get("id"), str):
        return "an annotation has no string id"
    if not isinstance(value.get("asset_id"), str):
        return "an annotation has no string asset_id"
    if not isinstance(value.get("status"), str | None):
        return "an annotation's status is not a string"
    return None


def annotation_answer(raw: bytes) -> AnnotationAnswer:
    """The bulk-annotation answer: a JSON list of annotations, kept exactly as sent."""
    try:
        whole: Any = from_json(raw)
    except ValueError:
        split = split_array(raw, None)
        if split is None:
            raise PlatformError(
                "unexpected answer to the bulk annotations: not a JSON list", status=200
            ) from None
        elements = split[0]
    else:
        if not isinstance(whole, list):
            raise PlatformError(
                "unexpected answer to the bulk annotations: not a list of annotations", status=200
            )
        if not any(_annotation_problem(item) for item in whole):
            return AnnotationAnswer(whole)
        return _sort_annotations([(item, None) for item in whole])
    parsed: list[tuple[object, bytes | None]] = []
    for element in elements:
        try:
            parsed.append((from_json(element), element))
        except ValueError as exc:
            parsed.append((_Unparsed(str(exc)), element))
    return _sort_annotations(parsed)


@dataclass(frozen=True, slots=True)
class _Unparsed:
    error: str


def _sort_annotations(items: list[tuple[object, bytes | None]]) -> AnnotationAnswer:
    answer = AnnotationAnswer()
    for value, element in items:
        if isinstance(value, _Unparsed):
            problem: str | None = _clip(f"an annotation is not valid JSON: {value.error}", 200)
        else:
            problem = _annotation_problem(value)
        if problem is None:
            answer.annotations.append(value)  # type: ignore[arg-type]
            continue
        owner = value.get("asset_id") if isinstance(value, dict) else None
        if owner is None and element is not None:
            owner = _shallow_string(element, "asset_id")
        if isinstance(owner, str):
            answer.unreadable.setdefault(owner, problem)
        elif answer.unattributed is None:
            answer.unattributed = problem
    return answer
