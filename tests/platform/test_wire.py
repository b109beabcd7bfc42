"""What the client puts on the wire, and how it reads odd answers: against a raw HTTP server
that accepts any method (so these tests do not depend on the emulator)."""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import tracemalloc
import uuid
import zlib
from collections.abc import Iterator

import aiohttp
import pytest
from pydantic import SecretStr

from engine.errors import (
    AnswerTooLarge,
    ApiUnavailable,
    AuthError,
    NotFoundError,
    PlatformError,
    UsageError,
)
from engine.platform import PlatformClient
from engine.platform.client import (
    _CHUNK_CONCURRENCY,
    ANNOTATION_IDS_PER_REQUEST,
    SDK_TYPES,
    SDK_UPLOAD_STATUSES,
)
from engine.settings import RetryPolicy, Timeouts

from .conftest import RawServer, Reply, Seen

# Explicit, so parametrized async tests get both backends (see the report on tests/conftest.py).
pytestmark = pytest.mark.anyio

TOKEN = "s3cr3t-t0ken-value"
FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.01, max_retry_after=0.05)
DV = "0190c8a5-0000-7000-8000-0000000000d5"


def client(session: aiohttp.ClientSession, url: str, **kw) -> PlatformClient:
    return PlatformClient(session, url, SecretStr(TOKEN), FAST, Timeouts(api=10), **kw)


def asset(i: int) -> dict[str, object]:
    return {"id": f"a{i}", "data": {"id": f"d{i}", "object_name": f"o{i}", "filename": f"{i}.jpg"}}


async def test_headers_and_organisation(raw_server: RawServer) -> None:
    raw_server.set(
        lambda _: Reply(
            body={"sdk_version": "6.37.0", "username": "u", "default_organization": "org"}
        )
    )
    async with aiohttp.ClientSession() as session:
        api = client(session, raw_server.url + "/")
        ping = await api.ping()
        await api.ping()
    assert ping.username == "u"
    first, second = raw_server.seen
    assert first.method == "GET"
    assert first.path == "/api/home/ping"
    assert first.headers["authorization"] == f"Bearer {TOKEN}"
    assert "Picsellia-SDK/6.37.0" in first.headers["user-agent"]
    assert first.headers["content-type"] == "application/json"
    assert "x-picsellia-organization" not in first.headers
    assert second.headers["x-picsellia-organization"] == "org"
    assert TOKEN not in repr(api)


async def test_listing_params_like_the_sdk(raw_server: RawServer) -> None:
    def handler(seen: Seen) -> Reply:
        cursor = dict(seen.query).get("cursor")
        if cursor is None:
            return Reply(body={"items": [asset(1)], "count": 2, "next_cursor": "c1"})
        return Reply(body={"items": [asset(2)], "count": 2, "next_cursor": None})

    raw_server.set(handler)
    async with aiohttp.ClientSession() as session:
        api = client(session, raw_server.url)
        pages = [p async for p in api.asset_pages(DV, q='tags.name in ("a b")', limit=1)]
    assert [a.id for p in pages for a in p.items] == ["a1", "a2"]
    first, second = raw_server.seen
    assert first.path == f"/api/dataset/version/{DV}/assets"
    assert first.query == [
        ("limit", "1"),
        ("q", 'tags.name in ("a b")'),
        *[("upload_statuses", s) for s in SDK_UPLOAD_STATUSES],
        *[("types", t) for t in SDK_TYPES],
    ]
    assert ("cursor", "c1") in second.query
    assert "offset" not in dict(second.query)


async def test_xget_sends_a_json_body(raw_server: RawServer) -> None:
    ids = [f"a{i}" for i in range(2500)]

    def handler(seen: Seen) -> Reply:
        body = seen.json()
        assert isinstance(body, dict)
        return Reply(body={"items": [asset(int(i[1:])) for i in body["ids"]], "count": 0})

    raw_server.set(handler)
    async with aiohttp.ClientSession() as session:
        found = await client(session, raw_server.url).assets_by_ids(DV, ids + ids[:10])
    assert [a.id for a in found] == ids
    assert [s.method for s in raw_server.seen] == ["XGET"] * 3
    bodies = [s.json() for s in raw_server.seen]
    assert sorted(len(b["ids"]) for b in bodies) == [500, 1000, 1000]  # type: ignore[index]
    assert bodies[0]["upload_statuses"] == list(SDK_UPLOAD_STATUSES)  # type: ignore[index]
    assert bodies[0]["types"] == list(SDK_TYPES)  # type: ignore[index]
    assert all(s.headers["content-type"] == "application/json" for s in raw_server.seen)


async def test_annotation_ids_are_chunked_in_the_query(raw_server: RawServer) -> None:
    asset_ids = [str(uuid.UUID(int=i)) for i in range(1, 121)]
    raw_server.set(lambda seen: Reply(body=[f"an-{v}" for k, v in seen.query if k == "asset_ids"]))
    async with aiohttp.ClientSession() as session:
        api = client(session, raw_server.url)
        found = await api.annotation_ids(DV, asset_ids, status="ACCEPTED")
        assert await api.annotation_ids(DV, []) == []
        raw_server.set(lambda seen: Reply(body=["x", "y"]))
        assert await api.annotation_ids(DV, None) == ["x", "y"]
    assert found == [f"an-{a}" for a in asset_ids]
    chunked = raw_server.seen[:-1]
    sizes = sorted(len([1 for k, _ in s.query if k == "asset_ids"]) for s in chunked)
    assert sizes == [20, 50, 50]  # chunks run concurrently: any order
    assert all(("status", "ACCEPTED") in s.query for s in chunked)
    assert max(len(s.target) for s in chunked) < 4096
    assert ANNOTATION_IDS_PER_REQUEST == 50
    assert raw_server.seen[-1].query == []


async def test_long_ids_keep_the_request_line_short(raw_server: RawServer) -> None:
    asset_ids = [f"{i}-" + "é" * 200 for i in range(30)]  # 2.4 KB each once percent-encoded
    raw_server.set(lambda seen: Reply(body=[]))
    async with aiohttp.ClientSession() as session:
        await client(session, raw_server.url).annotation_ids(DV, asset_ids)
    assert max(len(s.target) for s in raw_server.seen) < 8192
    got = [v for s in raw_server.seen for k, v in s.query if k == "asset_ids"]
    assert sorted(got) == sorted(asset_ids)


async def test_bulk_annotations_body_is_a_list(raw_server: RawServer) -> None:
    ids = [f"an{i}" for i in range(250)]

    def handler(seen: Seen) -> Reply:
        body = seen.json()
        assert isinstance(body, list)
        return Reply(body=[{"id": i, "asset_id": "a"} for i in body])

    raw_server.set(handler)
    async with aiohttp.ClientSession() as session:
        api = client(session, raw_server.url)
        found = await api.annotations_bulk(DV, ids, chunk_size=100)
        with pytest.raises(UsageError):
            await api.annotations_bulk(DV, ids, chunk_size=1001)
        assert await api.annotations_bulk(DV, []) == []
    assert [a.id for a in found] == ids
    assert sorted(len(s.json()) for s in raw_server.seen) == [50, 100, 100]  # type: ignore[arg-type]
    assert {s.method for s in raw_server.seen} == {"XGET"}


async def test_datalake_tags_pages_with_offset(raw_server: RawServer) -> None:
    tags = [{"id": f"t{i}", "name": f"n{i}", "target_type": "DATA"} for i in range(2500)]

    def handler(seen: Seen) -> Reply:
        q = dict(seen.query)
        start, limit = int(q["offset"]), int(q["limit"])
        return Reply(body={"items": tags[start : start + limit]})

    raw_server.set(handler)
    async with aiohttp.ClientSession() as session:
        found = await client(session, raw_server.url).datalake_tags("lake")
    assert [t.id for t in found] == [t["id"] for t in tags]
    assert [dict(s.query)["offset"] for s in raw_server.seen] == ["0", "1000", "2000"]

    # A server that ignores offset must not loop us forever.
    raw_server.seen.clear()
    raw_server.set(lambda seen: Reply(body={"items": tags[:1000]}))
    async with aiohttp.ClientSession() as session:
        found = await client(session, raw_server.url).datalake_tags("lake")
    assert len(found) == 1000
    assert len(raw_server.seen) == 2


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, AuthError),
        (403, AuthError),
        (404, NotFoundError),
        (400, PlatformError),
        (409, PlatformError),
        (422, PlatformError),
        (423, PlatformError),
        (501, PlatformError),
    ],
)
async def test_status_mapping_is_not_retried(raw_server: RawServer, status: int, error) -> None:
    raw_server.set(lambda _: Reply(status=status, body={"message": f"nope {TOKEN}"}))
    async with aiohttp.ClientSession() as session:
        with pytest.raises(error) as info:
            await client(session, raw_server.url).dataset_version(DV)
    assert type(info.value) is error
    assert len(raw_server.seen) == 1
    assert TOKEN not in str(info.value)
    assert "nope ***" in str(info.value)
    assert "\n" not in str(info.value)
    if error is not AuthError:
        assert info.value.status == status


async def test_retry_after_http_date_and_give_up(raw_server: RawServer, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    raw_server.set(
        lambda _: Reply(status=503, body=b"<html>busy</html>", headers={"Retry-After": "0"})
    )
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ApiUnavailable) as info:
            await client(session, raw_server.url).presigned_url("d1")
    assert len(raw_server.seen) == FAST.attempts
    assert info.value.status == 503
    assert info.value.retryable
    assert "gave up after 3 attempts" in str(info.value)
    assert TOKEN not in caplog.text


async def test_body_cut_short_is_retried(raw_server: RawServer) -> None:
    answers = iter([Reply(body={"presigned_url": "https://x/y"}, cut_after=5)])
    raw_server.set(lambda _: next(answers, Reply(body={"presigned_url": "https://x/z"})))
    async with aiohttp.ClientSession() as session:
        assert await client(session, raw_server.url).presigned_url("d1") == "https://x/z"
    assert len(raw_server.seen) == 2


async def test_unexpected_json_is_a_platform_error(raw_server: RawServer) -> None:
    raw_server.set(lambda _: Reply(body=b"not json"))
    async with aiohttp.ClientSession() as session:
        api = client(session, raw_server.url)
        with pytest.raises(PlatformError, match="unexpected answer"):
            await api.data("d1")
        raw_server.set(lambda _: Reply(body={"items": "nope"}))
        with pytest.raises(PlatformError, match="items"):
            await api.version_tags(DV)


async def test_connection_refused_is_api_unavailable() -> None:
    async with aiohttp.ClientSession() as session:
        api = client(session, "http://127.0.0.1:9")  # discard port: nothing listens
        with pytest.raises(ApiUnavailable, match="gave up"):
            await api.ping()


async def test_limit_is_validated() -> None:
    async with aiohttp.ClientSession() as session:
        api = client(session, "http://127.0.0.1:9")
        for bad in (0, 1001):
            with pytest.raises(UsageError, match="page size"):
                api.asset_pages(DV, limit=bad)
            with pytest.raises(UsageError, match="page size"):
                api.asset_id_pages(DV, limit=bad)


async def test_ids_are_quoted_into_paths(raw_server: RawServer) -> None:
    raw_server.set(lambda _: Reply(body={"presigned_url": "u"}))
    async with aiohttp.ClientSession() as session:
        await client(session, raw_server.url).presigned_url("../a?b")
    assert raw_server.seen[0].target == "/api/data/..%2Fa%3Fb/presigned-url"


def test_json_helper_roundtrip() -> None:
    assert json.loads(json.dumps({"a": 1})) == {"a": 1}


async def test_a_failing_chunk_raises_one_plain_error(raw_server: RawServer) -> None:
    def handler(seen: Seen) -> Reply:
        body = seen.json()
        assert isinstance(body, list)
        if "an150" in body:
            return Reply(status=422, body={"message": "bad chunk"})
        return Reply(body=[])

    raw_server.set(handler)
    async with aiohttp.ClientSession() as session:
        api = client(session, raw_server.url)
        with pytest.raises(PlatformError, match="bad chunk") as info:
            await api.annotations_bulk(DV, [f"an{i}" for i in range(300)], chunk_size=100)
    assert type(info.value) is PlatformError  # not an ExceptionGroup


# -- bounds on what the API sends (issue 11, section 3) ----------------------------------------

MiB = 1024 * 1024


def gzip_of_zeros(size: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: a gzip wrapper
    block = bytes(MiB)
    pieces = [packer.compress(block) for _ in range(size // MiB)]
    return b"".join([*pieces, packer.flush()])


GZIP_BOMB = gzip_of_zeros(64 * MiB)  # ~64 KB on the wire


@contextlib.contextmanager
def peak_allocations() -> Iterator[list[int]]:
    """The peak of Python allocations inside the block, in bytes (aiohttp's buffers are
    Python bytes, so a body read whole shows here)."""
    peak: list[int] = []
    tracemalloc.start()
    try:
        yield peak
    finally:
        peak.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


async def test_a_gzip_bomb_is_refused_once_its_decoded_size_passes_the_cap(
    raw_server: RawServer,
) -> None:
    raw_server.set(lambda _: Reply(body=GZIP_BOMB, headers={"Content-Encoding": "gzip"}))
    async with aiohttp.ClientSession() as session:
        with (
            peak_allocations() as peak,
            pytest.raises(AnswerTooLarge, match="larger than 1,048,576 bytes") as info,
        ):
            await client(session, raw_server.url, max_body=MiB).ping()
    assert peak[0] < 8 * MiB  # the bomb inflates to 64 MiB
    assert len(raw_server.seen) == 1  # the same request would get the same answer: no retry
    assert not info.value.retryable
    assert "\n" not in str(info.value)


async def test_the_cap_counts_decoded_bytes(raw_server: RawServer) -> None:
    body = json.dumps({"username": "u" * 300_000}).encode()
    raw_server.set(lambda _: Reply(body=gzip.compress(body), headers={"Content-Encoding": "gzip"}))
    async with aiohttp.ClientSession() as session:
        ping = await client(session, raw_server.url, max_body=len(body)).ping()
        assert ping.username == "u" * 300_000
        with pytest.raises(AnswerTooLarge):  # ~1 KB on the wire, one byte too many decoded
            await client(session, raw_server.url, max_body=len(body) - 1).ping()


async def test_a_plain_body_over_the_cap_is_refused(raw_server: RawServer) -> None:
    raw_server.set(lambda _: Reply(body=b" " * (2 * MiB)))
    async with aiohttp.ClientSession() as session:
        with pytest.raises(AnswerTooLarge, match="larger than"):
            await client(session, raw_server.url, max_body=MiB).ping()
    assert len(raw_server.seen) == 1


async def test_an_error_answer_is_read_only_as_far_as_its_message(raw_server: RawServer) -> None:
    raw_server.set(
        lambda _: Reply(status=422, body=GZIP_BOMB, headers={"Content-Encoding": "gzip"})
    )
    async with aiohttp.ClientSession() as session:
        with peak_allocations() as peak, pytest.raises(PlatformError) as info:
            await client(session, raw_server.url).ping()
    assert peak[0] < 8 * MiB  # the body inflates to 64 MiB; its message is in the first bytes
    assert info.value.status == 422
    assert len(str(info.value)) < 400


async def test_ids_that_are_only_dots_never_go_into_a_path(raw_server: RawServer) -> None:
    async with aiohttp.ClientSession() as session:
        api = client(session, raw_server.url)
        for bad in ("..", ".", ""):
            with pytest.raises(UsageError, match="request path"):
                await api.data(bad)
    assert raw_server.seen == []


async def test_a_malformed_asset_is_rejected_alone(raw_server: RawServer) -> None:
    items = [asset(1), {**asset(2), "data": {"id": "..", "object_name": "o"}}, asset(3)]
    items.append({"id": "a4", "data": {**asset(4)["data"], "meta": {"height": 10**20}}})
    raw_server.set(lambda _: Reply(body={"items": items, "count": 4, "next_cursor": None}))
    async with aiohttp.ClientSession() as session:
        pages = [p async for p in client(session, raw_server.url).asset_pages(DV)]
    (page,) = pages
    assert [a.id for a in page.items] == ["a1", "a3"]
    assert [r.asset_id for r in page.rejected] == ["a2", "a4"]
    assert "data.id: not a valid id" in page.rejected[0].reason
    assert "data.meta.height" in page.rejected[1].reason


async def test_a_bulk_answer_too_large_is_asked_for_again_in_small_chunks(
    raw_server: RawServer,
) -> None:
    def handler(seen: Seen) -> Reply:
        ids = seen.json()
        assert isinstance(ids, list)
        pad = "x" * 20_000  # a heavy polygon's worth per annotation
        return Reply(body=[{"id": i, "asset_id": "a", "attributes": {"p": pad}} for i in ids])

    raw_server.set(handler)
    ids = [f"an{i}" for i in range(30)]
    async with aiohttp.ClientSession() as session:
        api = client(session, raw_server.url, max_body=300_000)
        answer = await api.annotation_dicts(DV, ids)
        assert [a["id"] for a in answer.annotations] == ids
        assert [len(s.json()) for s in raw_server.seen] == [30, 10, 10, 10]  # type: ignore[arg-type]
        raw_server.seen.clear()
        many = [f"an{i}" for i in range(100)]
        with pytest.raises(AnswerTooLarge):
            await client(session, raw_server.url, max_body=100_000).annotation_dicts(DV, many)
    # A chunk of 10 still too large ends it: not all ten small chunks are asked for.
    assert len(raw_server.seen) <= 1 + _CHUNK_CONCURRENCY < 1 + 10
