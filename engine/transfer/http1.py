"""A small HTTP/1.1 client for object storage GETs: keep-alive, flow control, no frills.

Why not aiohttp here (it stays for the platform API): a storage GET of a 64 KiB object through
``aiohttp.ClientSession`` costs about 0.4 ms of CPU on the event loop (request and response
objects, header multidicts, tracing hooks, cookie jar, timers, payload streams); the transfer of
the bytes themselves costs less. Measured on the benchmark machine against nginx on loopback,
2,000 x 64 KiB: the transfer core on aiohttp reached ~555 files/s, the same loop on raw asyncio
protocols ~6,700 files/s (hash, write and rename included). Mirroring small files is exactly
that loop, so the storage side gets this client: one ``GET`` at a time per connection,
``Content-Length``, chunked and read-until-close bodies, ``Connection: close``, redirects,
TLS, forward proxies (:mod:`engine.transfer.proxies`), connect/read/stall timeouts, a per-host
and a total connection limit, and back-pressure (``pause_reading`` above a high-water mark, so
memory per connection stays bounded).

Parsing is llhttp's (Node.js's parser, through ``httptools``), driven as uvicorn drives it:
bytes go to the parser as the loop receives them, and its callbacks fill the body queue, so
framing never reaches a reader. It refuses what a hand parser let through: ``Content-Length``
beside ``Transfer-Encoding``, chunk sizes such as ``-5``, ``0x5`` or ``1_0``, a
``Content-Length`` of ``+5``, ``HTTP/1.banana``, a space in a header name. On top of it this
module bounds what a server may send before the body (a head over 64 KiB, more than 100 header
fields, ``100 Continue`` for ever: all before a deadline of ``read_timeout`` for the whole
head), refuses any ``Transfer-Encoding`` but exactly ``chunked``, bounds trailers and chunk
framing, never reuses a connection on which a byte arrived that nobody asked for, and follows at
most 5 redirects, to http(s) only and never from https down to http.

A fresh parser per response: a body handed to a pump thread (:meth:`Response.socket_body`) is
read from the socket, not by the parser, which cannot skip bytes; the next response on the
connection starts from a clean parser instead.

Errors are this module's own (:class:`HttpError` and below, :class:`ReadTimeout`, a
:class:`TimeoutError`); :func:`engine.transfer.wire.translate` maps them to the engine's tree.
"""

from __future__ import annotations

import asyncio
import collections
import math
import select
import ssl
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import cast

import httptools

from engine.transfer.proxies import Proxies, Proxy

__all__ = [
    "BodyError",
    "ConnectError",
    "ConnectTimeout",
    "Headers",
    "HttpError",
    "ProtocolError",
    "ProxyError",
    "ReadTimeout",
    "RedirectError",
    "Response",
    "StorageHttp",
]

# What a server may send before the answer's body: bytes (1xx heads included), fields per head
# (trailers too), and 1xx answers.
MAX_HEAD = 64 * 1024
MAX_HEADERS = 100
# Bytes of chunk framing (sizes, extensions, trailers) without a body byte between them.
MAX_FRAMING = 64 * 1024
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_USER_AGENT = "assetsync"
_TRAILING = f"User-Agent: {_USER_AGENT}\r\n\r\n"
# Origins a pool remembers (beyond that it forgets them all and starts again).
_MAX_ORIGINS = 256


class HttpError(Exception):
    """The storage connection failed (refused, reset, cut, or spoke something else)."""


class ConnectError(HttpError):
    """The TCP (or TLS) connection could not be established."""


class ConnectTimeout(HttpError, TimeoutError):
    """The TCP (or TLS) connection was not established within the connect timeout."""


class ProxyError(ConnectError):
    """The proxy would not open a tunnel (``CONNECT`` answered with ``status``)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ProtocolError(HttpError):
    """The server's answer is not HTTP/1.x as we accept it (malformed, ambiguous, too big)."""


class RedirectError(ProtocolError):
    """A redirect we do not follow: too many, to another scheme, or from https to http."""


class BodyError(HttpError):
    """The body ended before its announced end, or its framing is malformed."""


class ReadTimeout(TimeoutError):
    """The head did not arrive within the read timeout, or no body byte within the stall
    timeout."""


class _Unrequested(Exception):
    """A second answer began on the connection: nobody asked for it."""


class Headers(Mapping[str, str]):
    """Response headers, case-insensitive; repeated fields joined with ``", "``.

    Kept as the parser gave them (bytes, names lower-cased) and decoded when asked for: a
    response's dozen fields are read a handful of times, so decoding all of them would cost
    more than the few look-ups do."""

    __slots__ = ("_items",)

    def __init__(self, items: dict[bytes, bytes]) -> None:
        self._items = items

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower().encode("latin-1")].decode("latin-1")

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        value = self._items.get(key.lower().encode("latin-1"))
        return default if value is None else value.decode("latin-1")

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower().encode("latin-1") in self._items

    def __iter__(self) -> Iterator[str]:
        return (name.decode("latin-1") for name in self._items)

    def __len__(self) -> int:
        return len(self._items)


def _fields(raw: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """Name (lower-cased) to value; a repeated field's values joined with ``", "``."""
    fields = {name.lower(): value for name, value in raw}
    if len(fields) < len(raw):
        fields = {}
        for name, value in raw:
            key = name.lower()
            known = fields.get(key)
            fields[key] = value if known is None else known + b", " + value
    return fields


class _Protocol(asyncio.Protocol):
    """One connection. Received bytes go straight through the current response's parser;
    its callbacks queue body bytes for the reader, who waits on one future at a time."""

    def __init__(
        self, high_water: int, loop: asyncio.AbstractEventLoop, deadlines: _Deadlines
    ) -> None:
        self.loop = loop
        self._deadlines = deadlines
        self.deadline = 0.0  # loop time by which the current wait must end
        self.transport: asyncio.Transport | None = None
        self._poller: select.poll | None = None
        self.eof = False
        self.lost: BaseException | None = None
        # A byte arrived that no request asked for: the connection is never reused.
        self.stray = False
        self._waiter: asyncio.Future[None] | None = None
        self._high = high_water
        self._low = high_water // 4
        self._paused = False
        self.parser: httptools.HttpResponseParser | None = None
        self.body: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self._reset(hold=False)

    # -- one response -------------------------------------------------------------------------

    def begin(self, hold: bool) -> None:
        """A request is about to go out: a fresh parser for its answer."""
        self._reset(hold)
        self.parser = httptools.HttpResponseParser(self)

    def _reset(self, hold: bool) -> None:
        self.hold_after_head = hold
        self.head_done = False
        self.complete = False
        self.failure: HttpError | None = None
        self.status = 0
        self.reason = b""
        # Header fields as received; once the head is in, the trailers (counted, not kept).
        self.raw: list[tuple[bytes, bytes]] = []
        self.headers: dict[bytes, bytes] = {}
        self.informational = 0
        self.head_fed = 0  # fed while the head was still incomplete
        self.feeding = 0  # the length of the read being parsed
        self.chunked = False
        self.until_close = False
        self.keep_alive = False
        self.received = 0  # bytes fed to this parser
        self.body_received = 0
        self.framing = 0

    def end(self) -> None:
        """The answer is done with (read, handed over or dropped): bytes from now on are
        stray until the next :meth:`begin`."""
        self.parser = None
        self.body.clear()
        self.buffered = 0

    # llhttp's callbacks (through httptools); an exception raised here stops the parser.

    def on_message_begin(self) -> None:
        if self.complete:
            raise _Unrequested

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        raw = self.raw
        if len(raw) >= MAX_HEADERS:
            if self.head_done:
                raise BodyError(f"more than {MAX_HEADERS} trailer fields")
            raise ProtocolError(f"more than {MAX_HEADERS} header fields")
        raw.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        assert parser is not None
        raw = self.raw
        # The head cannot be longer than what was fed for it; count it only when that is more
        # than the bound (a head and a large first read of the body together).
        if self.head_fed + self.feeding > MAX_HEAD:
            size = len(self.reason) + sum(len(name) + len(value) + 4 for name, value in raw)
            if self.head_fed + size > MAX_HEAD:
                raise ProtocolError(f"response head larger than {MAX_HEAD // 1024} KiB")
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise ProtocolError(f"not an HTTP/1.x answer: HTTP/{version}")
        status = parser.get_status_code()
        if not 100 <= status <= 599:
            raise ProtocolError(f"status {status} is not an HTTP status")
        self.raw = []
        if status < 200:
            # 100 Continue and friends precede the answer; their fields are not its fields.
            self.informational += 1
            if self.informational > MAX_HEADERS:
                raise ProtocolError(f"more than {MAX_HEADERS} informational (1xx) answers")
            self.reason = b""
            return
        headers = self.headers = _fields(raw)
        encoding = headers.get(b"transfer-encoding")
        if encoding is not None:
            # llhttp reads "chunked, gzip" to the end of the connection and "gzip, chunked" as
            # chunked; we store bytes as sent and decode no coding, so anything else is refused.
            if encoding.strip().lower() != b"chunked":
                raise ProtocolError(f"unsupported Transfer-Encoding {encoding[:40]!r}")
            self.chunked = True
        self.status = status
        self.until_close = not self.chunked and b"content-length" not in headers
        self.keep_alive = parser.should_keep_alive()
        self.head_done = True
        if self.hold_after_head:
            # The head is in: read no further until told (Response.hold_body). uvloop reads a
            # ready socket up to 32 times per wake-up, so without this a body meant for a pump
            # thread arrived here by megabytes (4-7% of a 1 GiB download, measured) before the
            # task that reads the head even ran.
            self.hold_after_head = False
            self.hold()
        self._wake()

    def on_body(self, data: bytes) -> None:
        self.body.append(data)
        n = len(data)
        self.buffered += n
        self.body_received += n
        if self.buffered > self._high and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.head_done:  # not the end of a 1xx
            self.complete = True
            self._wake()

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: no isinstance check here.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None or self.complete:
            self.stray = True
            return
        if self.failure is not None:
            return  # refused already: the connection is dropped once the reader sees it
        n = len(data)
        self.received += n
        self.feeding = n
        body_before = self.body_received
        head_before = self.head_done
        try:
            parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Unrequested):
                self.stray = True
            elif isinstance(cause, HttpError):
                self._fail(cause)
            else:
                self._fail(ProtocolError(f"cannot parse the answer: {cause!r}"))
            return
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("the server switched protocols unasked"))
            return
        except httptools.HttpParserError as exc:
            if self.head_done:
                self._fail(BodyError(f"malformed body framing: {exc}"))
            else:
                self._fail(ProtocolError(f"malformed answer: {exc}"))
            return
        if not self.head_done:
            self.head_fed += n
            if self.head_fed > MAX_HEAD:
                self._fail(ProtocolError(f"response head larger than {MAX_HEAD // 1024} KiB"))
        elif head_before and self.chunked and not self.complete:
            # Bytes of framing without body between them: a chunk extension or a trailer that
            # never ends is refused here (counted per read, so a few KiB more may pass).
            if self.body_received > body_before:
                self.framing = 0
            else:
                self.framing += n
                if self.framing > MAX_FRAMING:
                    self._fail(BodyError(f"over {MAX_FRAMING // 1024} KiB of chunk framing"))

    def eof_received(self) -> bool:
        self._ended(None)
        return False  # close our side too: HTTP/1.1 has nothing more to say

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.lost = exc
        self._ended(exc)

    def _ended(self, exc: Exception | None) -> None:
        self.eof = True
        if (
            self.parser is not None
            and self.head_done
            and not self.complete
            and self.until_close
            and exc is None
            and self.failure is None
        ):
            self.complete = True  # a body without length ends with the connection
        self._wake()

    # -- for the reader -----------------------------------------------------------------------

    def _fail(self, error: HttpError) -> None:
        self.failure = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, silence: float) -> None:
        """Until the parser has news (head, body bytes, the end, an error) or the connection
        ends; raises :class:`ReadTimeout` after ``silence`` seconds without any. Bytes of
        framing alone are no news: they do not restart the clock."""
        await self.wait_until(self.loop.time() + silence)

    async def wait_until(self, deadline: float) -> None:
        """:meth:`wait`, with a deadline in loop time."""
        waiter = self._waiter = self.loop.create_future()
        # Not a timer per wait (a uvloop timer handle, created, cancelled and closed, whose
        # callbacks take the GIL each time): the pool's one timer checks every deadline.
        deadlines = self._deadlines
        deadlines.add(self, deadline)
        try:
            await waiter
        finally:
            self._waiter = None
            deadlines.discard(self)

    def expire(self) -> None:
        """The deadline passed: the wait ends with :class:`ReadTimeout`."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ReadTimeout("nothing arrived within the timeout"))

    def take(self, limit: int) -> bytes:
        """Up to ``limit`` body bytes (the first buffer alone when it is big enough)."""
        body = self.body
        first = body[0]
        if len(first) <= limit:
            body.popleft()
            data = first
            # Join small neighbours: fewer, larger pieces downstream.
            while body and len(data) + len(body[0]) <= limit and len(data) < 65536:
                data += body.popleft()
        else:
            data = first[:limit]
            body[0] = first[limit:]
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
        """Stop reading from the socket and give up the body bytes received so far: a blocking
        reader takes the socket over (see :meth:`Response.socket_body`)."""
        self.hold()
        chunks = list(self.body)
        self.body.clear()
        self.buffered = 0
        return chunks

    def take_back(self) -> None:
        """Reading resumes (the blocking reader is done, or nothing is buffered)."""
        if self._paused and self.transport is not None and not self.transport.is_closing():
            self._paused = False
            self.transport.resume_reading()

    def quiet(self) -> bool:
        """Nothing waits unread in the socket, not even its end: safe for the next request.
        (An answer nobody asked for, sent on an idle connection, was once taken for the next
        object's body.)"""
        transport = self.transport
        if transport is None:
            return False
        poller = self._poller
        if poller is None:
            # Made once per connection: asked before every request on it.
            sock = transport.get_extra_info("socket")
            if sock is None:
                return True
            poller = self._poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN | select.POLLPRI)
        return not poller.poll(0)


class _Deadlines:
    """The read deadlines of a pool's waiting connections, kept by one timer.

    The timer is armed for the earliest deadline only when a new wait ends sooner than the
    one it is armed for; usually a new wait's deadline is later (same timeout, later start)
    and costs a set insertion. When the timer fires, waits past their deadline expire and it
    is armed again for the earliest left."""

    __slots__ = ("_armed_at", "_timer", "_waiting", "loop")

    # uvloop's timers have millisecond resolution and may fire up to a millisecond early.
    _SLACK = 0.001

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._waiting: set[_Protocol] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = math.inf

    def add(self, protocol: _Protocol, deadline: float) -> None:
        protocol.deadline = deadline
        self._waiting.add(protocol)
        if deadline < self._armed_at:
            self._arm(deadline)

    def discard(self, protocol: _Protocol) -> None:
        self._waiting.discard(protocol)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(when, self._sweep)
        self._armed_at = when

    def _sweep(self) -> None:
        self._timer = None
        self._armed_at = math.inf
        due = self.loop.time() + self._SLACK
        nearest = math.inf
        expired = []
        for protocol in self._waiting:
            deadline = protocol.deadline
            if deadline <= due:
                expired.append(protocol)
            elif deadline < nearest:
                nearest = deadline
        for protocol in expired:
            self._waiting.discard(protocol)
            protocol.expire()
        if nearest < math.inf:
            self._arm(nearest)


class _Origin:
    """``scheme://host:port`` of request targets, parsed once per pool: what connections
    are pooled by, the ``Host`` header, and the proxy requests to it go through."""

    __slots__ = ("authority", "host", "host_header", "key", "port", "proxy", "scheme")

    def __init__(self, scheme: str, host: str, port: int, proxy: Proxy | None) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self.key = (scheme, host, port)
        bracketed = f"[{host}]" if ":" in host else host
        self.authority = f"{bracketed}:{port}"
        default = 443 if scheme == "https" else 80
        self.host_header = bracketed if port == default else self.authority
        self.proxy = proxy


class _Target:
    __slots__ = ("origin", "request_target")

    def __init__(self, origin: _Origin, request_target: str) -> None:
        self.origin = origin
        # Path and query, byte for byte as given (the signature covers them).
        self.request_target = request_target

    @property
    def scheme(self) -> str:
        return self.origin.scheme

    @property
    def host(self) -> str:
        return self.origin.host

    @property
    def port(self) -> int:
        return self.origin.port

    @property
    def key(self) -> tuple[str, str, int]:
        return self.origin.key

    @property
    def authority(self) -> str:
        return self.origin.authority

    @property
    def host_header(self) -> str:
        return self.origin.host_header


def _split(url: str) -> tuple[str, str, int, str]:
    """Scheme, host, port and request target of ``url``, as :func:`urllib.parse.urlsplit`
    reads it; ValueError if it is not an http(s) URL that can go on a request line."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL")
    port = parts.port or (443 if scheme == "https" else 80)
    path = parts.path or "/"
    if any(c in path + parts.query for c in "\r\n\0 "):
        raise ValueError("URL has characters that cannot go on a request line")
    target = f"{path}?{parts.query}" if parts.query else path
    return scheme, parts.hostname, port, target


def _origin_end(url: str) -> int:
    """Where ``scheme://netloc`` ends in ``url`` (-1: not that shape)."""
    start = url.find("://")
    if start <= 0:
        return -1
    start += 3
    end = len(url)
    for sep in "/?#":
        at = url.find(sep, start)
        if 0 <= at < end:
            end = at
    return end


def _request_bytes(target: _Target, headers: Mapping[str, str], proxy: Proxy | None) -> bytes:
    """The ``GET``; through a proxy (plain-HTTP targets only: https ones are tunnelled) the
    request target is the absolute URL and the proxy's credentials go with it."""
    origin = target.origin
    if proxy is None:
        head = f"GET {target.request_target} HTTP/1.1\r\nHost: {origin.host_header}\r\n"
    else:
        head = f"GET http://{origin.host_header}{target.request_target} HTTP/1.1\r\n"
        if proxy.authorization is not None:
            head += f"Proxy-Authorization: {proxy.authorization}\r\n"
        head += f"Host: {origin.host_header}\r\n"
    for k, v in headers.items():
        head += f"{k}: {v}\r\n"
    return (head + _TRAILING).encode("latin-1")


class _Connection:
    __slots__ = ("key", "protocol", "reused")

    def __init__(self, key: tuple[str, str, int], protocol: _Protocol) -> None:
        self.key = key
        self.protocol = protocol
        self.reused = False

    @property
    def usable(self) -> bool:
        p = self.protocol
        return (
            not p.eof
            and not p.stray
            and p.failure is None
            and p.transport is not None
            and not p.transport.is_closing()
        )

    def close(self) -> None:
        self.protocol.end()
        if self.protocol.transport is not None:
            self.protocol.transport.close()


class Response:
    """One answer: status and headers now, the body on demand, the connection back on release."""

    def __init__(self, client: StorageHttp, connection: _Connection, read_timeout: float) -> None:
        p = connection.protocol
        self._client = client
        self._conn: _Connection | None = connection
        self.status = p.status
        self.reason = p.reason.decode("latin-1")
        self.headers = Headers(p.headers)
        self.read_timeout = read_timeout
        self._chunked = p.chunked
        self._done = False
        if p.complete and not p.body:
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
        """Bytes of the body not yet read by the caller when a blocking reader could take the
        rest from the socket as it is (plain TCP, known length, not finished); else None."""
        conn = self._conn
        length = self.content_length
        if conn is None or self._done or length is None or conn.key[0] != "http":
            return None
        p = conn.protocol
        return length - p.body_received + p.buffered

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
        connection is closed). The parser never sees the bytes the thread reads; the next
        answer on this connection gets a parser of its own.
        """
        conn = self._conn
        if conn is None or self._raw_remaining() is None or not conn.usable:
            return None
        p = conn.protocol
        if p.failure is not None:
            return None
        transport = p.transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        if sock is None:
            return None
        length = self.content_length
        assert length is not None
        chunks = p.hand_over()
        return sock.fileno(), chunks, length - p.body_received

    def socket_body_done(self) -> None:
        """The blocking reader read the body to its last byte: the connection is reusable."""
        conn = self._conn
        assert conn is not None
        conn.protocol.complete = True
        self._finish()

    def set_read_timeout(self, seconds: float) -> None:
        """From now on a read may wait this long (the stall timeout once headers are in)."""
        self.read_timeout = seconds

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes of the body (what is buffered, at least one); ``b""`` at the end."""
        if self._done:
            return b""
        conn = self._conn
        if conn is None:
            raise BodyError("the response was released")
        p = conn.protocol
        while not p.body:
            if p.failure is not None:
                raise p.failure
            if p.complete:
                self._finish()
                return b""
            if p.eof:
                if p.lost is not None:
                    raise BodyError(f"connection lost: {p.lost}")
                raise BodyError("connection closed before the body's end")
            p.take_back()  # whoever paused (high water, a held body) is past it
            await p.wait(self.read_timeout)
        data = p.take(n if n > 0 else 1 << 30)
        if p.complete and not p.body:
            self._finish()  # the last byte: the connection goes back at once
        return data

    async def readchunk(self) -> tuple[bytes, bool]:
        """The next piece of the body as received; ``(b"", False)`` at its end."""
        return await self.read(1 << 30), False

    def _finish(self) -> None:
        """The body is complete: the connection goes back to the pool (or is closed)."""
        self._done = True
        conn, self._conn = self._conn, None
        if conn is None:
            return
        p = conn.protocol
        reusable = p.keep_alive and p.complete and not p.body
        p.end()
        if reusable:
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
    waits for a place (that wait is not part of any timeout, as in aiohttp). ``proxies``: where
    requests go instead of their host; by default what the environment says
    (:meth:`Proxies.from_environment`, which raises ``ProxyConfigError`` for an unusable one).
    """

    def __init__(
        self,
        *,
        limit: int = 100,
        limit_per_host: int = 32,
        connect_timeout: float = 10.0,
        high_water: int = 4 * 1024 * 1024,
        ssl_context: ssl.SSLContext | None = None,
        proxies: Proxies | None = None,
    ) -> None:
        # 0 means "no limit", as in aiohttp's connector.
        self._limit = asyncio.Semaphore(limit) if limit > 0 else None
        self._limit_per_host = limit_per_host if limit_per_host > 0 else 1 << 30
        self._hosts: dict[tuple[str, str, int], asyncio.Semaphore] = {}
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._connect_timeout = connect_timeout
        self._high_water = high_water
        self._ssl = ssl_context
        self._proxies = Proxies.from_environment() if proxies is None else proxies
        self._closed = False
        self.connections_opened = 0
        self._origins: dict[str, _Origin] = {}
        self._deadlines: _Deadlines | None = None  # made with the first connection, on its loop

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
        """``GET url`` and the response once its head arrived (redirects followed).

        ``read_timeout`` bounds the wait for the whole head (1xx answers included), not one
        read. ``hold_from``: a plain-HTTP body of at least this many bytes is not read further
        until asked for (see :meth:`Response.socket_body`). The headers given go to every
        host a redirect leads to: give none that must stay with the first."""
        for redirects in range(MAX_REDIRECTS + 1):
            target = self._target(url)
            response = await self._request(target, headers, read_timeout, hold_from is not None)
            location = None
            if response.status in _REDIRECTS:
                location = response.headers.get("location")
            if location is None:
                if hold_from is not None:
                    response.hold_body(hold_from)
                return response
            response.release()
            if redirects == MAX_REDIRECTS:
                break
            url = urllib.parse.urljoin(url, location)
            scheme = urllib.parse.urlsplit(url).scheme.lower()
            if scheme not in ("http", "https"):
                raise RedirectError(f"redirect to a {scheme}: URL refused")
            if target.scheme == "https" and scheme == "http":
                raise RedirectError("redirect from https to http refused")
        raise RedirectError(f"more than {MAX_REDIRECTS} redirects")

    def _target(self, url: str) -> _Target:
        """The origin and request target of ``url`` (ValueError: not a usable URL).

        Parsing a URL's origin (host, port, its proxy) costs more than the rest of a small GET's
        bookkeeping, and every URL of a run has one of a few origins: each is parsed once, by
        :func:`urllib.parse.urlsplit`, and a URL made only of printable characters without
        spaces (whose split is then a matter of finding ``/``, ``?`` and ``#``) reuses it."""
        end = _origin_end(url)
        if end > 0 and url.isprintable() and " " not in url:
            origin = self._origins.get(url[:end])
            if origin is not None:
                rest = url[end:].partition("#")[0]
                path, _, query = rest.partition("?")
                path = path or "/"
                return _Target(origin, f"{path}?{query}" if query else path)
        scheme, host, port, request_target = _split(url)
        key = url[:end] if end > 0 else None
        origin = self._origins.get(key) if key is not None else None
        if origin is None or origin.key != (scheme, host, port):
            origin = _Origin(scheme, host, port, self._proxies.for_url(scheme, host))
            if key is not None and url[:end].isprintable() and " " not in url[:end]:
                if len(self._origins) >= _MAX_ORIGINS:
                    self._origins.clear()
                self._origins[key] = origin
        return _Target(origin, request_target)

    async def _request(
        self, target: _Target, headers: Mapping[str, str], read_timeout: float, hold: bool
    ) -> Response:
        proxy = target.origin.proxy
        # An https target goes through a CONNECT tunnel: the request inside is the usual one.
        request = _request_bytes(target, headers, proxy if target.scheme == "http" else None)
        host_limit = self._hosts.get(target.key)
        if host_limit is None:
            host_limit = self._hosts[target.key] = asyncio.Semaphore(self._limit_per_host)
        await host_limit.acquire()
        if self._limit is not None:
            try:
                await self._limit.acquire()
            except BaseException:
                host_limit.release()
                raise
        try:
            for _ in range(3):  # a pooled connection the server closed meanwhile: try another
                conn = await self._connection(target, proxy)
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

    async def _connection(self, target: _Target, proxy: Proxy | None) -> _Connection:
        idle = self._idle.get(target.key)
        while idle:
            conn = idle.pop()
            if conn.usable and conn.protocol.quiet():
                conn.reused = True
                return conn
            conn.close()
        where = f"{target.host}:{target.port}" + (f" through proxy {proxy}" if proxy else "")
        try:
            protocol = await asyncio.wait_for(self._open(target, proxy), self._connect_timeout)
        except TimeoutError:
            raise ConnectTimeout(f"connect to {where} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"cannot connect to {where}: {exc}") from None
        self.connections_opened += 1
        return _Connection(target.key, protocol)

    async def _open(self, target: _Target, proxy: Proxy | None) -> _Protocol:
        loop = asyncio.get_running_loop()
        deadlines = self._deadlines
        if deadlines is None or deadlines.loop is not loop:
            deadlines = self._deadlines = _Deadlines(loop)
        ssl_context = self._ssl_context() if target.scheme == "https" else None
        if proxy is None:
            _, protocol = await loop.create_connection(
                lambda: _Protocol(self._high_water, loop, deadlines),
                target.host,
                target.port,
                ssl=ssl_context,
                server_hostname=target.host if ssl_context else None,
            )
            return protocol
        transport, protocol = await loop.create_connection(
            lambda: _Protocol(self._high_water, loop, deadlines), proxy.host, proxy.port
        )
        if ssl_context is None:
            return protocol  # plain HTTP: requests go to the proxy in absolute form
        try:
            await self._tunnel(protocol, target, proxy)
            tls = await loop.start_tls(
                transport, protocol, ssl_context, server_hostname=target.host
            )
        except BaseException:
            transport.close()
            raise
        if tls is None:  # pragma: no cover - only when the transport closed meanwhile
            raise ConnectError("the proxy closed the tunnel")
        protocol.transport = tls
        return protocol

    async def _tunnel(self, protocol: _Protocol, target: _Target, proxy: Proxy) -> None:
        """``CONNECT`` through ``proxy`` to ``target`` (the caller bounds the time)."""
        lines = [
            f"CONNECT {target.authority} HTTP/1.1",
            f"Host: {target.authority}",
            f"User-Agent: {_USER_AGENT}",
        ]
        if proxy.authorization is not None:
            lines.append(f"Proxy-Authorization: {proxy.authorization}")
        assert protocol.transport is not None
        protocol.begin(hold=False)
        protocol.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await _read_head(protocol, protocol.loop.time() + self._connect_timeout, reused=False)
        if not 200 <= protocol.status < 300:
            status, reason = protocol.status, protocol.reason.decode("latin-1")[:60]
            raise ProxyError(
                f"proxy {proxy} refused to connect to {target.authority}: {status} {reason}",
                status,
            )
        if protocol.body:
            raise ProtocolError(f"proxy {proxy} sent bytes before the TLS handshake")
        protocol.end()

    async def _exchange(
        self, conn: _Connection, request: bytes, read_timeout: float, hold: bool
    ) -> Response:
        protocol = conn.protocol
        assert protocol.transport is not None
        try:
            protocol.begin(hold)
            protocol.transport.write(request)
            await _read_head(protocol, protocol.loop.time() + read_timeout, conn.reused)
            return Response(self, conn, read_timeout)
        except BaseException:
            conn.close()
            raise

    def _release_slot(self, key: tuple[str, str, int]) -> None:
        self._hosts[key].release()
        if self._limit is not None:
            self._limit.release()

    def _put_back(self, conn: _Connection) -> None:
        self._release_slot(conn.key)
        if self._closed or not conn.usable:
            conn.close()
            return
        conn.protocol.take_back()  # an idle connection reads, so it notices stray bytes
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


async def _read_head(protocol: _Protocol, deadline: float, reused: bool) -> None:
    """Until the answer's head is parsed; by ``deadline`` (loop time) for all of it, however
    slowly it drips and however many 1xx answers come first."""
    while not protocol.head_done:
        if protocol.failure is not None:
            raise protocol.failure
        if protocol.eof:
            if reused and not protocol.received:
                raise _StaleConnection
            if protocol.lost is not None:
                raise BodyError(f"connection lost before the answer: {protocol.lost}")
            raise BodyError("connection closed before the answer")
        if deadline <= protocol.loop.time():
            raise ReadTimeout("the answer's head did not arrive within the read timeout")
        await protocol.wait_until(deadline)
