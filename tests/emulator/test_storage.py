"""The built-in storage: three signing styles, HTTP/1.1 object-store semantics, ranges."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from email.utils import formatdate
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import pytest

from engine.emulator import Emulator
from engine.emulator.ranges import http_date

from .conftest import Api, FakeClock, md5hex

pytestmark = pytest.mark.anyio

EXPIRED = {
    "s3": (403, "AccessDenied", "Request has expired"),
    "gcs": (400, "ExpiredToken", None),
    "azure": (403, "AuthenticationFailed", None),
}
SIGNATURE_PARAM = {"s3": "X-Amz-Signature", "gcs": "X-Goog-Signature", "azure": "sig"}


def _retouch(url: str, **changes: str | None) -> str:
    """The URL with query parameters changed (None removes one)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


@pytest.fixture(params=["s3", "gcs", "azure"])
async def styled(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[Emulator]:
    async with Emulator(assets=12, seed=3, signing=request.param, clock=clock) as emulator:
        yield emulator


async def _first_url(
    emu: Emulator, session: aiohttp.ClientSession, index: int = 0
) -> tuple[str, str]:
    api = Api(emu, session)
    items = await api.list_all(limit=100)
    item = [i for i in items if emu.dataset.expected(i["id"]).size > 100][index]
    return item["id"], item["data"]["presigned_url"]


async def test_each_style_valid_url_serves_the_object(
    styled: Emulator, session: aiohttp.ClientSession
) -> None:
    asset_id, url = await _first_url(styled, session)
    expected = styled.dataset.expected(asset_id)
    style = styled.dataset.record(styled.dataset.index_of(asset_id) or 0).style
    assert f"/{style}/" in url
    assert SIGNATURE_PARAM[style] in url
    async with session.get(url) as response:
        body = await response.read()
        assert response.status == 200
        assert response.headers["Accept-Ranges"] == "bytes"
        assert int(response.headers["Content-Length"]) == expected.size
        assert response.headers["ETag"] == f'"{expected.md5}"'
        assert response.headers["Last-Modified"] == http_date(expected.last_modified)
        assert response.headers["Content-Type"] == expected.content_type
    assert hashlib.sha256(body).hexdigest() == expected.sha256
    assert body == styled.dataset.content(expected.data_id)
    assert styled.counters.storage_bytes_for(expected.data_id) == expected.size


async def test_each_style_expired_url_gets_the_style_answer(
    styled: Emulator, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    _, url = await _first_url(styled, session)
    style = urlsplit(url).path.split("/")[1]
    clock.advance(3600 + 1)
    async with session.get(url) as response:
        text = await response.text()
        status, code, message = EXPIRED[style]
        assert response.status == status
        assert response.headers["Content-Type"].startswith("application/xml")
        assert f"<Code>{code}</Code>" in text
        if message:
            assert f"<Message>{message}</Message>" in text


async def test_url_ttl_change_applies_to_urls_signed_afterwards(
    styled: Emulator, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    _, long_url = await _first_url(styled, session)
    styled.faults.url_ttl = 5.0
    _, short_url = await _first_url(styled, session)
    clock.advance(6)
    async with session.get(short_url) as response:
        assert response.status in (400, 403)
    async with session.get(long_url) as response:
        assert response.status == 200


@pytest.mark.parametrize(
    "change",
    ["signature", "expires", "date", "path", "extra", "drop-signature"],
)
async def test_each_style_tampered_url_is_403(
    styled: Emulator, session: aiohttp.ClientSession, change: str
) -> None:
    _, url = await _first_url(styled, session)
    style = urlsplit(url).path.split("/")[1]
    signature = SIGNATURE_PARAM[style]
    query = dict(parse_qsl(urlsplit(url).query))
    if change == "signature":
        value = query[signature]
        bad = _retouch(url, **{signature: ("0" if value[0] != "0" else "1") + value[1:]})
    elif change == "expires":
        key = {"s3": "X-Amz-Expires", "gcs": "X-Goog-Expires", "azure": "se"}[style]
        longer = "2099-01-01T00:00:00Z" if style == "azure" else "999999"
        bad = _retouch(url, **{key: longer})
    elif change == "date":
        key = {"s3": "X-Amz-Date", "gcs": "X-Goog-Date", "azure": "st"}[style]
        bad = _retouch(url, **{key: query[key].replace("2", "3", 1)})
    elif change == "path":
        other = styled.dataset.expected(list(styled.dataset.asset_ids())[-1]).object_name
        parts = urlsplit(url)
        prefix = parts.path.rsplit("/", 2)[0]
        bad = urlunsplit(parts._replace(path=f"{prefix}/{other}"))
        assert other not in url
    elif change == "extra":
        bad = url + "&response-content-type=text%2Fhtml"
    else:
        bad = _retouch(url, **{signature: None})
    async with session.get(bad) as response:
        text = await response.text()
        assert response.status == 403, text
        assert "<Error><Code>" in text
    assert styled.counters.storage_bytes == 0


async def test_unknown_object_with_a_valid_signature_is_404(emu: Emulator, session) -> None:
    missing = f"{emu.datalake_id}/00000000-0000-4000-8000-000000000000.jpg"
    url = emu._signer.sign("s3", missing, emu.now(), 60)  # a correctly signed URL for no object
    async with session.get(url) as response:
        assert response.status == 404
        assert "<Code>NoSuchKey</Code>" in await response.text()


# ----- ranges ----------------------------------------------------------------------------------


@pytest.fixture
async def one(emu: Emulator, session: aiohttp.ClientSession) -> tuple[str, bytes, str]:
    """(url, content, etag) of an object of at least 1000 bytes."""
    api = Api(emu, session)
    for item in await api.list_all(limit=100):
        expected = emu.dataset.expected(item["id"])
        if expected.size >= 1000:
            content = emu.dataset.content(expected.data_id)
            return item["data"]["presigned_url"], content, expected.etag
    raise AssertionError("no object of 1000 bytes")


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 1),
        ("bytes=10-99", 10, 100),
        ("bytes=100-", 100, None),
        ("bytes=-50", -50, None),
        ("bytes=5-999999999", 5, None),  # end beyond the object is clamped
        ("bytes=-999999999", 0, None),  # suffix longer than the object: all of it
    ],
)
async def test_satisfiable_ranges_get_206(
    session: aiohttp.ClientSession, one: tuple[str, bytes, str], header: str, start: int, end
) -> None:
    url, content, etag = one
    size = len(content)
    begin = start if start >= 0 else size + start
    stop = size if end is None else end
    async with session.get(url, headers={"Range": header}) as response:
        body = await response.read()
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes {begin}-{stop - 1}/{size}"
        assert int(response.headers["Content-Length"]) == stop - begin
        assert response.headers["ETag"] == etag
    assert body == content[begin:stop]


@pytest.mark.parametrize("header", ["bytes=999999999-", "bytes=-0", "bytes=999999999-1000000000"])
async def test_unsatisfiable_ranges_get_416(
    session: aiohttp.ClientSession, one: tuple[str, bytes, str], header: str
) -> None:
    url, content, _ = one
    async with session.get(url, headers={"Range": header}) as response:
        assert response.status == 416
        assert response.headers["Content-Range"] == f"bytes */{len(content)}"
        assert "<Code>InvalidRange</Code>" in await response.text()


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "bytes=9-3", "items=0-5", "bytes=x-y"])
async def test_multi_and_invalid_ranges_get_the_whole_object(
    session: aiohttp.ClientSession, one: tuple[str, bytes, str], header: str
) -> None:
    url, content, _ = one
    async with session.get(url, headers={"Range": header}) as response:
        assert response.status == 200
        assert "Content-Range" not in response.headers
        assert await response.read() == content


async def test_if_range(session: aiohttp.ClientSession, one: tuple[str, bytes, str]) -> None:
    url, content, etag = one
    async with session.get(url) as response:
        last_modified = response.headers["Last-Modified"]
    cases = [
        (etag, 206),  # current ETag: the range applies
        ('"0123456789abcdef0123456789abcdef"', 200),  # stale ETag: the whole object
        (f"W/{etag}", 200),  # weak validators never match
        (last_modified, 206),  # the exact Last-Modified date
        (formatdate(0, usegmt=True), 200),  # another date
        ("garbage", 200),
    ]
    for validator, status in cases:
        headers = {"Range": "bytes=10-19", "If-Range": validator}
        async with session.get(url, headers=headers) as response:
            body = await response.read()
            assert response.status == status, validator
            assert body == (content[10:20] if status == 206 else content)


async def test_head_has_headers_and_no_body(
    session: aiohttp.ClientSession, one: tuple[str, bytes, str]
) -> None:
    url, content, etag = one
    async with session.head(url) as response:
        assert response.status == 200
        assert int(response.headers["Content-Length"]) == len(content)
        assert response.headers["ETag"] == etag
        assert await response.read() == b""
    async with session.head(url, headers={"Range": "bytes=0-9"}) as response:
        assert response.status == 206
        assert response.headers["Content-Length"] == "10"


async def test_empty_object(clock: FakeClock, session: aiohttp.ClientSession) -> None:
    async with Emulator(assets=60, empty_share=0.05, clock=clock) as emu:
        api = Api(emu, session)
        items = await api.list_all(limit=100)
        empty = [i for i in items if emu.dataset.expected(i["id"]).size == 0]
        assert empty
        url = empty[0]["data"]["presigned_url"]
        async with session.get(url) as response:
            assert response.status == 200
            assert response.headers["Content-Length"] == "0"
            assert response.headers["ETag"] == f'"{md5hex(b"")}"'
            assert await response.read() == b""
        async with session.get(url, headers={"Range": "bytes=0-"}) as response:
            assert response.status == 416
            assert response.headers["Content-Range"] == "bytes */0"


async def test_large_objects_stream_and_carry_multipart_etags(
    clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    part = 256 * 1024
    async with Emulator(
        assets=4, large_share=0.5, large_size=5 * part + 123, multipart_part_size=part, clock=clock
    ) as emu:
        api = Api(emu, session)
        items = await api.list_all(limit=100)
        large = [i for i in items if emu.dataset.expected(i["id"]).size == 5 * part + 123]
        assert len(large) == 2
        expected = emu.dataset.expected(large[0]["id"])
        content = emu.dataset.content(expected.data_id)
        md5s = b"".join(
            hashlib.md5(content[i : i + part], usedforsecurity=False).digest()
            for i in range(0, len(content), part)
        )
        combined = hashlib.md5(md5s, usedforsecurity=False).hexdigest()
        assert expected.etag == f'"{combined}-6"'
        sha = hashlib.sha256()
        async with session.get(large[0]["data"]["presigned_url"]) as response:
            assert response.headers["ETag"] == expected.etag
            async for chunk in response.content.iter_chunked(65536):
                sha.update(chunk)
        assert sha.hexdigest() == expected.sha256


async def test_from_dir_serves_real_files(
    tmp_path: Path, clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    files = {
        "a.jpg": b"\xff\xd8jpeg" * 1000,
        "sub/b.png": b"\x89PNG" + bytes(range(256)) * 300,
        "sub/deeper/c d é.jpg": b"x",
        "big.tiff": bytes(range(256)) * 8192,
    }
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    async with Emulator(from_dir=tmp_path, clock=clock) as emu:
        api = Api(emu, session)
        items = await api.list_all(limit=100)
        assert sorted(i["data"]["filename"] for i in items) == sorted(files)
        for item in items:
            content = files[item["data"]["filename"]]
            async with session.get(item["data"]["presigned_url"]) as response:
                assert await response.read() == content
                assert response.headers["ETag"] == f'"{md5hex(content)}"'
            async with session.get(
                item["data"]["presigned_url"], headers={"Range": "bytes=-1"}
            ) as response:
                assert response.status == 206
                assert await response.read() == content[-1:]
        assert emu.counters.storage_bytes == sum(len(c) + 1 for c in files.values())
        png = next(i for i in items if i["data"]["filename"].endswith(".png"))
        assert png["data"]["content_type"] == "image/png"
