"""What the storage client refuses: ambiguous or malformed answers, unbounded heads and
framing, answers nobody asked for, and redirects it must not follow.

Each answer here was accepted by the hand parser the client had before llhttp: a body stored cut
or with the wrong bytes, or a request that never ended. A raw socket server sends exactly the
bytes under test.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
import trustme

from engine.transfer.http1 import (
    MAX_HEADERS,
    BodyError,
    ProtocolError,
    ReadTimeout,
    RedirectError,
    StorageHttp,
)
from tests.transfer.test_http1 import ok, read_all, serve

GUARD = 20  # seconds: a hang guard, far above what any case needs


async def answer_of(reply: bytes, read_timeout: float = 5) -> bytes:
    """The body the client reads for ``reply`` (the server then closes)."""
    async with serve(lambda n, req: [reply, None]) as base:
        http = StorageHttp()
        try:
            response = await http.get(f"{base}/x", {}, read_timeout=read_timeout)
            return await read_all(response)
        finally:
            http.close()


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    "reply",
    [
        # Content-Length beside Transfer-Encoding: the old client read 5 bytes of a 30-byte body.
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"1e\r\n" + b"a" * 30 + b"\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1_0\r\n\r\nhelloworld",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"HTTP/1.banana 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/2.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 099 Odd\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello",
        # Only exactly "chunked" is a transfer coding we read; the old client decoded this one.
        CHUNKED.replace(b"chunked", b"chunked, gzip") + b"5\r\nhello\r\n0\r\n\r\n",
        CHUNKED.replace(b"chunked", b"gzip, chunked") + b"5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\nxx",
        # More header fields than any object store sends.
        b"HTTP/1.1 200 OK\r\n"
        + b"".join(b"X-%d: v\r\n" % i for i in range(MAX_HEADERS + 1))
        + b"Content-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\n"
        + b"".join(b"X-%d: v\r\n" % i for i in range(8000))
        + b"Content-Length: 5\r\n\r\nhello",
        # A head over 64 KiB, in one field.
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"v" * (70 * 1024) + b"\r\nContent-Length: 5\r\n\r\nhello",
    ],
    ids=[
        "content-length-and-chunked",
        "content-length-plus",
        "content-length-underscore",
        "content-length-twice",
        "http-banana",
        "http-2",
        "status-099",
        "space-in-name",
        "space-before-colon",
        "chunked-then-gzip",
        "gzip-then-chunked",
        "gzip",
        "chunked-twice",
        "switching-protocols",
        "101-fields",
        "8000-fields",
        "70-KiB-field",
    ],
)
async def test_ambiguous_or_malformed_heads_are_refused(reply: bytes):
    with anyio.fail_after(GUARD), pytest.raises(ProtocolError):
        await answer_of(reply)


@pytest.mark.parametrize(
    "chunks",
    [
        b"-5\r\nhello\r\n0\r\n\r\n",  # the old client stopped here and recorded a cut body
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"1_0\r\nhelloworldhello!\r\n0\r\n\r\n",
        b"5 \r\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloX\r\n0\r\n\r\n",  # a chunk longer than its size
        b"5\r\nhello\r\n0\r\n" + b"X-T: 1\r\n" * 100_000 + b"\r\n",  # 100,000 trailer lines
        # A chunk extension that goes on (framing is counted per read, so past one read).
        b"5;" + b"e" * (1024 * 1024) + b"\r\nhello\r\n0\r\n\r\n",
    ],
    ids=[
        "size-negative",
        "size-hex-prefix",
        "size-underscore",
        "size-space",
        "chunk-too-long",
        "trailers-100000",
        "extension-1-MiB",
    ],
)
async def test_malformed_chunked_bodies_are_refused(chunks: bytes):
    with anyio.fail_after(GUARD), pytest.raises(BodyError):
        await answer_of(CHUNKED + chunks)


async def test_a_valid_chunked_body_with_a_few_trailers_still_reads():
    chunks = b"5;a=b\r\nhello\r\n6\r\n world\r\n0\r\nX-A: 1\r\nX-B: 2\r\n\r\n"
    assert await answer_of(CHUNKED + chunks) == b"hello world"


async def test_a_head_that_drips_ends_at_the_read_timeout_for_the_whole_head():
    # A field every 50 ms: each read is quick, the head never ends. The old client restarted
    # its timer on every read and waited as long as the server dripped (here 30 s).
    drip: list[bytes | float | None] = [b"HTTP/1.1 200 OK\r\n"]
    for i in range(600):
        drip += [b"X-%d: v\r\n" % i, 0.05]
    async with serve(lambda n, req: drip) as base:
        http = StorageHttp()
        with anyio.fail_after(GUARD), pytest.raises(ReadTimeout):
            await http.get(f"{base}/x", {}, read_timeout=1.0)
        http.close()


async def test_endless_100_continue_ends():
    continues: list[bytes | float | None] = []
    for _ in range(600):
        continues += [b"HTTP/1.1 100 Continue\r\n\r\n", 0.05]
    async with serve(lambda n, req: continues) as base:
        http = StorageHttp()
        with anyio.fail_after(GUARD), pytest.raises(ReadTimeout):
            await http.get(f"{base}/x", {}, read_timeout=1.0)
        http.close()
    # Sent all at once they are refused by count, long before any timeout.
    flood = b"HTTP/1.1 100 Continue\r\n\r\n" * 5000 + ok(b"late")
    with anyio.fail_after(GUARD), pytest.raises(ProtocolError):
        await answer_of(flood, read_timeout=60)


async def test_a_head_over_64_kib_in_small_reads_is_refused():
    steps: list[bytes | float | None] = [b"HTTP/1.1 200 OK\r\nX-Big: "]
    for _ in range(100):
        steps += [b"v" * 1024, 0.001]
    async with serve(lambda n, req: steps) as base:
        http = StorageHttp()
        with anyio.fail_after(GUARD), pytest.raises(ProtocolError, match="64 KiB"):
            await http.get(f"{base}/x", {}, read_timeout=10)
        http.close()


async def test_framing_alone_does_not_keep_a_body_alive():
    # Chunk-extension bytes trickle in, no body byte: the stall clock is not restarted by them.
    steps: list[bytes | float | None] = [CHUNKED + b"5;ext="]
    for _ in range(600):
        steps += [b"e", 0.05]
    async with serve(lambda n, req: steps) as base:
        http = StorageHttp()
        response = await http.get(f"{base}/x", {}, read_timeout=5)
        response.set_read_timeout(1.0)
        with anyio.fail_after(GUARD), pytest.raises(ReadTimeout):
            await read_all(response)
        http.close()


async def test_an_answer_nobody_asked_for_on_an_idle_connection_is_never_read_as_the_next():
    evil = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!"

    def script(n: int, request: bytes) -> list[bytes | float | None]:
        if n == 1:  # the answer, then (later) one more that nobody asked for
            return [ok(b"first"), 0.05, evil]
        return [ok(b"second")]

    async with serve(script) as base:
        http = StorageHttp()
        first = await http.get(f"{base}/a", {}, read_timeout=5)
        assert await read_all(first) == b"first"
        await asyncio.sleep(0.3)  # the unrequested answer has arrived by now
        second = await http.get(f"{base}/b", {}, read_timeout=5)
        assert await read_all(second) == b"second"
        assert http.connections_opened == 2
        http.close()


async def test_bytes_right_behind_an_answer_make_its_connection_unusable():
    evil = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!"

    def script(n: int, request: bytes) -> list[bytes | float | None]:
        return [ok(b"first") + evil] if n == 1 else [ok(b"second")]

    async with serve(script) as base:
        http = StorageHttp()
        first = await http.get(f"{base}/a", {}, read_timeout=5)
        assert await read_all(first) == b"first"
        second = await http.get(f"{base}/b", {}, read_timeout=5)
        assert await read_all(second) == b"second"
        assert http.connections_opened == 2
        http.close()


async def test_exactly_five_redirects_are_followed_and_a_sixth_is_not():
    def script(n: int, request: bytes) -> list[bytes | float | None]:
        path = request.split(b" ")[1]
        hop = int(path.split(b"/r")[1].split(b"?")[0]) if b"/r" in path else -1
        if hop == 0:
            return [ok(b"landed")]
        to = b"/r%d" % (hop - 1)
        return [b"HTTP/1.1 302 Found\r\nLocation: " + to + b"\r\nContent-Length: 0\r\n\r\n"]

    async with serve(script) as base:
        http = StorageHttp()
        response = await http.get(f"{base}/r5", {}, read_timeout=5)
        assert await read_all(response) == b"landed"
        with pytest.raises(RedirectError, match="more than 5"):
            await http.get(f"{base}/r6", {}, read_timeout=5)
        http.close()


async def test_a_redirect_to_another_scheme_is_refused():
    reply = b"HTTP/1.1 302 Found\r\nLocation: ftp://127.0.0.1/x\r\nContent-Length: 0\r\n\r\n"
    async with serve(lambda n, req: [reply]) as base:
        http = StorageHttp()
        with pytest.raises(RedirectError, match="ftp"):
            await http.get(f"{base}/x", {}, read_timeout=5)
        http.close()


@asynccontextmanager
async def tls_serve(reply: bytes, ca: trustme.CA, answers: int = 1) -> AsyncIterator[str]:
    """An https server answering ``reply`` to up to ``answers`` requests per connection."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(answers):
                await reader.readuntil(b"\r\n\r\n")
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def test_a_redirect_from_https_down_to_http_is_refused():
    ca = trustme.CA()
    client = ssl.create_default_context()
    ca.configure_trust(client)
    plain_hits: list[bytes] = []

    def plain(n: int, request: bytes) -> list[bytes | float | None]:
        plain_hits.append(request)
        return [ok(b"downgraded")]

    async with serve(plain) as http_base:
        down = f"HTTP/1.1 301 Moved\r\nLocation: {http_base}/x\r\nContent-Length: 0\r\n\r\n"
        async with tls_serve(down.encode(), ca) as https_base:
            http = StorageHttp(ssl_context=client)
            with pytest.raises(RedirectError, match="https to http"):
                await http.get(f"{https_base}/x", {}, read_timeout=5)
            http.close()
    assert plain_hits == []
