"""Generated API payloads, valid and mutated, against the parsers: nothing but a
:class:`~engine.errors.PlatformError` (or a clean per-item rejection) comes out."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic_core import from_json

from engine.errors import PlatformError
from engine.platform import models
from engine.platform.client import parse_answer
from engine.platform.paging import listing_bound, read_ahead
from engine.platform.per_item import (
    AnnotationAnswer,
    ListingPage,
    annotation_answer,
    asset_page,
    split_array,
)
from tests.hostile.payloads import (
    Raw,
    annotation_lists,
    encode,
    hostile_values,
    listing_pages,
    uuid_like,
)


def _is_id(value: object) -> bool:
    try:
        models.IdCheck.validate_python(value)
    except Exception:
        return False
    return True


@given(page=listing_pages())
def test_a_listing_page_gives_assets_rejections_or_a_platform_error(page: Any) -> None:
    raw = encode(page)
    try:
        parsed = parse_answer(asset_page, raw, "GET /page")
    except PlatformError:
        return
    assert isinstance(parsed, ListingPage)
    for asset in parsed.items:
        # What goes into request paths and the manifest is what the contract allows.
        assert _is_id(asset.id)
        assert _is_id(asset.data.id)
        for dimension in (asset.data.width, asset.data.height):
            assert dimension is None or 0 <= dimension <= models.MAX_DIMENSION
    for rejected in parsed.rejected:
        assert rejected.asset_id is None or _is_id(rejected.asset_id)
        assert rejected.reason and "\n" not in rejected.reason
    assert parsed.count is None or parsed.count >= 0
    if isinstance(page, dict) and isinstance(page.get("items"), list):
        # Every entry is accounted for: usable, or rejected on its own.
        assert parsed.size == len(page["items"])


@given(page=listing_pages(mutate=False))
def test_a_valid_page_loses_nothing(page: dict[str, Any]) -> None:
    parsed = parse_answer(asset_page, encode(page), "GET /page")
    assert parsed.rejected == []
    assert [a.id for a in parsed.items] == [item["id"] for item in page["items"]]
    assert parsed.count == page["count"]
    assert parsed.next_cursor == page["next_cursor"]


@given(asset_ids=st.lists(uuid_like, min_size=1, max_size=4), data=st.data())
def test_a_bulk_answer_keeps_good_annotations_and_names_the_bad(
    asset_ids: list[str], data: st.DataObject
) -> None:
    listed = data.draw(annotation_lists(asset_ids))
    raw = encode(listed)
    try:
        answer = parse_answer(annotation_answer, raw, "XGET /annotations")
    except PlatformError:
        assert not isinstance(listed, list)  # a list is always read item by item
        return
    assert isinstance(answer, AnnotationAnswer)
    assert raw.startswith(b"[")
    for annotation in answer.annotations:
        assert isinstance(annotation["id"], str)
        assert isinstance(annotation["asset_id"], str)
        assert isinstance(annotation.get("status"), str | None)
    if isinstance(listed, list) and len(answer.annotations) < len(listed):
        # Whatever is dropped is reported: for its asset, or for the whole answer.
        assert answer.unreadable or answer.unattributed is not None


@given(asset_ids=st.lists(uuid_like, min_size=1, max_size=4), data=st.data())
def test_valid_annotations_come_back_exactly(asset_ids: list[str], data: st.DataObject) -> None:
    listed = data.draw(annotation_lists(asset_ids, mutate=False))
    answer = parse_answer(annotation_answer, encode(listed), "XGET /annotations")
    assert answer.annotations == listed
    assert answer.unreadable == {}
    assert answer.unattributed is None


_MODELS = [
    models.Ping.model_validate_json,
    models.Organization.model_validate_json,
    models.DatasetVersion.model_validate_json,
    models.DataDetail.model_validate_json,
    models.AssetDetail.model_validate_json,
    models.AssetList.model_validate_json,
    models.IdPage.model_validate_json,
    models.TagList.model_validate_json,
    models.PresignedUrl.model_validate_json,
    models.AnnotationList.model_validate_json,
    models.BulkAnnotationList.validate_json,
    models.IdList.validate_json,
]
_FIELDS = st.sampled_from(
    [
        "id",
        "items",
        "count",
        "next_cursor",
        "default_organization",
        "datalake_id",
        "tags",
        "presigned_url",
        "name",
        "data",
        "object_name",
        "asset_id",
        "rectangles",
    ]
)


@given(
    parse=st.sampled_from(_MODELS),
    payload=st.one_of(hostile_values, st.dictionaries(_FIELDS, hostile_values, max_size=5)),
)
def test_every_model_reads_hostile_json_or_refuses_it(parse: Any, payload: Any) -> None:
    with contextlib.suppress(PlatformError):
        parse_answer(parse, encode(payload), "GET /x")


@given(st.sampled_from(["{", "[", '{"items": [', "[1,", '"', "nul", "", " ", "\x00", "{}}"]))
def test_truncated_or_garbage_bytes_are_a_platform_error(raw: str) -> None:
    for parse in (*_MODELS, asset_page, annotation_answer):
        with pytest.raises(PlatformError):
            parse_answer(parse, raw.encode(), "GET /x")


def test_the_bounds_of_the_json_parser_hold() -> None:
    # The depth (201 levels), integer (4300 digits) and surrogate bounds that keep encoders and
    # SQLite safe later.
    with pytest.raises(ValueError, match="recursion limit"):
        from_json(b"[" * 202 + b"]" * 202)
    with pytest.raises(ValueError, match="out of range"):
        from_json(b"1" * 4301)
    with pytest.raises(ValueError, match=r"surrogate|hex escape"):
        from_json(b'"\\ud800"')


@given(values=st.lists(hostile_values, max_size=6), other=hostile_values)
def test_split_array_finds_exactly_the_elements(values: list[Any], other: Any) -> None:
    assert split_array(encode(values), None) == ([encode(v) for v in values], b"[]")
    envelope = {"count": other, "items": values, "next_cursor": None}
    elements, rest = split_array(encode(envelope), "items") or ([], b"")
    assert elements == [encode(v) for v in values]
    assert rest == encode({"count": other, "items": Raw("[]"), "next_cursor": None})


@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_split_array_never_fails_on_garbage(raw: bytes) -> None:
    for key in (None, "items"):
        found = split_array(raw, key)
        assert found is None or isinstance(found[0], list)


def test_a_page_nested_100000_deep_inside_one_item_fails_that_item_only() -> None:
    deep = Raw('{"a":' * 100_000 + "1" + "}" * 100_000)
    good = {"id": "a1", "data": {"id": "d1", "object_name": "o"}}
    bad = {"id": "a2", "data": {"id": "d2", "object_name": "o", "metadata": deep}}
    page = parse_answer(asset_page, encode({"items": [good, bad], "count": 2}), "GET /x")
    assert [a.id for a in page.items] == ["a1"]
    assert [(r.asset_id, "JSON" in r.reason) for r in page.rejected] == [("a2", True)]


def test_huge_dimensions_and_dot_ids_fail_their_asset_only() -> None:
    items = [
        {"id": "a1", "data": {"id": "d1", "object_name": "o", "meta": {"height": 10**20}}},
        {"id": "a2", "data": {"id": "..", "object_name": "o", "filename": "x.jpg"}},
        {"id": "..", "data": {"id": "d3", "object_name": "o"}},
        {"id": "a4", "data": {"id": "d4", "object_name": "o"}},
    ]
    page = parse_answer(asset_page, encode({"items": items, "count": 4}), "GET /x")
    assert [a.id for a in page.items] == ["a4"]
    reasons = {r.asset_id: r.reason for r in page.rejected}
    assert set(reasons) == {"a1", "a2", None}
    assert reasons["a1"].startswith("data.meta.height:")
    assert "not a valid id" in reasons["a2"]
    assert page.rejected[1].filename == "x.jpg"


def test_deep_annotations_make_their_asset_unreadable() -> None:
    deep = Raw("[" * 100_000 + "]" * 100_000)
    listed = [
        {"id": "n1", "asset_id": "a1", "status": "ACCEPTED", "rectangles": []},
        {"id": "n2", "asset_id": "a2", "attributes": {"x": deep}},
        {"id": "n3", "attributes": deep},
    ]
    answer = parse_answer(annotation_answer, encode(listed[:2]), "XGET /a")
    assert [a["id"] for a in answer.annotations] == ["n1"]
    assert list(answer.unreadable) == ["a2"]
    assert answer.unattributed is None
    answer = parse_answer(annotation_answer, encode(listed), "XGET /a")
    assert answer.unattributed is not None


# -- the listing's bounds -------------------------------------------------------------------


@st.composite
def page_runs(draw: st.DrawFn) -> tuple[int, list[tuple[int, int | None, bool]]]:
    """A page size asked for, and pages: (entries, count, has a next cursor)."""
    limit = draw(st.integers(1, 20))
    pages = draw(
        st.lists(
            st.tuples(
                st.integers(0, 25),
                st.one_of(st.none(), st.integers(0, 60)),
                st.booleans() | st.just(True),
            ),
            min_size=1,
            max_size=40,
        )
    )
    return limit, pages


class _Page:
    def __init__(self, size: int, count: int | None, cursor: str | None) -> None:
        self.size, self.count, self.next_cursor = size, count, cursor


@given(run=page_runs())
def test_read_ahead_stays_within_the_count_and_the_limit(
    run: tuple[int, list[tuple[int, int | None, bool]]],
) -> None:
    limit, pages = run

    async def fetch(cursor: str | None) -> _Page:
        index = 0 if cursor is None else int(cursor)
        size, count, more = pages[index % len(pages)]
        # Ever-new cursors while "more": the server never says the end on its own.
        return _Page(size, count, str(index + 1) if more or index < 5 else None)

    async def main() -> tuple[list[_Page], PlatformError | None]:
        got: list[_Page] = []
        try:
            async for page in read_ahead(fetch, limit=limit):
                got.append(page)
                assert len(got) < 10_000  # the bound, not this guard, must end it
        except PlatformError as exc:
            return got, exc
        return got, None

    got, error = asyncio.run(main())
    assert all(p.size <= limit and p.count is not None for p in got)
    if got:
        largest = max(p.count for p in got if p.count is not None)
        assert sum(p.size for p in got) <= listing_bound(largest, limit)
    if error is None:
        assert got and (got[-1].next_cursor is None or got[-1].size == 0)


def test_json_helpers_spell_nan_as_the_platform_might() -> None:
    assert encode({"a": float("nan")}) == b'{"a":NaN}'
    assert json.loads(encode([1, "x"])) == [1, "x"]
