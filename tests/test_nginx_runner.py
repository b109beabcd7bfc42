"""The nginx runner: the system nginx with secure_link on loopback, shaped like S3.

Not skipped when nginx is missing: CI installs it (.ci/run), and the emulator's external-storage
tests and the benchmarks depend on it, so a missing nginx must show up as a failure here.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from engine.emulator.nginx import NginxError, NginxServer, secure_link_md5, secure_link_url

NAMES = [
    "plain.bin",
    "with space/naïve ünïcödé 画像.jpg",
    "odd/a?b#c%d&e=f+g.txt",
]


def _content(name: str) -> bytes:
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (300_000 // len(seed) + 1))[: 300_000 - len(name)]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("served")
    for name in NAMES:
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_content(name))
    return base


@pytest.fixture(scope="module")
def nginx(root: Path) -> Iterator[NginxServer]:
    with NginxServer(root, secret="test-secret-123") as server:
        yield server


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 (http only)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_secure_link_url_format() -> None:
    expected_md5 = (
        base64.urlsafe_b64encode(hashlib.md5(b"1700000000/objects/a b/c.jpg s3cret").digest())  # noqa: S324
        .decode()
        .rstrip("=")
    )
    assert secure_link_md5("a b/c.jpg", "s3cret", 1700000000) == expected_md5
    url = secure_link_url("http://127.0.0.1:9/", "a b/c.jpg", "s3cret", 1700000000)
    assert url == f"http://127.0.0.1:9/objects/a%20b/c.jpg?md5={expected_md5}&expires=1700000000"


@pytest.mark.parametrize("name", NAMES)
def test_valid_url_serves_the_exact_bytes(nginx: NginxServer, name: str) -> None:
    status, headers, body = _get(nginx.signed_url(name, ttl=600))
    assert status == 200
    assert body == _content(name)
    assert int(headers["Content-Length"]) == len(body)
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["ETag"].startswith('"')


def test_tampered_urls_get_signature_does_not_match(nginx: NginxServer) -> None:
    good = nginx.signed_url("plain.bin", ttl=600)
    parts = urllib.parse.urlsplit(good)
    query = dict(urllib.parse.parse_qsl(parts.query))
    md5 = query["md5"]
    flipped = ("A" if md5[0] != "A" else "B") + md5[1:]
    later = str(int(query["expires"]) + 3600)
    tampered = [
        good.replace(f"md5={md5}", f"md5={flipped}"),
        good.replace(f"expires={query['expires']}", f"expires={later}"),  # extend the lifetime
        good.replace("/objects/plain.bin", "/objects/odd/a%3Fb%23c%25d%26e%3Df%2Bg.txt"),
        f"{nginx.base_url}/objects/plain.bin",  # unsigned
        f"{nginx.base_url}/objects/plain.bin?expires={query['expires']}",
    ]
    for url in tampered:
        status, headers, body = _get(url)
        assert status == 403, url
        assert headers["Content-Type"].startswith("application/xml")
        assert b"<Code>SignatureDoesNotMatch</Code>" in body
        assert b"<Error>" in body


def test_wrong_secret_is_rejected(nginx: NginxServer) -> None:
    url = secure_link_url(nginx.base_url, "plain.bin", "another-secret", int(time.time()) + 600)
    status, _, body = _get(url)
    assert status == 403
    assert b"SignatureDoesNotMatch" in body


def test_expired_url_gets_the_s3_expired_answer(nginx: NginxServer) -> None:
    status, headers, body = _get(nginx.signed_url("plain.bin", expires=int(time.time()) - 10))
    assert status == 403
    assert headers["Content-Type"].startswith("application/xml")
    assert b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>" in body


@pytest.mark.parametrize(
    ("range_header", "start", "end"),
    [("bytes=100-199", 100, 199), ("bytes=299000-", 299000, None), ("bytes=-50", None, None)],
)
def test_range_requests(
    nginx: NginxServer, range_header: str, start: int | None, end: int | None
) -> None:
    name = NAMES[1]
    content = _content(name)
    status, headers, body = _get(nginx.signed_url(name), {"Range": range_header})
    assert status == 206
    if start is None:
        expected = content[-50:]
        start = len(content) - 50
    else:
        expected = content[start : (end + 1 if end is not None else None)]
    assert body == expected
    last = start + len(expected) - 1
    assert headers["Content-Range"] == f"bytes {start}-{last}/{len(content)}"


def test_unsatisfiable_range_is_416(nginx: NginxServer) -> None:
    status, _, _ = _get(nginx.signed_url("plain.bin"), {"Range": "bytes=99999999-"})
    assert status == 416


def test_if_range_with_a_stale_etag_gets_the_whole_object(nginx: NginxServer) -> None:
    url = nginx.signed_url("plain.bin")
    status, _, body = _get(url, {"Range": "bytes=0-9", "If-Range": '"stale-etag"'})
    assert status == 200
    assert body == _content("plain.bin")


def test_plain_view_has_an_index_and_needs_no_signature(nginx: NginxServer) -> None:
    status, headers, body = _get(nginx.plain_url("with space/"))
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    href = urllib.parse.quote("naïve ünïcödé 画像.jpg")
    assert f'href="{href}"'.encode() in body
    status, _, body = _get(nginx.plain_url(NAMES[1]))
    assert status == 200
    assert body == _content(NAMES[1])


def test_unknown_paths_are_404(nginx: NginxServer) -> None:
    status, _, _ = _get(f"{nginx.base_url}/elsewhere/plain.bin")
    assert status == 404


def test_keep_alive_serves_many_requests_on_one_connection(nginx: NginxServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=10)
    try:
        for _ in range(50):
            path = urllib.parse.urlsplit(nginx.signed_url("plain.bin"))
            conn.request("GET", f"{path.path}?{path.query}")
            response = conn.getresponse()
            assert response.status == 200
            assert len(response.read()) == len(_content("plain.bin"))
    finally:
        conn.close()


async def test_async_context_manager_serves_and_stops(root: Path) -> None:
    async with NginxServer(root, worker_processes=2) as server:
        pid = server.pid
        assert pid is not None
        async with (
            aiohttp.ClientSession() as session,
            session.get(server.signed_url(NAMES[2]), headers={"Range": "bytes=0-99"}) as resp,
        ):
            assert resp.status == 206
            assert await resp.read() == _content(NAMES[2])[:100]
        port = server.port
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(OSError, match="refused"):
        http.client.HTTPConnection("127.0.0.1", port, timeout=2).connect()


def test_stop_removes_the_process_and_its_files(root: Path) -> None:
    server = NginxServer(root).start()
    pid = server.pid
    tmp = server._tmp
    assert pid is not None
    assert tmp is not None
    assert (tmp / "nginx.conf").is_file()
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not tmp.exists()


def test_two_servers_run_side_by_side(root: Path) -> None:
    with NginxServer(root) as first, NginxServer(root) as second:
        assert first.port != second.port
        for server in (first, second):
            status, _, _ = _get(server.signed_url("plain.bin"))
            assert status == 200
        # Each has its own secret: a link from one is refused by the other.
        status, _, _ = _get(first.signed_url("plain.bin").replace(first.base_url, second.base_url))
        assert status == 403


def test_plain_root_serves_another_folder_unsigned(root: Path, tmp_path: Path) -> None:
    (tmp_path / "by-name.jpg").write_bytes(b"named")
    with NginxServer(root, plain_root=tmp_path) as server:
        status, _, body = _get(server.plain_url("by-name.jpg"))
        assert (status, body) == (200, b"named")
        status, _, _ = _get(server.plain_url("plain.bin"))
        assert status == 404
        status, _, body = _get(server.signed_url("plain.bin"))
        assert (status, body) == (200, _content("plain.bin"))


def test_missing_binary_is_a_clear_error(root: Path) -> None:
    with pytest.raises(NginxError, match="install nginx"):
        NginxServer(root, binary="/nonexistent/nginx").start()


def test_unsafe_secret_is_refused(root: Path) -> None:
    with pytest.raises(ValueError, match="secret"):
        NginxServer(root, secret='x"; return 200; #')
