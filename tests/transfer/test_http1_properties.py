"""Generated answers, split at random points, through a real socket to the storage client.

Valid answers (any status line, fields, and a body framed by ``Content-Length``, by chunks with
extensions and trailers, or by the end of the connection) must give the body byte for byte,
the fields as sent, and a reusable connection. Answers with one defect of a kind no HTTP parser
should accept (``Content-Length`` beside ``Transfer-Encoding``, another transfer coding, a bad
length or chunk size, a bad version, a bad field name, too many fields) must be refused, never
read as a body. Randomly mutated answers (a byte changed, bytes inserted or removed, cut short)
may read as some other answer or fail, but only with the client's own errors, which
:func:`engine.transfer.wire.translate` maps to the engine's tree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import TransferError
from engine.signed_urls import SignedUrl
from engine.transfer.http1 import BodyError, HttpError, ProtocolError, ReadTimeout, StorageHttp
from engine.transfer.wire import translate
from tests.hostile.scripted import Conn, ScriptedServer

TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
RESERVED = {"content-length", "transfer-encoding", "connection", "location", "upgrade"}
AGAIN = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nagain"


@dataclass
class Plan:
    """What the server sends for the next first request on a connection."""

    pieces: list[bytes]
    close: bool  # close after sending (the body runs to the end, or the answer is mutated)


class Stage:
    plan = Plan([], True)


async def script(conn: Conn) -> None:
    first = True
    while await conn.read_request() is not None:
        if not first:
            await conn.send(AGAIN)
            continue
        first = False
        plan = Stage.plan
        for piece in plan.pieces:
            await conn.send(piece)
            await asyncio.sleep(0.0005)  # separate reads on the client, most of the time
        if plan.close:
            conn.close()
            return


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer(script) as running:
        yield running


names = st.text(TOKEN, min_size=1, max_size=16).filter(lambda n: n.lower() not in RESERVED)
# Field values: visible ASCII and inner spaces (llhttp drops the whitespace around a value).
values = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40).flatmap(
    lambda v: st.just(v) | st.builds(lambda a, b: f"{a} {b}", st.just(v), st.just(v))
)
fields = st.lists(st.tuples(names, values), max_size=12)
reasons = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)
extensions = st.lists(
    st.tuples(names, st.one_of(st.none(), st.text(TOKEN, min_size=1, max_size=8))), max_size=2
)


DEFECTS = [
    "length-and-chunked",
    "other-coding",
    "length-syntax",
    "chunk-size",
    "version",
    "field-name",
    "too-many-fields",
]


@st.composite
def answers(
    draw: st.DrawFn, defect: str | None = None
) -> tuple[bytes, bytes, list[tuple[str, str]], bool]:
    """(the answer's bytes, its body, its fields, whether it runs to the end of the
    connection); with ``defect``, one flaw of that kind (see DEFECTS)."""
    status = draw(st.sampled_from([200, 203, 206]))
    head_fields = draw(fields)
    body = draw(st.binary(min_size=1 if defect else 0, max_size=3000))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    if defect in ("length-and-chunked", "chunk-size"):
        framing = "chunked"
    elif defect == "length-syntax":
        framing = "length"
    version = "HTTP/1.1"
    if defect == "version":
        version = draw(
            st.sampled_from(["HTTP/1.banana", "HTTP/2.0", "HTTP/1.", "HTTP/1.11", "HTTPS/1.1"])
        )
    lines = [f"{version} {status} {draw(reasons)}".rstrip(" ")]
    lines += [f"{name}: {value}" for name, value in head_fields]
    if defect == "field-name":
        name = draw(names)
        bad = draw(st.sampled_from([f"{name} {name}", f"{name} ", f"{name}\t", f"{name}(x)"]))
        lines.insert(draw(st.integers(1, len(lines))), f"{bad}: x")
    elif defect == "too-many-fields":
        lines += [f"X-{i}: v" for i in range(draw(st.integers(101, 400)))]
    elif defect == "length-and-chunked":
        lines.append(f"Content-Length: {draw(st.integers(0, len(body)))}")
    if framing == "length":
        length = str(len(body))
        if defect == "length-syntax":
            length = draw(
                st.sampled_from([f"+{length}", f"-{length}", f"0x{length}", f"{length} 0"])
                | st.sampled_from([f"{length}_0", f"{length}, {length}", f"{length}.0"])
            )
        lines.append(f"Content-Length: {length}")
        framed = body
    elif framing == "close":
        lines.append("Connection: close")
        framed = body
    else:
        lines.append("Transfer-Encoding: chunked")
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=6)))
        parts = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        parts = [part for part in parts if part]  # a zero-size chunk is the last one
        spoiled = draw(st.integers(0, len(parts) - 1)) if defect == "chunk-size" else -1
        framed = b""
        for index, part in enumerate(parts):
            size = f"{len(part):x}"
            size = size.upper() if draw(st.booleans()) else size
            if index == spoiled:
                size = draw(
                    st.sampled_from([f"-{size}", f"0x{size}", f"+{size}", f" {size}"])
                    | st.sampled_from([f"{size} ", f"{size[:1]}_{size[1:]}", f"{size}g"])
                )
            ext = "".join(f";{n}" + (f"={v}" if v else "") for n, v in draw(extensions))
            framed += f"{size}{ext}\r\n".encode() + part + b"\r\n"
        trailers = draw(st.lists(st.tuples(names, values), max_size=3))
        framed += b"0\r\n" + b"".join(f"{n}: {v}\r\n".encode() for n, v in trailers) + b"\r\n"
    if defect == "other-coding":
        coding = draw(
            st.sampled_from(["chunked, gzip", "gzip", "identity", "gzip, chunked", "chunked, x"])
        )
        lines = [line for line in lines if not line.startswith("Content-Length")]
        lines = [line for line in lines if not line.startswith("Transfer-Encoding")]
        lines.append(f"Transfer-Encoding: {coding}")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + framed
    return raw, body, head_fields, framing == "close"


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if b > a]


def run(coro_factory, use_uvloop: bool):  # type: ignore[no-untyped-def]
    factory = uvloop.new_event_loop if use_uvloop else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro_factory())


async def fetch(url: str, *, again: bool) -> tuple[int, dict[str, str], bytes, int]:
    http = StorageHttp()
    try:
        response = await http.get(url, {}, read_timeout=5)
        response.set_read_timeout(5)
        parts = []
        while chunk := await response.content.read(1 << 20):
            parts.append(chunk)
        headers = {name: response.headers[name] for name in response.headers}
        if again:  # the framing was consumed exactly: the connection serves the next answer
            second = await http.get(url, {}, read_timeout=5)
            assert await second.content.read() == b"again"
        return response.status, headers, b"".join(parts), http.connections_opened
    finally:
        http.close()


PROPERTY = settings(
    max_examples=150,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY
@given(
    answer=answers(), cuts=st.lists(st.integers(0, 1 << 16), max_size=8), use_uvloop=st.booleans()
)
def test_a_valid_answer_split_anywhere_reads_byte_exact(
    server: ScriptedServer, answer, cuts, use_uvloop
) -> None:
    raw, body, head_fields, until_close = answer
    Stage.plan = Plan(split(raw, cuts), close=until_close)
    status, headers, got, opened = run(
        lambda: fetch(server.url + "/x", again=not until_close), use_uvloop
    )
    assert got == body
    assert status in (200, 203, 206)
    expected: dict[str, str] = {}
    for name, value in head_fields:
        key = name.lower()
        value = value.strip(" ")
        expected[key] = f"{expected[key]}, {value}" if key in expected else value
    for key, value in expected.items():
        assert headers[key] == value
    assert opened == 1


@PROPERTY
@given(
    answer=st.sampled_from(DEFECTS).flatmap(lambda defect: answers(defect)),
    cuts=st.lists(st.integers(0, 1 << 16), max_size=8),
    use_uvloop=st.booleans(),
)
def test_an_answer_with_a_defect_is_refused_never_read_as_a_body(
    server: ScriptedServer, answer, cuts, use_uvloop
) -> None:
    raw = answer[0]
    Stage.plan = Plan(split(raw, cuts), close=True)
    with pytest.raises((ProtocolError, BodyError)):
        run(lambda: fetch(server.url + "/x", again=False), use_uvloop)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    raw = draw(answers())[0]
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["replace", "insert", "delete", "cut"]))
        at = draw(st.integers(0, max(len(raw) - 1, 0)))
        if kind == "replace" and raw:
            raw = raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1 :]
        elif kind == "insert":
            junk = draw(
                st.sampled_from([b"\r\n", b"-", b" ", b"0x", b"_", b"\x00", b"HTTP/1.1 200 OK"])
                | st.binary(min_size=1, max_size=8)
            )
            raw = raw[:at] + junk + raw[at:]
        elif kind == "delete":
            raw = raw[:at] + raw[at + draw(st.integers(1, 16)) :]
        else:
            raw = raw[:at]
    return raw


@PROPERTY
@given(raw=mutated(), cuts=st.lists(st.integers(0, 1 << 16), max_size=8), use_uvloop=st.booleans())
def test_a_mutated_answer_fails_only_with_the_clients_own_errors(
    server: ScriptedServer, raw: bytes, cuts, use_uvloop
) -> None:
    Stage.plan = Plan(split(raw, cuts), close=True)
    try:
        run(lambda: fetch(server.url + "/x", again=False), use_uvloop)
    except (HttpError, ReadTimeout) as exc:
        # The transfer core's view of it: a transfer error, never anything else.
        engine_error = translate(exc, SignedUrl(server.url + "/x", 0.0, 1e12), "body")
        assert isinstance(engine_error, TransferError)
