"""A small HTTP/1.1 client for object storage GETs: keep-alive, flow control, no frills.

Why not aiohttp here (it stays for the platform API): a storage GET of a 64 KiB object through
``aiohttp.ClientSession`` costs about 0.4 ms of CPU on the event loop (request and response
objects, header multidicts, tracing hooks, cookie jar, timers, payload streams); the transfer of
the bytes themselves costs less. Measured on the benchmark machine against nginx on loopback,
2,000 x 64 KiB: the transfer core on aiohttp reached ~555 files/s, the same loop on raw asyncio
protocols ~6,700 files/s (hash, write and rename included). Mirroring small files is exactly
that loop, so the storage side gets this client: one ``GET`` at a time per connection,
``Content-Length``, chunked and read-until-close bodies, ``Connection: close``, redirects,
TLS, connect/read/stall timeouts, a per-host and a total connection limit, and back-pressure
(``pause_reading`` above a high-water mark, so memory per connection stays bounded).

Errors are this module's own (:class:`HttpError` and below, :class:`ReadTimeout`, a
:class:`TimeoutError`); :func:`engine.transfer.wire.translate` maps them to the engine's tree.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import cast

__all__ = [
    "BodyError",
    "ConnectError",
    "ConnectTimeout",
    "Headers",
    "HttpError",
    "ProtocolError",
    "ReadTimeout",
    "Response",
    "StorageHttp",
]

_MAX_HEAD = 64 * 1024
_MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_USER_AGENT = "assetsync"


class HttpError(Exception):
    """The storage connection failed (refused, reset, cut, or spoke something else)."""


class ConnectError(HttpError):
    """The TCP (or TLS) connection could not be established."""


class ConnectTimeout(HttpError, TimeoutError):
    """The TCP (or TLS) connection was not established within the connect timeout."""


class ProtocolError(HttpError):
    """The server's answer is not HTTP/1.x as we can read it."""


class BodyError(HttpError):
    """The body ended before its announced end (connection cut, bad chunk framing)."""


class ReadTimeout(TimeoutError):
    """Nothing arrived for the read (headers) or stall (body) timeout."""


class Headers(Mapping[str, str]):
    """Response headers, case-insensitive; repeated fields joined with ``", "``."""

    __slots__ = ("_items",)

    def __init__(self, items: dict[str, str]) -> None:
        self._items = items

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()]

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return self._items.get(key.lower(), default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


class _Protocol(asyncio.Protocol):
    """Receives bytes into a queue of buffers; the reader waits on one future at a time."""

    def __init__(self, high_water: int) -> None:
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.eof = False
        self.error: BaseException | None = None
        self.transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._high = high_water
        self._low = high_water // 4
        self._paused = False
        self.hold_after_head = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: no isinstance check here.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > self._high and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        elif self.hold_after_head and data.find(b"\r\n\r\n") >= 0:
            # The head is in: read no further until told (Response.hold_body). uvloop reads a
            # ready socket up to 32 times per wake-up, so without this a body meant for a pump
            # thread arrived here by megabytes (4-7% of a 1 GiB download, measured) before the
            # task that reads the head even ran.
            self.hold_after_head = False
            self.hold()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close our side too: HTTP/1.1 has nothing more to say

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if exc is not None:
            self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, silence: float) -> None:
        """Until more bytes, the end, or ``silence`` seconds without either."""
        if self.chunks or self.eof:
            return
        # Nothing buffered: whoever paused (high water, a held body) is past it.
        self.take_back()
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        # A timer handle, not asyncio.timeout(): one per wait on the hot path, cheaply.
        timer = loop.call_later(silence, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def take(self, limit: int) -> bytes:
        """Up to ``limit`` buffered bytes (the first buffer alone when it is big enough)."""
        first = self.chunks[0]
        if len(first) <= limit:
            self.chunks.popleft()
            data = first
            # Join small neighbours: fewer, larger pieces downstream.
            while self.chunks and len(data) + len(self.chunks[0]) <= limit and len(data) < 65536:
                data += self.chunks.popleft()
        else:
            data = first[:limit]
            self.chunks[0] = first[limit:]
        self.buffered -= len(data)
        if self._paused and self.buffered <= self._low and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def hold(self) -> None:
        """Stop reading for now: a blocking reader may take the socket over next, and bytes
        the loop reads meanwhile would only have to be written by the loop."""
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def hand_over(self) -> list[bytes]:
        """Stop reading from the socket and give up what was buffered: a blocking reader takes
        the socket over (see :meth:`Response.socket_body`)."""
        assert self.transport is not None
        self.hold()
        chunks = list(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        return chunks

    def take_back(self) -> None:
        """Reading resumes (the blocking reader is done, or nothing is buffered)."""
        if self._paused and self.transport is not None and not self.transport.is_closing():
            self._paused = False
            self.transport.resume_reading()

    def push_back(self, data: bytes) -> None:
        if data:
            self.chunks.appendleft(data)
            self.buffered += len(data)

    def split_head(self) -> bytes | None:
        """The header block, when it sits whole in the first buffer (the common case: no join,
        one slice for the body bytes that came with it)."""
        first = self.chunks[0]
        end = first.find(b"\r\n\r\n", 0, _MAX_HEAD)
        if end < 0:
            return None
        self.chunks.popleft()
        self.buffered -= len(first)
        self.push_back(first[end + 4 :])
        return first[:end]


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(ReadTimeout("no bytes within the timeout"))


@dataclass(frozen=True, slots=True)
class _Target:
    scheme: str
    host: str
    port: int
    request_target: str  # path and query, byte for byte as given (the signature covers them)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def _target(url: str) -> _Target:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL")
    port = parts.port or (443 if scheme == "https" else 80)
    path = parts.path or "/"
    if any(c in path + parts.query for c in "\r\n\0 "):
        raise ValueError("URL has characters that cannot go on a request line")
    target = f"{path}?{parts.query}" if parts.query else path
    return _Target(scheme, parts.hostname, port, target)


class _Connection:
    __slots__ = ("key", "protocol", "reused")

    def __init__(self, key: tuple[str, str, int], protocol: _Protocol) -> None:
        self.key = key
        self.protocol = protocol
        self.reused = False

    @property
    def usable(self) -> bool:
        p = self.protocol
        return not p.eof and p.transport is not None and not p.transport.is_closing()

    def close(self) -> None:
        if self.protocol.transport is not None:
            self.protocol.transport.close()


class Response:
    """One answer: status and headers now, the body on demand, the connection back on release."""

    def __init__(
        self,
        client: StorageHttp,
        connection: _Connection,
        status: int,
        reason: str,
        headers: Headers,
        version: str,
        read_timeout: float,
        head_request_body: bool,
    ) -> None:
        self._client = client
        self._conn: _Connection | None = connection
        self.status = status
        self.reason = reason
        self.headers = headers
        self.read_timeout = read_timeout
        connection_header = (headers.get("connection") or "").lower()
        self._keep_alive = (
            "close" not in connection_header
            if version == "HTTP/1.1"
            else "keep-alive" in connection_header
        )
        self._chunked = "chunked" in (headers.get("transfer-encoding") or "").lower()
        self._remaining: int | None = None  # bytes left in the body (or in the current chunk)
        self._done = False
        if not head_request_body or status in (204, 304) or 100 <= status < 200:
            self._remaining, self._done = 0, True
        elif not self._chunked:
            length = headers.get("content-length")
            if length is not None:
                try:
                    self._remaining = int(length)
                except ValueError:
                    raise ProtocolError(f"bad Content-Length {length[:40]!r}") from None
                if self._remaining < 0:
                    raise ProtocolError("negative Content-Length")
                self._done = self._remaining == 0
            else:
                self._keep_alive = False  # the body runs to the end of the connection
        else:
            self._remaining = 0  # no chunk open yet
        if self._done:
            self._finish()

    @property
    def content(self) -> Response:
        """The body reader (aiohttp's spelling, so callers read ``response.content.read``)."""
        return self

    @property
    def content_length(self) -> int | None:
        if self._chunked:
            return None
        value = self.headers.get("content-length")
        return int(value) if value is not None and value.isdigit() else None

    def _raw_remaining(self) -> int | None:
        """Bytes left in a body a blocking reader could take from the socket as they are
        (plain TCP, known length, not finished); None for any other body."""
        conn = self._conn
        if conn is None or self._done or self._chunked or conn.key[0] != "http":
            return None
        return self._remaining

    def hold_body(self, at_least: int) -> None:
        """Stop the event loop reading a plain-HTTP body of known length of at least
        ``at_least`` bytes; reading it (or :meth:`socket_body`) resumes."""
        conn = self._conn
        if conn is None:
            return
        protocol = conn.protocol
        protocol.hold_after_head = False
        remaining = self._raw_remaining()
        if remaining is not None and remaining >= at_least:
            protocol.hold()
        else:
            protocol.take_back()  # not a body for a pump: the loop reads on

    def socket_body(self) -> tuple[int, list[bytes], int] | None:
        """Hand the rest of the body to a blocking reader on another thread: the socket's
        descriptor, the body bytes already received, and how many bytes remain after them.

        Only for a plain-TCP body of known length (TLS records and chunk framing need the
        event loop's decoding); None otherwise. The event loop stops reading the socket until
        :meth:`socket_body_done` (all bytes were read) or :meth:`release` (they were not: the
        connection is closed).
        """
        conn = self._conn
        remaining = self._raw_remaining()
        if conn is None or remaining is None or not conn.usable:
            return None
        transport = conn.protocol.transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        if sock is None:
            return None
        chunks = conn.protocol.hand_over()
        have = sum(len(chunk) for chunk in chunks)
        if have > remaining:  # more than the body: not ours to take (never on HTTP/1.1)
            conn.protocol.chunks.extend(chunks)
            conn.protocol.buffered = have
            conn.protocol.take_back()
            return None
        return sock.fileno(), chunks, remaining - have

    def socket_body_done(self) -> None:
        """The blocking reader read the body to its last byte: the connection is reusable."""
        conn = self._conn
        assert conn is not None
        self._remaining = 0
        self._done = True
        conn.protocol.take_back()
        self._finish()

    def set_read_timeout(self, seconds: float) -> None:
        """From now on a read may wait this long (the stall timeout once headers are in)."""
        self.read_timeout = seconds

    async def _fill(self) -> _Protocol:
        conn = self._conn
        if conn is None:
            raise BodyError("the response was released")
        protocol = conn.protocol
        if not protocol.chunks:
            await protocol.wait(self.read_timeout)
        if not protocol.chunks and protocol.eof:
            if protocol.error is not None:
                raise BodyError(f"connection lost: {protocol.error}")
            raise BodyError("connection closed")
        return protocol

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes of the body (what is buffered, at least one); ``b""`` at the end."""
        if self._done:
            return b""
        limit = n if n > 0 else 1 << 30
        if self._chunked:
            return await self._read_chunked(limit)
        if self._remaining is None:  # until the connection closes
            conn = self._conn
            assert conn is not None
            protocol = conn.protocol
            if not protocol.chunks:
                await protocol.wait(self.read_timeout)
            if not protocol.chunks:
                if protocol.error is not None:
                    raise BodyError(f"connection lost: {protocol.error}")
                self._done = True
                self._finish()
                return b""
            return protocol.take(limit)
        protocol = await self._fill()
        data = protocol.take(min(limit, self._remaining))
        self._remaining -= len(data)
        if self._remaining == 0:
            self._done = True
            self._finish()
        return data

    async def readchunk(self) -> tuple[bytes, bool]:
        """The next piece of the body as received; ``(b"", False)`` at its end."""
        return await self.read(1 << 30), False

    async def _line(self) -> bytes:
        """One CRLF-terminated line of chunk framing (without the CRLF)."""
        conn = self._conn
        assert conn is not None
        protocol = conn.protocol
        pending = b""
        while True:
            if protocol.chunks:
                pending += protocol.take(4096)
                end = pending.find(b"\r\n")
                if end >= 0:
                    protocol.push_back(pending[end + 2 :])
                    return pending[:end]
                if len(pending) > 4096:
                    raise BodyError("chunk header too long")
                continue
            await self._fill()

    async def _read_chunked(self, limit: int) -> bytes:
        assert self._remaining is not None
        if self._remaining == 0:
            line = await self._line()
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BodyError("bad chunk size") from None
            if size == 0:
                while await self._line():  # trailers, up to the empty line
                    pass
                self._done = True
                self._finish()
                return b""
            self._remaining = size
        protocol = await self._fill()
        data = protocol.take(min(limit, self._remaining))
        self._remaining -= len(data)
        if self._remaining == 0 and await self._line() != b"":
            raise BodyError("chunk not followed by CRLF")
        return data

    def _finish(self) -> None:
        """The body is complete: the connection goes back to the pool (or is closed)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._keep_alive and not conn.protocol.chunks:
            self._client._put_back(conn)
        else:
            self._client._discard(conn)

    def release(self) -> None:
        """Done with this response: an unread body means the connection cannot be reused."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._client._discard(conn)

    close = release


class StorageHttp:
    """A pool of keep-alive HTTP/1.1 connections to storage hosts.

    ``limit`` bounds connections in use overall, ``limit_per_host`` those to one host; a request
    waits for a place (that wait is not part of any timeout, as in aiohttp).
    """

    def __init__(
        self,
        *,
        limit: int = 100,
        limit_per_host: int = 32,
        connect_timeout: float = 10.0,
        high_water: int = 4 * 1024 * 1024,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        # 0 means "no limit", as in aiohttp's connector.
        self._limit = asyncio.Semaphore(limit) if limit > 0 else None
        self._limit_per_host = limit_per_host if limit_per_host > 0 else 1 << 30
        self._hosts: dict[tuple[str, str, int], asyncio.Semaphore] = {}
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._connect_timeout = connect_timeout
        self._high_water = high_water
        self._ssl = ssl_context
        self._closed = False
        self.connections_opened = 0

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def get(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        read_timeout: float,
        hold_from: int | None = None,
    ) -> Response:
        """``GET url`` and the response once its headers arrived (redirects followed).

        ``hold_from``: a plain-HTTP body of at least this many bytes is not read further
        until asked for (see :meth:`Response.socket_body`)."""
        for _ in range(_MAX_REDIRECTS + 1):
            target = _target(url)
            response = await self._request(target, headers, read_timeout, hold_from is not None)
            if hold_from is not None:
                response.hold_body(hold_from)
            location = response.headers.get("location")
            if response.status not in _REDIRECTS or location is None:
                return response
            response.release()
            url = urllib.parse.urljoin(url, location)
        raise ProtocolError("too many redirects")

    async def _request(
        self, target: _Target, headers: Mapping[str, str], read_timeout: float, hold: bool
    ) -> Response:
        host_limit = self._hosts.get(target.key)
        if host_limit is None:
            host_limit = self._hosts[target.key] = asyncio.Semaphore(self._limit_per_host)
        lines = [f"GET {target.request_target} HTTP/1.1", f"Host: {target.host_header}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"User-Agent: {_USER_AGENT}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        await host_limit.acquire()
        if self._limit is not None:
            try:
                await self._limit.acquire()
            except BaseException:
                host_limit.release()
                raise
        try:
            for _ in range(3):  # a pooled connection the server closed meanwhile: try another
                conn = await self._connection(target)
                try:
                    return await self._exchange(
                        conn, request, read_timeout, hold and target.scheme == "http"
                    )
                except _StaleConnection:
                    continue
            raise HttpError("the server keeps closing connections before answering")
        except BaseException:
            self._release_slot(target.key)
            raise

    async def _connection(self, target: _Target) -> _Connection:
        idle = self._idle.get(target.key)
        while idle:
            conn = idle.pop()
            if conn.usable:
                conn.reused = True
                return conn
            conn.close()
        loop = asyncio.get_running_loop()
        ssl_context = self._ssl_context() if target.scheme == "https" else None
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Protocol(self._high_water),
                    target.host,
                    target.port,
                    ssl=ssl_context,
                    server_hostname=target.host if ssl_context else None,
                ),
                self._connect_timeout,
            )
        except TimeoutError:
            raise ConnectTimeout(f"connect to {target.host}:{target.port} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"cannot connect to {target.host}:{target.port}: {exc}") from None
        self.connections_opened += 1
        return _Connection(target.key, protocol)

    async def _exchange(
        self, conn: _Connection, request: bytes, read_timeout: float, hold: bool
    ) -> Response:
        protocol = conn.protocol
        assert protocol.transport is not None
        try:
            protocol.hold_after_head = hold
            protocol.transport.write(request)
            while True:
                status, reason, version, headers = await self._read_head(conn, read_timeout)
                if 100 <= status < 200 and status != 101:
                    continue  # 100 Continue and friends precede the real answer
                return Response(self, conn, status, reason, headers, version, read_timeout, True)
        except BaseException:
            conn.close()
            raise

    async def _read_head(
        self, conn: _Connection, read_timeout: float
    ) -> tuple[int, str, str, Headers]:
        protocol = conn.protocol
        head = b""
        while True:
            if protocol.chunks and not head:
                block = protocol.split_head()
                if block is not None:
                    return _parse_head(block)
            if protocol.chunks:
                head += protocol.take(_MAX_HEAD)
                end = head.find(b"\r\n\r\n")
                if end >= 0:
                    protocol.push_back(head[end + 4 :])
                    return _parse_head(head[:end])
                if len(head) > _MAX_HEAD:
                    raise ProtocolError("response headers too large")
                continue
            if protocol.eof:
                if not head and conn.reused:
                    raise _StaleConnection
                if protocol.error is not None:
                    raise BodyError(f"connection lost before the answer: {protocol.error}")
                raise BodyError("connection closed before the answer")
            await protocol.wait(read_timeout)

    def _release_slot(self, key: tuple[str, str, int]) -> None:
        self._hosts[key].release()
        if self._limit is not None:
            self._limit.release()

    def _put_back(self, conn: _Connection) -> None:
        self._release_slot(conn.key)
        if self._closed or not conn.usable:
            conn.close()
            return
        self._idle.setdefault(conn.key, []).append(conn)

    def _discard(self, conn: _Connection) -> None:
        self._release_slot(conn.key)
        conn.close()

    def close(self) -> None:
        """Close idle connections; responses still open close when released."""
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


class _StaleConnection(Exception):
    """A reused connection was closed by the server before it answered: try a fresh one."""


def _parse_head(head: bytes) -> tuple[int, str, str, Headers]:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise ProtocolError("undecodable headers") from None
    lines = text.split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not code.isdigit() or len(code) != 3:
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:60]!r}")
    items: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ProtocolError(f"malformed header line: {line[:60]!r}")
        key = name.lower()
        value = value.strip()
        items[key] = f"{items[key]}, {value}" if key in items else value
    return int(code), reason, version, Headers(items)
