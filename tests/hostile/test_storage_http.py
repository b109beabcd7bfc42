"""``assetsync mirror`` against storage that answers what no HTTP server should (issue 11, §2).

Each case runs the command as a user does (a subprocess, default settings but short retries and
timeouts) against an emulated version whose signed URLs lead to a scripted server that answers
every object in one hostile way. Whatever it sends, the run must:

* end within a bounded time (the subprocess is killed after :data:`HANG_GUARD` seconds, which
  fails the test), and within bounded memory: the run's peak RSS stays under
  :data:`RSS_BOUND_MIB`. A well-behaved run of the same version peaks near 60 MiB (measured:
  :func:`test_a_well_behaved_server_through_the_same_harness` prints it); what the storage
  client may buffer by design is a few MiB per connection (its 4 MiB high-water mark, a 1 MiB
  write batch). The bound leaves room for interpreter and allocator variation, not for what a
  missing bound costs: an endless head, trailers or body held in memory;
* exit 0 (the object was served right in the end) or 1 (those assets failed after retries), as
  the README's exit-code table says, with no traceback;
* never record a file whose bytes are not the object's: every ``ok`` row of the manifest names a
  file holding exactly the object's bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from engine.emulator import Emulator
from engine.manifest import Manifest
from tests.command import Run, command_env, mirror_command, run_measured
from tests.hostile.scripted import Conn, ScriptedServer, hostile_storage, object_bytes

pytestmark = pytest.mark.slow

HANG_GUARD = 90.0
RSS_BOUND_MIB = 200
MiB = 1024 * 1024
ASSETS = 3

Answer = Callable[[bytes], bytes]


def run_mirror(emu: Emulator, dest: Path, env_extra: dict[str, str] | None = None) -> Run:
    """``assetsync mirror --json`` in a child process; its exit code, output and peak RSS."""
    env = command_env(
        emu.token,
        ASSETSYNC_TRANSFER__RETRY__ATTEMPTS="2",
        ASSETSYNC_TRANSFER__TIMEOUTS__READ="2",
        ASSETSYNC_TRANSFER__TIMEOUTS__STALL="2",
        **(env_extra or {}),
    )
    args = mirror_command(emu, dest, "--json", "--no-fsync")
    return run_measured(args, env, hang_guard=HANG_GUARD)


def serving(answer: Answer, emu: list[Emulator]) -> Callable[[Conn], object]:
    """A script answering each request with ``answer(object's bytes)``, keeping the
    connection open for more."""

    async def script(conn: Conn) -> None:
        while (request := await conn.read_request()) is not None:
            await conn.send(answer(object_bytes(emu[0], request.path)))

    return script


def check_manifest(emu: Emulator, dest: Path) -> dict[str, str]:
    """Every ``ok`` row's file holds exactly its object's bytes; returns asset -> state."""
    states: dict[str, str] = {}
    if not (dest / ".assetsync" / "manifest.sqlite").exists():
        return states
    with Manifest.open(dest, create=False) as manifest:
        for row in manifest.iter_rows():
            states[row.asset_id] = row.state
            if row.state != "ok":
                continue
            content = emu.dataset.content(row.data_id)
            assert row.path is not None
            assert (dest / row.path).read_bytes() == content, row.asset_id
            assert row.sha256 == hashlib.sha256(content).hexdigest()
    return states


@dataclass
class Outcome:
    run: Run
    states: dict[str, str]
    server: ScriptedServer


def mirror_against(
    tmp_path: Path, answer: Answer | None = None, script: Callable[..., object] | None = None
) -> Outcome:
    emu_ref: list[Emulator] = []
    chosen = script if script is not None else serving(answer or (lambda body: body), emu_ref)
    with ScriptedServer(chosen) as server:  # type: ignore[arg-type]
        # Objects of 4-64 KiB: every length has a digit group for "4_096".
        emulator = hostile_storage(server, assets=ASSETS, seed=11, min_size=4096, max_size=65536)
        with emulator.in_thread() as emu:
            emu_ref.append(emu)
            run = run_mirror(emu, tmp_path / "dest")
            states = check_manifest(emu, tmp_path / "dest")
    assert "Traceback" not in run.stderr, run.stderr
    assert run.peak_rss < RSS_BOUND_MIB * MiB, run.peak_rss >> 20
    return Outcome(run, states, server)


def head(*fields: str, status: str = "HTTP/1.1 200 OK") -> bytes:
    return ("\r\n".join([status, *fields]) + "\r\n\r\n").encode("latin-1")


def one_chunk(body: bytes, size: bytes) -> bytes:
    return size + b"\r\n" + body + b"\r\n0\r\n\r\n"


def ok_answer(body: bytes) -> bytes:
    return head(f"Content-Length: {len(body)}") + body


CHUNKED = "Transfer-Encoding: chunked"

REFUSED: dict[str, Answer] = {
    # The old client read 5 of the 30+ bytes and recorded them as the object.
    "content-length-with-chunked": lambda b: (
        head("Content-Length: 5", CHUNKED) + one_chunk(b, b"%x" % len(b))
    ),
    "chunk-size-negative": lambda b: head(CHUNKED) + one_chunk(b[:5], b"-5"),
    "chunk-size-0x": lambda b: head(CHUNKED) + one_chunk(b, b"0x%x" % len(b)),
    "chunk-size-underscore": lambda b: head(CHUNKED) + one_chunk(b[:16], b"1_0"),
    "content-length-plus": lambda b: head(f"Content-Length: +{len(b)}") + b,
    # Python's int() reads "4_096" as 4096: the old client took it.
    "content-length-underscore": lambda b: head(f"Content-Length: {len(b):_}") + b,
    "http-banana": lambda b: head(f"Content-Length: {len(b)}", status="HTTP/1.banana 200 OK") + b,
    "space-in-field-name": lambda b: head("Bad Name: x", f"Content-Length: {len(b)}") + b,
    "8000-fields": lambda b: head(*["X: y"] * 8000, f"Content-Length: {len(b)}") + b,
    "head-over-64-KiB": lambda b: head("X: " + "v" * 70_000, f"Content-Length: {len(b)}") + b,
    "100000-trailers": lambda b: (
        head(CHUNKED) + b"%x\r\n" % len(b) + b + b"\r\n0\r\n" + b"X: y\r\n" * 100_000 + b"\r\n"
    ),
    "chunked-then-gzip": lambda b: (
        head("Transfer-Encoding: chunked, gzip") + one_chunk(b, b"%x" % len(b))
    ),
    "redirect-loop": lambda b: head(
        "Location: /objects/again", "Content-Length: 0", status="HTTP/1.1 302 Found"
    ),
    "redirect-to-ftp": lambda b: head(
        "Location: ftp://127.0.0.1/x", "Content-Length: 0", status="HTTP/1.1 302 Found"
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_malformed_or_ambiguous_answer_fails_the_asset_and_records_nothing_wrong(
    case: str, tmp_path: Path
) -> None:
    outcome = mirror_against(tmp_path, REFUSED[case])
    run = outcome.run
    assert run.code == 1, (run.code, run.stderr)
    assert run.summary["failed"] == ASSETS, run.summary
    assert run.summary["downloaded"] == 0
    assert "ok" not in outcome.states.values()
    assert outcome.server.errors == []


def drip_head(every: float) -> Callable[[Conn], object]:
    async def script(conn: Conn) -> None:
        while await conn.read_request() is not None:
            await conn.send(b"HTTP/1.1 200 OK\r\n")
            for i in range(10_000):  # far longer than the hang guard
                await conn.send(b"X-%d: v\r\n" % i)
                await asyncio.sleep(every)

    return script


def endless_continue() -> Callable[[Conn], object]:
    async def script(conn: Conn) -> None:
        while await conn.read_request() is not None:
            for _ in range(10_000):  # far longer than the hang guard
                await conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
                await asyncio.sleep(0.2)

    return script


@pytest.mark.parametrize("case", ["head-drips", "endless-100-continue"])
def test_a_head_that_never_completes_ends_at_the_read_timeout(case: str, tmp_path: Path) -> None:
    script = drip_head(0.2) if case == "head-drips" else endless_continue()
    outcome = mirror_against(tmp_path, script=script)
    run = outcome.run
    assert run.code == 1, (run.code, run.stderr)
    assert run.summary["failed"] == ASSETS
    assert "ok" not in outcome.states.values()


def test_an_answer_nobody_asked_for_is_never_stored_as_the_next_object(tmp_path: Path) -> None:
    """Two objects on two connections. The first is answered, then, 0.2 s later, the server
    sends an answer nobody asked for on that now idle connection. The second object's
    connection is answered 503 with ``Connection: close`` after 0.6 s, so its retry takes the
    idle one from the pool: the old client read the waiting answer as the object and stored
    it (exit 0). (An answer that arrives after the next request went out cannot be told from
    the real one by any HTTP/1.1 client; one that was waiting must never be read.)"""
    emu_ref: list[Emulator] = []

    async def script(conn: Conn) -> None:
        while (request := await conn.read_request()) is not None:
            body = object_bytes(emu_ref[0], request.path)
            number = len(conn.server.requests)
            if number == 1:
                await conn.send(ok_answer(body))
                await asyncio.sleep(0.2)
                await conn.send(ok_answer(b"E" * len(body)))  # on the idle connection
            elif number == 2:
                await asyncio.sleep(0.6)
                close = ("Connection: close", "Content-Length: 0")
                await conn.send(head(*close, status="HTTP/1.1 503 Slow Down"))
                return
            else:
                await conn.send(ok_answer(body))

    with ScriptedServer(script) as server:
        emulator = hostile_storage(server, assets=2, seed=11, min_size=4096, max_size=4096)
        with emulator.in_thread() as emu:
            emu_ref.append(emu)
            run = run_mirror(emu, tmp_path / "dest", {"ASSETSYNC_LIMITS__CONCURRENCY": "2"})
            states = check_manifest(emu, tmp_path / "dest")
    assert "Traceback" not in run.stderr, run.stderr
    assert run.peak_rss < RSS_BOUND_MIB * MiB
    assert run.code == 0, run.stderr
    assert set(states.values()) == {"ok"} and len(states) == 2
    assert len(server.requests) == 3  # the retry was asked, on a fresh connection
    assert server.connections == 3


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def test_a_redirect_from_https_to_http_is_not_followed(ca: trustme.CA, tmp_path: Path) -> None:
    emu_ref: list[Emulator] = []
    plain = ScriptedServer(serving(ok_answer, emu_ref)).start()
    try:

        async def down(conn: Conn) -> None:
            while (request := await conn.read_request()) is not None:
                location = f"Location: {plain.url}{request.target}"
                await conn.send(head(location, "Content-Length: 0", status="HTTP/1.1 301 Moved"))

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        pem = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(pem))
        with ScriptedServer(down, ssl_context=context) as tls:
            emulator = hostile_storage(tls, assets=ASSETS, seed=11)
            with emulator.in_thread() as emu:
                emu_ref.append(emu)
                run = run_mirror(emu, tmp_path / "dest", {"SSL_CERT_FILE": str(pem)})
                states = check_manifest(emu, tmp_path / "dest")
    finally:
        plain.stop()
    assert "Traceback" not in run.stderr, run.stderr
    assert run.peak_rss < RSS_BOUND_MIB * MiB
    assert run.code == 1, run.stderr
    assert run.summary["failed"] == ASSETS
    assert "ok" not in states.values()
    assert len(tls.requests) >= ASSETS  # the https server was asked ...
    assert plain.requests == []  # ... and nothing went to the plain one


def test_a_redirect_to_another_http_host_is_followed_with_nothing_of_the_first(
    tmp_path: Path,
) -> None:
    emu_ref: list[Emulator] = []
    other = ScriptedServer(serving(ok_answer, emu_ref)).start()
    try:

        async def away(conn: Conn) -> None:
            while (request := await conn.read_request()) is not None:
                location = f"Location: {other.url}{request.path}"
                await conn.send(head(location, "Content-Length: 0", status="HTTP/1.1 302 Found"))

        outcome_server = ScriptedServer(away).start()
        try:
            emulator = hostile_storage(outcome_server, assets=ASSETS, seed=11)
            with emulator.in_thread() as emu:
                emu_ref.append(emu)
                run = run_mirror(emu, tmp_path / "dest")
                states = check_manifest(emu, tmp_path / "dest")
        finally:
            outcome_server.stop()
    finally:
        other.stop()
    assert "Traceback" not in run.stderr, run.stderr
    assert run.code == 0, run.stderr
    assert set(states.values()) == {"ok"} and len(states) == ASSETS
    for request in other.requests:
        assert "authorization" not in request.headers
        assert "?" not in request.target  # the first URL's signature stayed with the first host


def test_a_well_behaved_server_through_the_same_harness(tmp_path: Path) -> None:
    """The baseline the bounds above are read against: chunked with trailers, all ok."""
    outcome = mirror_against(
        tmp_path,
        lambda b: head(CHUNKED) + b"%x;e=1\r\n" % len(b) + b + b"\r\n0\r\nX-T: 1\r\n\r\n",
    )
    assert outcome.run.code == 0, outcome.run.stderr
    assert set(outcome.states.values()) == {"ok"} and len(outcome.states) == ASSETS
    print(f"peak RSS of a well-behaved run: {outcome.run.peak_rss >> 20} MiB")
