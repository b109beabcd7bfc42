"""Models and q builders: pure, no server."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.backoff import parse_retry_after
from engine.emulator.query import parse_query
from engine.platform import models
from engine.platform.http import server_message
from engine.platform.query import and_, quote, tag_equals, tag_filter, tags_filter, tags_in

ASSET = {
    "id": "0190c8a5-0000-7000-8000-00000000a55e",
    "data": {
        "id": "0190c8a5-0000-7000-8000-0000000da7a0",
        "object_name": "0190c8a4/0190c8a5-data.jpg",
        "filename": "img_001.jpg",
        "type": "IMAGE",
        "content_type": "image/jpeg",
        "upload_status": "DONE",
        "presigned_url": "https://storage.example/b/o?X-Amz-Signature=abc",
        "metadata": {},
        "custom_metadata": {},
        "meta": {"width": 1920, "height": 1080},
        "unknown_field": [1, 2, 3],
    },
    "created_at": "2026-11-26T12:00:00Z",
}


def test_asset_as_listed() -> None:
    asset = models.Asset.model_validate_json(json.dumps(ASSET))
    assert asset.data_id == ASSET["data"]["id"]  # type: ignore[index]
    assert asset.filename == "img_001.jpg"
    assert asset.data.width == 1920
    assert asset.data.height == 1080
    assert asset.presigned_url is not None
    assert not hasattr(asset, "created_at")


def test_optional_fields() -> None:
    data = {"id": "d", "object_name": "o", "presigned_url": None}
    asset = models.Asset.model_validate({"id": "a", "data": data})
    assert asset.presigned_url is None
    assert asset.data.meta is None
    assert asset.data.width is None
    assert asset.filename == ""
    video = models.Data.model_validate({**data, "meta": {"duration": 3.0}})
    assert video.width is None
    assert video.height is None


def test_pages_and_details() -> None:
    page = models.AssetPage.model_validate_json(
        json.dumps({"items": [ASSET], "count": 1, "next_cursor": None})
    )
    assert page.next_cursor is None
    assert len(page.items) == 1
    detail = models.DataDetail.model_validate(
        {
            **ASSET["data"],  # type: ignore[dict-item]
            "datalake_id": "lake",
            "tags": [{"id": "t", "name": "cat", "target_type": "DATA"}],
        }
    )
    assert detail.datalake_id == "lake"
    assert [t.name for t in detail.tags] == ["cat"]
    dv = models.DatasetVersion.model_validate(
        {"id": "v", "origin_name": "ds", "origin_id": "o", "version": "v1", "type": "SEGMENTATION"}
    )
    assert dv.tags == []


def test_bulk_annotation_keeps_what_the_api_sent() -> None:
    sent = {
        "id": "an",
        "asset_id": "a",
        "status": "ACCEPTED",
        "attributes": {},
        "rectangles": [
            {"x": 1, "y": 2.5, "w": 3, "h": 4, "label": "cat", "text": None, "attributes": {}}
        ],
        "polygons": [{"polygon": [[1, 2], [3, 4], [5, 6]], "label": "cat", "text": None}],
        "classifications": [{"label": "cat", "text": None, "attributes": {}}],
        "lines": [{"line": [[1, 2], [3, 4]], "label": "road", "text": None, "attributes": {}}],
        "points": [{"point": [1, 2], "label": "eye", "text": None, "attributes": {}}],
        "keypoints": [{"keypoints": [[1, 2, 2]], "label": "body"}],  # not in the contract
        "worker_id": "w",
    }
    [annotation] = models.BulkAnnotationList.validate_json(json.dumps([sent]))
    assert annotation.rectangles[0].x == 1
    assert isinstance(annotation.rectangles[0].x, int)
    assert annotation.raw() == sent
    assert models.BulkAnnotation.model_validate({"id": "x", "asset_id": "a"}).raw() == {
        "id": "x",
        "asset_id": "a",
    }


def test_query_builders_match_the_sdk() -> None:
    # picsellia.utils.convert_tag_list_to_query_language + combine_two_ql
    assert tags_filter(["train", "val"], []) == 'tags.name in ("train","val")'
    assert tags_filter([], ["cat"]) == 'data.tags.name in ("cat")'
    assert tags_filter(["a"], ["b"]) == 'tags.name in ("a") and data.tags.name in ("b")'
    assert tags_filter() is None
    assert tags_in(["a", "a", "b"]) == 'tags.name in ("a","b")'
    assert tag_equals("train") == 'tags.name = "train"'
    assert tag_equals("x", data=True) == 'data.tags.name = "x"'
    assert tag_filter("data.tags.name", "x") == 'data.tags.name = "x"'
    with pytest.raises(ValueError, match="tag field"):
        tag_filter("name", "x")
    assert and_(None, "a", None, "b") == "a and b"
    assert and_(None) is None


def test_quoting_of_hostile_tag_names() -> None:
    assert quote('say "hi"') == '"say \\"hi\\""'
    assert quote("back\\slash") == '"back\\\\slash"'
    assert quote("日本") == '"日本"'
    assert quote("line\nbreak") == '"line\\nbreak"'


@given(
    st.lists(st.text(min_size=1), max_size=4),
    st.lists(st.text(min_size=1), max_size=4),
)
def test_any_tag_names_round_trip_through_the_q_parser(tags: list[str], data_tags: list[str]):
    q = tags_filter(tags, data_tags)
    if q is None:
        assert not tags
        assert not data_tags
        return
    parsed = parse_query(q)
    expected = []
    if tags:
        expected.append(("asset", frozenset(tags)))
    if data_tags:
        expected.append(("data", frozenset(data_tags)))
    assert [(c.target, c.names) for c in parsed.clauses] == expected
    for name in tags[:1]:
        [clause] = parse_query(tag_equals(name)).clauses
        assert clause.names == {name}


def test_retry_after_parsing() -> None:
    assert parse_retry_after(None, 0.0) is None
    assert parse_retry_after("2", 0.0) == 2.0
    assert parse_retry_after(" 0.25 ", 0.0) == 0.25
    assert parse_retry_after("-3", 0.0) == 0.0
    assert parse_retry_after("nan", 0.0) is None
    assert parse_retry_after("soon", 0.0) is None
    when = parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0)
    assert when == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412490.0) == 0.0


def test_server_message() -> None:
    assert server_message(b'{"message": "bad limit"}') == "bad limit"
    assert server_message(b'{"message": "bad", "detail": ["a", "b"]}') == "bad (a; b)"
    assert server_message(b'{"detail": "only detail"}') == "only detail"
    assert server_message(b"<html>\n  Bad   Gateway\n</html>") == "<html> Bad Gateway </html>"
    assert len(server_message(b"x" * 5000)) == 300


# -- cross-checks against the platform's own SDK (installed with the dev extra) --------------

sdk_names = st.lists(
    st.text(alphabet=st.characters(exclude_characters='"\\', exclude_categories=["Cc", "Cs"])),
    min_size=1,
    max_size=4,
    unique=True,
)


@given(sdk_names, sdk_names)
def test_q_is_what_the_sdk_sends_for_ordinary_names(tags: list[str], data_tags: list[str]):
    utils = pytest.importorskip("picsellia.utils")
    sdk = utils.combine_two_ql(
        utils.convert_tag_list_to_query_language(tags, False),
        utils.combine_two_ql(
            None, utils.convert_tag_list_to_query_language(data_tags, False, prefix="data.")
        ),
    )
    assert tags_filter(tags, data_tags) == sdk
    assert tag_equals(tags[0]) == utils.convert_tag_list_to_query_language(tags[:1], True)


def test_listing_filters_and_version_are_the_sdks() -> None:
    compatibility = pytest.importorskip("picsellia.compatibility")
    import picsellia

    from engine.platform.client import SDK_TYPES, SDK_UPLOAD_STATUSES, SDK_VERSION

    sent = compatibility.add_data_mandatory_query_parameters({})
    assert list(SDK_UPLOAD_STATUSES) == sent["upload_statuses"]
    assert list(SDK_TYPES) == sent["types"]
    assert picsellia.__version__ == SDK_VERSION
