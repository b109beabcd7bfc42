"""The storage HTTP/1.1 client against a raw socket server that answers exactly as scripted.

The emulator covers what object stores do; these cover what HTTP/1.1 allows and a careless
client gets wrong: chunked framing, bodies that run to the end of the connection, keep-alive
reuse, a pooled connection the server closed, redirects, 1xx answers, malformed answers,
timeouts, and back-pressure.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from engine.transfer.http1 import (
    BodyError,
    ConnectError,
    ProtocolError,
    ReadTimeout,
    StorageHttp,
)


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


@asynccontextmanager
async def serve(script: Callable[[int, bytes], list[bytes | float | None]]) -> AsyncIterator[str]:
    """A server whose n-th request (over all connections) gets ``script(n, request)``:
    bytes are written, a float sleeps, ``None`` closes the connection."""
    count = 0
    requests: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        try:
            while True:
                try:
                    request = await _read_request(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                requests.append(request)
                count += 1
                for step in script(count, request):
                    if step is None:
                        writer.close()
                        return
                    if isinstance(step, float):
                        await asyncio.sleep(step)
                    else:
                        writer.write(step)
                        await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


def ok(body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def read_all(response) -> bytes:
    parts = []
    while chunk := await response.content.read(7):
        parts.append(chunk)
    return b"".join(parts)


async def test_keep_alive_reuses_one_connection():
    async with serve(lambda n, req: [ok(b"hello %d" % n)]) as base:
        http = StorageHttp()
        for n in (1, 2, 3):
            response = await http.get(f"{base}/obj?sig=a%2Fb", {}, read_timeout=5)
            assert response.status == 200
            assert await read_all(response) == b"hello %d" % n
        assert http.connections_opened == 1
        http.close()


async def test_request_line_keeps_the_query_byte_for_byte():
    seen: list[bytes] = []

    def script(n: int, request: bytes) -> list[bytes | float | None]:
        seen.append(request)
        return [ok(b"")]

    async with serve(script) as base:
        http = StorageHttp()
        response = await http.get(
            f"{base}/a%20b/c?X-Sig=ab%2Bcd%3D&x=1", {"Range": "bytes=0-9"}, read_timeout=5
        )
        assert response.status == 200
        http.close()
    first_line = seen[0].split(b"\r\n")[0]
    assert first_line == b"GET /a%20b/c?X-Sig=ab%2Bcd%3D&x=1 HTTP/1.1"
    assert b"\r\nRange: bytes=0-9\r\n" in seen[0]


async def test_chunked_body_with_extensions_and_trailers():
    body = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: yes\r\n\r\n"
    )
    async with serve(lambda n, req: [body] if n == 1 else [ok(b"next")]) as base:
        http = StorageHttp()
        response = await http.get(f"{base}/x", {}, read_timeout=5)
        assert response.content_length is None
        assert await read_all(response) == b"hello world"
        # The framing was consumed exactly: the connection is reusable.
        again = await http.get(f"{base}/y", {}, read_timeout=5)
        assert await read_all(again) == b"next"
        assert http.connections_opened == 1
        http.close()


async def test_chunked_body_cut_short_is_a_body_error():
    cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"
    async with serve(lambda n, req: [cut, None]) as base:
        http = StorageHttp()
        response = await http.get(f"{base}/x", {}, read_timeout=5)
        with pytest.raises(BodyError):
            await read_all(response)
        http.close()


async def test_body_without_length_runs_to_the_end_of_the_connection():
    reply = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it"
    async with serve(lambda n, req: [reply, None]) as base:
        http = StorageHttp()
        response = await http.get(f"{base}/x", {}, read_timeout=5)
        assert await read_all(response) == b"all of it"
        http.close()


async def test_content_length_body_cut_short_is_a_body_error():
    async with serve(
        lambda n, req: [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", None]
    ) as base:
        http = StorageHttp()
        response = await http.get(f"{base}/x", {}, read_timeout=5)
        with pytest.raises(BodyError):
            await read_all(response)
        http.close()


async def test_a_pooled_connection_closed_by_the_server_is_replaced_transparently():
    # The server answers once per connection, then closes it (as an idle timeout would).
    async with serve(
        lambda n, req: [ok(b"r%d" % n, "Connection: keep-alive\r\n"), 0.05, None]
    ) as base:
        http = StorageHttp()
        first = await http.get(f"{base}/a", {}, read_timeout=5)
        assert await read_all(first) == b"r1"
        await asyncio.sleep(0.2)  # the server has closed the pooled connection by now
        second = await http.get(f"{base}/b", {}, read_timeout=5)
        assert await read_all(second) == b"r2"
        assert http.connections_opened == 2
        http.close()


async def test_redirects_are_followed_and_bounded():
    def script(n: int, request: bytes) -> list[bytes | float | None]:
        if b"GET /final" in request:
            return [ok(b"landed")]
        return [
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /final?x=1\r\nContent-Length: 0\r\n\r\n"
        ]

    async with serve(script) as base:
        http = StorageHttp()
        response = await http.get(f"{base}/start", {}, read_timeout=5)
        assert await read_all(response) == b"landed"
        http.close()

    loop = b"HTTP/1.1 302 Found\r\nLocation: /again\r\nContent-Length: 0\r\n\r\n"
    async with serve(lambda n, req: [loop]) as base:
        http = StorageHttp()
        with pytest.raises(ProtocolError, match="redirects"):
            await http.get(f"{base}/again", {}, read_timeout=5)
        http.close()


async def test_informational_answers_are_skipped():
    reply = b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"real")
    async with serve(lambda n, req: [reply]) as base:
        http = StorageHttp()
        response = await http.get(f"{base}/x", {}, read_timeout=5)
        assert response.status == 200
        assert await read_all(response) == b"real"
        http.close()


@pytest.mark.parametrize(
    "reply",
    [
        b"SPDY/3 200 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
    ],
)
async def test_malformed_answers_are_protocol_errors(reply: bytes):
    async with serve(lambda n, req: [reply, None]) as base:
        http = StorageHttp()
        with pytest.raises(ProtocolError):
            await http.get(f"{base}/x", {}, read_timeout=5)
        http.close()


async def test_headers_are_case_insensitive_and_repeated_ones_joined():
    reply = b'HTTP/1.1 200 OK\r\nETag: "abc"\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 0\r\n\r\n'
    async with serve(lambda n, req: [reply]) as base:
        http = StorageHttp()
        response = await http.get(f"{base}/x", {}, read_timeout=5)
        assert response.headers.get("etag") == '"abc"'
        assert response.headers["ETAG"] == '"abc"'
        assert response.headers.get("X-A") == "1, 2"
        assert response.headers.get("missing") is None
        http.close()


async def test_silence_before_headers_and_inside_a_body_time_out():
    async with serve(lambda n, req: [5.0]) as base:
        http = StorageHttp()
        with pytest.raises(ReadTimeout):
            await http.get(f"{base}/x", {}, read_timeout=0.1)
        http.close()
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
    async with serve(lambda n, req: [head, 5.0]) as base:
        http = StorageHttp()
        response = await http.get(f"{base}/x", {}, read_timeout=5)
        response.set_read_timeout(0.1)  # the stall timeout once headers are in
        assert await response.content.read(100) == b"abc"
        with pytest.raises(ReadTimeout):
            await response.content.read(100)
        response.release()
        http.close()


async def test_connection_refused_is_a_connect_error():
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    http = StorageHttp(connect_timeout=2)
    with pytest.raises(ConnectError):
        await http.get(f"http://127.0.0.1:{port}/x", {}, read_timeout=1)


async def test_per_host_limit_queues_requests_and_releases_on_every_path():
    async with serve(lambda n, req: [0.05, ok(b"x")]) as base:
        http = StorageHttp(limit_per_host=2)
        in_use = 0
        peak = 0

        async def one() -> None:
            nonlocal in_use, peak
            response = await http.get(f"{base}/x", {}, read_timeout=5)
            in_use += 1
            peak = max(peak, in_use)
            await asyncio.sleep(0.01)
            in_use -= 1
            if await response.content.read(1):
                response.release()  # an unread rest: the slot comes back all the same

        await asyncio.gather(*(one() for _ in range(8)))
        assert peak <= 2
        # Every slot came back: two more requests run at once without waiting forever.
        await asyncio.wait_for(asyncio.gather(one(), one()), 5)
        http.close()


async def test_a_large_body_is_read_with_bounded_buffering():
    size = 16 * 1024 * 1024
    payload = bytes(range(256)) * (size // 256)

    async with serve(lambda n, req: [ok(payload)]) as base:
        http = StorageHttp(high_water=256 * 1024)
        response = await http.get(f"{base}/big", {}, read_timeout=5)
        received = 0
        digest = bytearray()
        while chunk := await response.content.read(64 * 1024):
            received += len(chunk)
            if len(digest) < 16:
                digest += chunk[:16]
            await asyncio.sleep(0)  # a slow reader: the transport must pause, not buffer it all
            conn = response._conn
            if conn is not None:
                # Paused above the high-water mark: at most one socket read beyond it.
                assert conn.protocol.buffered <= 256 * 1024 + 1024 * 1024
        assert received == size
        assert bytes(digest[:16]) == payload[:16]
        http.close()


async def test_invalid_urls_are_refused_before_any_connection():
    http = StorageHttp()
    for url in ("ftp://host/x", "http:///nohost", "http://h/a b", "http://h/a\r\nX: y"):
        with pytest.raises(ValueError, match="URL"):
            await http.get(url, {}, read_timeout=1)
    assert http.connections_opened == 0


async def test_a_held_body_waits_in_the_socket_until_read():
    """``hold_from``: once the head is in, the loop reads no more of a large body (a pump
    thread may take the socket over); reading it anyway resumes, and the connection is reused."""
    size = 16 * 1024 * 1024
    payload = bytes(range(256)) * (size // 256)

    async with serve(lambda n, req: [ok(payload if n == 1 else b"small")]) as base:
        http = StorageHttp()
        response = await http.get(f"{base}/big", {}, read_timeout=5, hold_from=1024 * 1024)
        await asyncio.sleep(0.2)  # the server keeps sending; the client must not take it in
        conn = response._conn
        assert conn is not None
        # At most what arrived together with the head: about one socket read (uvloop reads a
        # ready socket up to 32 times per wake-up unless told to stop at the head).
        assert conn.protocol.buffered <= 512 * 1024
        assert await read_all_fast(response) == payload
        # Below the threshold nothing is held: the body is read as usual.
        small = await http.get(f"{base}/small", {}, read_timeout=5, hold_from=1024 * 1024)
        assert await read_all(small) == b"small"
        assert http.connections_opened == 1
        http.close()


async def read_all_fast(response) -> bytes:
    parts = []
    while chunk := await response.content.read(1 << 20):
        parts.append(chunk)
    return b"".join(parts)


async def test_waits_of_one_pool_expire_each_at_its_own_deadline():
    # One timer serves the pool's waits: a later, shorter wait must move it earlier, and once
    # it fired, the longer waits left must still expire (and no earlier than their own time).
    async with serve(lambda n, req: [5.0]) as base:
        http = StorageHttp()
        loop = asyncio.get_running_loop()
        started = loop.time()
        long = asyncio.ensure_future(http.get(f"{base}/long", {}, read_timeout=1.5))
        await asyncio.sleep(0.05)
        short = asyncio.ensure_future(http.get(f"{base}/short", {}, read_timeout=0.2))
        with pytest.raises(ReadTimeout):
            await asyncio.wait_for(short, 10)
        assert not long.done()
        middle = asyncio.ensure_future(http.get(f"{base}/middle", {}, read_timeout=0.3))
        with pytest.raises(ReadTimeout):
            await asyncio.wait_for(middle, 10)
        with pytest.raises(ReadTimeout):
            await asyncio.wait_for(long, 10)
        # A deadline is never cut short (uvloop's timers may fire a millisecond early).
        assert loop.time() - started >= 1.5 - 0.002
        http.close()
