"""What a misbehaving storage server can make one fetch do is bounded (issue 11, section 3).

A scripted server (tests/hostile/scripted.py) answers the transfer core directly; every test runs
through both body paths (the event loop, a pump thread) via the ``body_path`` fixture. The
cases end-to-end through ``assetsync mirror`` are in tests/hostile/test_storage_bounds.py.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import aiohttp
import anyio
import pytest

from engine.errors import (
    IntegrityError,
    LocalStorageError,
    PermanentTransferError,
    SlowBodyError,
)
from engine.settings import Timeouts
from engine.transfer import ObjectRef, Transferer, TransferResult
from tests.hostile.scripted import Conn, Request, ScriptedServer

from .conftest import KiB, MiB, fast_options

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("body_path")]

SIZE = 512 * KiB + 7  # several chunks: a body batched on the loop, or pumped
BODY = os.urandom(SIZE)
ATTEMPTS = 3
GUARD = 60  # seconds: every case ends in a few


def options(**overrides: Any) -> Any:
    values: dict[str, Any] = {
        "timeouts": Timeouts(
            connect=5.0, read=10.0, stall=20.0, min_rate=64 * KiB, min_rate_window=0.5
        ),
        "retry": {"attempts": ATTEMPTS, "base_delay": 0.01, "max_delay": 0.02},
        "max_object_size": 4 * MiB,
    }
    values.update(overrides)
    return fast_options(**values)


def head(status: str, *lines: str) -> bytes:
    return ("\r\n".join([f"HTTP/1.1 {status}", *lines]) + "\r\n\r\n").encode("latin-1")


def ranged_head(request: Request, size: int = SIZE) -> tuple[bytes, int, int]:
    """The honest 206 head for ``request`` (its range clipped to the object): head, start, stop."""
    asked = request.range()
    first = asked[0] if asked else 0
    last = asked[1] if asked and asked[1] is not None else size - 1
    last = min(last, size - 1)
    return (
        head(
            "206 Partial Content",
            f"Content-Range: bytes {first}-{last}/{size}",
            f"Content-Length: {last - first + 1}",
            'ETag: "e1"',
        ),
        first,
        last + 1,
    )


async def serve(conn: Conn, request: Request) -> None:
    data, start, stop = ranged_head(request)
    await conn.send(data + BODY[start:stop])


async def drip(conn: Conn, data: bytes, every: float = 0.05) -> None:
    for i in range(len(data)):
        await conn.send(data[i : i + 1])
        await anyio.sleep(every)


@dataclass
class Scripted:
    server: ScriptedServer
    root: Path

    @property
    def requests(self) -> list[Request]:
        return self.server.requests

    def partial_bytes(self) -> int:
        folder = self.root / "state" / "partial"
        if not folder.exists():
            return 0
        return sum(p.stat().st_blocks * 512 for p in folder.iterdir() if p.suffix == ".part")

    async def fetch(self, transfer_options: Any) -> TransferResult:
        url = self.server.url + "/objects/x"

        async def refresh() -> str:
            return url

        async with aiohttp.ClientSession() as session:
            transferer = Transferer(session, transfer_options, self.root / "state")
            try:
                with anyio.fail_after(GUARD):
                    return await transferer.fetch(
                        ObjectRef("a1", "d1"),
                        url,
                        refresh,
                        self.root / "dest",
                        PurePosixPath("x.bin"),
                    )
            finally:
                transferer.close()


Script = Callable[[Conn, Request, int], Awaitable[bool]]


@asynccontextmanager
async def scripted(tmp_path: Path, answer: Script) -> AsyncIterator[Scripted]:
    """A server calling ``answer(conn, request, n)`` for its n-th request (from 1); False
    closes the connection."""
    count = 0

    async def script(conn: Conn) -> None:
        nonlocal count
        while (request := await conn.read_request()) is not None:
            count += 1
            if not await answer(conn, request, count):
                return

    with ScriptedServer(script) as server:
        yield Scripted(server, tmp_path)
        assert server.errors == []


def placed(tmp_path: Path) -> bytes:
    return (tmp_path / "dest" / "x.bin").read_bytes()


# -- a minimum rate ----------------------------------------------------------------------------


async def test_a_drip_ends_at_the_minimum_rate_and_spends_the_budget(tmp_path: Path) -> None:
    async def answer(conn: Conn, request: Request, n: int) -> bool:
        data, start, _ = ranged_head(request)
        await conn.send(data)
        await drip(conn, BODY[start : start + 2400])  # 2 min at most
        return False

    async with scripted(tmp_path, answer) as s:
        with pytest.raises(SlowBodyError, match="minimum rate"):
            await s.fetch(options())
        # Each attempt kept a few bytes and asked for the rest after them; none of it counted
        # as progress, so the budget ran out.
        assert len(s.requests) == ATTEMPTS
        starts = [r.range()[0] for r in s.requests]  # type: ignore[index]
        assert starts[0] == 0 and starts == sorted(starts) and starts[-1] > 0
    assert not (tmp_path / "dest" / "x.bin").exists()


async def test_a_body_that_dripped_once_resumes_after_the_bytes_kept(tmp_path: Path) -> None:
    async def answer(conn: Conn, request: Request, n: int) -> bool:
        if n > 1:
            await serve(conn, request)
            return True
        data, _, _ = ranged_head(request)
        await conn.send(data + BODY[:70_000])
        await drip(conn, BODY[70_000:72_400])
        return False

    async with scripted(tmp_path, answer) as s:
        result = await s.fetch(options(segment_size=1 * MiB))  # one piece: one request each
        assert placed(tmp_path) == BODY and result.sha256 == hashlib.sha256(BODY).hexdigest()
        assert len(s.requests) == 2 and result.retries == 1
        resumed_from = s.requests[1].range()[0]  # type: ignore[index]
        assert 70_000 <= resumed_from < 72_400
        assert result.bytes_downloaded == SIZE  # nothing received twice


async def test_a_slow_but_steady_body_is_not_a_drip(tmp_path: Path) -> None:
    # 16 KiB every 0.1 s is 160 KiB/s, above the 64 KiB/s floor: it finishes, in one request.
    async def answer(conn: Conn, request: Request, n: int) -> bool:
        data, start, stop = ranged_head(request)
        await conn.send(data)
        for at in range(start, stop, 16 * KiB):
            await conn.send(BODY[at : min(at + 16 * KiB, stop)])
            await anyio.sleep(0.1)
        return True

    async with scripted(tmp_path, answer) as s:
        result = await s.fetch(options(segment_size=1 * MiB))
        assert placed(tmp_path) == BODY and result.retries == 0
        assert len(s.requests) == 1


# -- progress is bytes kept ----------------------------------------------------------------------


async def test_a_body_cut_at_the_same_place_on_every_restart_spends_the_budget(
    tmp_path: Path,
) -> None:
    # Range ignored: the whole object (200) every time, cut half-way. Each retry restarts from
    # zero and gets no further: no progress, whatever arrives.
    async def answer(conn: Conn, request: Request, n: int) -> bool:
        await conn.send(head("200 OK", f"Content-Length: {SIZE}", 'ETag: "e1"'))
        await conn.send(BODY[: SIZE // 2])
        return False

    async with scripted(tmp_path, answer) as s:
        with pytest.raises(Exception, match="body cut short"):
            await s.fetch(options())
        assert len(s.requests) == ATTEMPTS


async def test_a_body_cut_further_on_each_restart_finishes(tmp_path: Path) -> None:
    # Each restart from zero keeps more than the one before: that is progress, and it ends.
    async def answer(conn: Conn, request: Request, n: int) -> bool:
        await conn.send(head("200 OK", f"Content-Length: {SIZE}", 'ETag: "e1"'))
        cut = min(SIZE, n * SIZE // 5 + 1)
        await conn.send(BODY[:cut])
        return cut == SIZE

    async with scripted(tmp_path, answer) as s:
        result = await s.fetch(options(retry={"attempts": 2, "base_delay": 0.01}))
        assert placed(tmp_path) == BODY
        assert len(s.requests) == 5 and result.retries == 4


# -- sizes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 206])
async def test_an_object_announced_above_max_object_size_is_refused_before_a_byte(
    tmp_path: Path, status: int
) -> None:
    total = 10**13

    async def answer(conn: Conn, request: Request, n: int) -> bool:
        if status == 200:
            await conn.send(head("200 OK", f"Content-Length: {total}"))
        else:
            data, _, _ = ranged_head(request, total)
            await conn.send(data)
        await conn.send(b"\xab" * (4 * MiB))  # bounded: the rest never comes
        return False

    async with scripted(tmp_path, answer) as s:
        with pytest.raises(PermanentTransferError, match="max_object_size"):
            await s.fetch(options())
        assert len(s.requests) == 1
        assert s.partial_bytes() == 0


async def test_an_object_that_cannot_fit_above_the_reserve_is_refused(tmp_path: Path) -> None:
    # Within max_object_size, but 10 PB: no disk has the room. That object fails (the run would
    # go on), with no byte written; the disk is not "full" for the others.
    total = 10**16

    async def answer(conn: Conn, request: Request, n: int) -> bool:
        data, _, _ = ranged_head(request, total)
        await conn.send(data + b"\xab" * (1 * MiB))
        return False

    async with scripted(tmp_path, answer) as s:
        with pytest.raises(LocalStorageError, match="do not fit") as caught:
            await s.fetch(options(max_object_size=10**17))
        assert type(caught.value) is LocalStorageError
        assert len(s.requests) == 1
        assert s.partial_bytes() == 0


@pytest.mark.parametrize("framing", ["until-close", "chunked"])
async def test_a_body_of_unannounced_length_stops_at_max_object_size(
    tmp_path: Path, framing: str
) -> None:
    limit = 1 * MiB

    async def answer(conn: Conn, request: Request, n: int) -> bool:
        block = b"\xab" * (64 * KiB)
        if framing == "chunked":
            await conn.send(head("200 OK", "Transfer-Encoding: chunked"))
            for _ in range(64):  # 4 MiB, bounded
                await conn.send(b"%x\r\n" % len(block) + block + b"\r\n")
            await conn.send(b"0\r\n\r\n")
        else:
            await conn.send(head("200 OK", "Connection: close"))
            for _ in range(64):
                await conn.send(block)
        return False

    async with scripted(tmp_path, answer) as s:
        with pytest.raises(PermanentTransferError, match="max_object_size"):
            await s.fetch(options(max_object_size=limit))
        assert len(s.requests) == 1
        assert s.partial_bytes() == 0  # never resumable: not kept
    assert not (tmp_path / "dest" / "x.bin").exists()


@pytest.mark.parametrize("size", [20 * KiB, SIZE], ids=["read-whole", "streamed"])
async def test_a_chunked_body_running_past_its_range_is_an_error(tmp_path: Path, size: int) -> None:
    body = BODY[:size]

    async def answer(conn: Conn, request: Request, n: int) -> bool:
        asked = request.range()
        first = asked[0] if asked else 0
        last = min(asked[1] if asked and asked[1] is not None else size - 1, size - 1)
        await conn.send(
            head(
                "206 Partial Content",
                f"Content-Range: bytes {first}-{last}/{size}",
                "Transfer-Encoding: chunked",
                'ETag: "e1"',
            )
        )
        part, extra = body[first : last + 1], b"\x00" * 1000
        await conn.send(b"%x\r\n" % len(part) + part + b"\r\n")
        await conn.send(b"%x\r\n" % len(extra) + extra + b"\r\n0\r\n\r\n")
        return True

    async with scripted(tmp_path, answer) as s:
        with pytest.raises(IntegrityError, match="runs past its announced end"):
            await s.fetch(options(segment_size=1 * MiB))
        assert len(s.requests) == 1  # permanent
    assert not (tmp_path / "dest" / "x.bin").exists()


async def test_a_chunked_body_that_ends_where_its_range_does_is_taken(tmp_path: Path) -> None:
    async def answer(conn: Conn, request: Request, n: int) -> bool:
        _, start, stop = ranged_head(request)
        await conn.send(
            head(
                "206 Partial Content",
                f"Content-Range: bytes {start}-{stop - 1}/{SIZE}",
                "Transfer-Encoding: chunked",
                'ETag: "e1"',
            )
        )
        part = BODY[start:stop]
        await conn.send(b"%x\r\n" % len(part) + part + b"\r\n0\r\n\r\n")
        return True

    async with scripted(tmp_path, answer) as s:
        result = await s.fetch(options())
        assert placed(tmp_path) == BODY and result.retries == 0
        # The connection was reused: the body was read to its end, terminator included.
        assert s.server.connections == 1 < len(s.requests)
