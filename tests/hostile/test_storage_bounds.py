"""A bound on everything storage sends, end to end: ``assetsync mirror`` in a subprocess against
the scripted server (issue 11, section 3, the storage side).

Each case makes one object of the version hostile (the others are served properly) and runs the
command the way cron does, with small limits so that it is quick. Every case must end within its
hang guard, with its peak memory and the bytes it wrote under a bound, with the documented exit
code and no traceback, and nothing recorded in the manifest with bytes other than the object's.

The bounds: :data:`PEAK_RSS` is four times what a well-behaved run of these versions peaks at
on this machine (63 MiB, printed by this module's first test with ``-s``), room enough for
another Python or a loaded machine and far below the gigabytes the cases reached before their
fix. DEST may hold at most the version twice over (a partial file of the hostile object kept
for a later resume, beside the finished files) plus the manifest.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from engine.emulator import Emulator
from engine.manifest import Manifest
from tests.command import Run, command_env, mirror_command, run_measured
from tests.hostile.scripted import Conn, Request, ScriptedServer, hostile_storage, object_bytes

KiB = 1024
MiB = 1024 * KiB

PEAK_RSS = 256 * MiB
HANG_GUARD = 90.0  # seconds; the slowest case needs ~10
# The address space a run may map: a safety net for a shared machine (a run that tries to
# build a 7 GB list fails with MemoryError instead of eating the RAM). A run maps 0.6-0.7 GiB
# here (VmPeak: thread stacks and malloc arenas, mostly never touched); more cores mean more
# arenas, hence the margin.
ADDRESS_SPACE = 8 * 1024 * MiB

MAX_OBJECT = 8 * MiB  # transfer.max_object_size in these runs
ATTEMPTS = 3
SERVER_CAP = 64 * MiB  # what one hostile answer sends at most ("endless", but bounded)

LARGE = {"large_share": 1.0, "large_size": 4 * MiB + 123}  # every object 4 MiB: bodies by batch
SMALL = {"large_share": 0.0, "min_size": 100 * KiB, "max_size": 300 * KiB}  # one read each
BODY_PATHS = {"loop": str(1 << 40), "pump": "0"}  # transfer.thread_body_min


# -- the run -----------------------------------------------------------------------------------


def failure_for(run: Run, asset_id: str) -> str:
    found = [f["error"] for f in run.summary.get("failures", []) if f["asset_id"] == asset_id]
    assert found, (asset_id, run.summary)
    return str(found[0])


def run_mirror(emu: Emulator, dest: Path, **settings: str) -> Run:
    """``assetsync mirror --json`` as a process, with fast retries and ``settings`` as
    ``ASSETSYNC_TRANSFER__*`` variables; killed (and the test failed) after the hang guard."""
    transfer = {
        "RETRY__ATTEMPTS": str(ATTEMPTS),
        "MAX_OBJECT_SIZE": str(MAX_OBJECT),
        "TIMEOUTS__MIN_RATE": "8192",
        "TIMEOUTS__MIN_RATE_WINDOW": "1",
        **{name.upper(): value for name, value in settings.items()},  # the case's own
    }
    env = command_env(emu.token, **{f"ASSETSYNC_TRANSFER__{k}": v for k, v in transfer.items()})
    args = mirror_command(emu, dest, "--no-fsync", "--json")
    run = run_measured(args, env, hang_guard=HANG_GUARD, address_space=ADDRESS_SPACE)
    assert "Traceback" not in run.stdout + run.stderr, run.stderr[-3000:]
    assert emu.token not in run.stdout + run.stderr
    assert run.peak_rss < PEAK_RSS, f"peak RSS {run.peak_rss >> 20} MiB"
    return run


# -- what DEST must (not) hold ---------------------------------------------------------------


def bytes_under(dest: Path) -> int:
    """Bytes of every file under DEST, the state folder included (sparse holes not counted)."""
    total = 0
    for root, _, files in os.walk(dest):
        for name in files:
            stat = os.lstat(os.path.join(root, name))
            total += min(stat.st_size, stat.st_blocks * 512)
    return total


def check_manifest(emu: Emulator, dest: Path) -> dict[str, str]:
    """Every asset recorded ok has exactly its object's bytes at its path; returns the states."""
    with Manifest.open(dest, create=False) as manifest:
        rows = list(manifest.iter_rows())
    states: dict[str, str] = {}
    for row in rows:
        states[row.asset_id] = row.state
        if row.state != "ok":
            continue
        true = object_bytes(emu, "/objects/" + urllib.parse.quote(row.object_name))
        assert true, row.object_name
        assert row.path is not None
        on_disk = (dest / row.path).read_bytes()
        assert on_disk == true, (row.asset_id, len(on_disk), len(true))
        assert row.sha256 == hashlib.sha256(true).hexdigest()
    return states


def version_bytes(emu: Emulator) -> int:
    return sum(emu.dataset.expected(a).size for a in emu.dataset.asset_ids())


def check_bounded(emu: Emulator, dest: Path) -> None:
    written = bytes_under(dest)
    assert written <= 2 * version_bytes(emu) + 4 * MiB, f"{written} bytes under DEST"


# -- the scripted storage -------------------------------------------------------------------------


Hostile = Callable[[Conn, Request, bytes], Awaitable[bool]]


def _head(status: str, *lines: str) -> bytes:
    return ("\r\n".join([f"HTTP/1.1 {status}", *lines]) + "\r\n\r\n").encode("latin-1")


async def serve_properly(conn: Conn, request: Request, body: bytes) -> None:
    """What an object store answers: 206 for a satisfiable range, else 200."""
    asked = request.range()
    if asked is None or not body:
        await conn.send(_head("200 OK", f"Content-Length: {len(body)}", 'ETag: "e1"') + body)
        return
    first, last = asked
    last = len(body) - 1 if last is None else min(last, len(body) - 1)
    part = body[first : last + 1]
    await conn.send(
        _head(
            "206 Partial Content",
            f"Content-Range: bytes {first}-{last}/{len(body)}",
            f"Content-Length: {len(part)}",
            'ETag: "e1"',
        )
        + part
    )


class Storage:
    """The scripted server's behaviour: ``hostile`` answers requests for the target object
    (returning False ends the connection), every other object is served properly."""

    def __init__(self, hostile: Hostile) -> None:
        self.hostile = hostile
        self.emu: Emulator | None = None
        self.target: str | None = None  # the hostile object's request path
        self.seen: list[Request] = []  # the requests for it

    @property
    def target_requests(self) -> int:
        return len(self.seen)

    async def __call__(self, conn: Conn) -> None:
        while (request := await conn.read_request()) is not None:
            assert self.emu is not None
            body = object_bytes(self.emu, request.path)
            if request.path == self.target:
                self.seen.append(request)
                if not await self.hostile(conn, request, body):
                    return
            else:
                await serve_properly(conn, request, body)


@contextmanager
def version(
    hostile: Hostile, *, assets: int = 3, **knobs: Any
) -> Iterator[tuple[Emulator, str, Storage]]:
    """An emulated version on a thread, its storage scripted; yields the emulator, the hostile
    asset's id and the storage script."""
    storage = Storage(hostile)
    with ScriptedServer(storage) as server:
        emulator = hostile_storage(server, assets=assets, seed=11, **knobs)
        with emulator.in_thread() as emu:
            asset_id = sorted(emu.dataset.asset_ids())[0]
            expected = emu.dataset.expected(asset_id)
            storage.emu = emu
            storage.target = "/objects/" + urllib.parse.quote(expected.object_name)
            yield emu, asset_id, storage
        assert server.errors == []


def _others_ok(states: dict[str, str], target: str, assets: int = 3) -> None:
    assert len(states) == assets
    assert all(state == "ok" for asset, state in states.items() if asset != target), states
    assert states[target] != "ok"


async def _bounded_send(conn: Conn, total: int, *, block: int = 64 * KiB) -> None:
    """``total`` bytes of filler, as fast as the client takes them (an "endless" body)."""
    sent = 0
    while sent < total:
        await conn.send(b"\xab" * min(block, total - sent))
        sent += block


async def _chunked_send(conn: Conn, total: int, *, block: int = 64 * KiB) -> None:
    sent = 0
    while sent < total:
        piece = b"\xab" * min(block, total - sent)
        await conn.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
        sent += len(piece)
    await conn.send(b"0\r\n\r\n")


# -- the cases -----------------------------------------------------------------------------------


def test_a_well_behaved_version_mirrors_within_the_bounds(tmp_path: Path) -> None:
    async def never(conn: Conn, request: Request, body: bytes) -> bool:
        await serve_properly(conn, request, body)
        return True

    with version(never, **LARGE) as (emu, _, _storage):
        run = run_mirror(emu, tmp_path / "d")
        assert run.code == 0, run.stderr
        states = check_manifest(emu, tmp_path / "d")
        assert set(states.values()) == {"ok"}
        check_bounded(emu, tmp_path / "d")
        print(f"well-behaved: peak RSS {run.peak_rss >> 20} MiB in {run.seconds:.1f} s")


@pytest.mark.parametrize("limits", ["default", "raised"])
def test_a_206_claiming_an_absurd_total_is_refused_in_bounded_memory(
    tmp_path: Path, limits: str
) -> None:
    # Content-Range: bytes 0-1023/10**18 used to plan a list of 3e10 segments (7.4 GB, then
    # MemoryError). With the default limit the size is refused up front; with every limit
    # raised the plan is still a few integers, and the object fails on the server's next lie.
    async def absurd(conn: Conn, request: Request, body: bytes) -> bool:
        await conn.send(
            _head(
                "206 Partial Content",
                "Content-Range: bytes 0-1023/1000000000000000000",
                "Content-Length: 1024",
                'ETag: "e1"',
            )
            + body[:1024]
        )
        return True

    settings = {} if limits == "default" else {"max_object_size": str(10**19), "disk_reserve": "0"}
    with version(absurd, **SMALL) as (emu, target, storage):
        dest = tmp_path / "d"
        run = run_mirror(emu, dest, **settings)
        assert run.code == 1, run.stderr
        message = failure_for(run, target)
        if limits == "default":
            assert "max_object_size" in message
            assert storage.target_requests == 1  # permanent: not retried
        else:
            assert re.search(r"asked for bytes from \d+, got 0", message), message
            # Four workers (the default `segments`) each spend a budget on their piece.
            assert storage.target_requests <= 4 * ATTEMPTS + 1
        _others_ok(check_manifest(emu, dest), target)
        check_bounded(emu, dest)


@pytest.mark.parametrize("body_path", sorted(BODY_PATHS))
def test_storage_ignoring_range_and_cutting_every_body_spends_the_budget(
    tmp_path: Path, body_path: str
) -> None:
    # The whole object (200) for every request, cut half-way every time: each retry starts
    # from zero and gets no further. Bytes that arrive only to be thrown away are not
    # progress: the object fails after the retry budget, the others are mirrored.
    async def cut(conn: Conn, request: Request, body: bytes) -> bool:
        await conn.send(_head("200 OK", f"Content-Length: {len(body)}", 'ETag: "e1"'))
        await conn.send(body[: len(body) // 2])
        return False

    with version(cut, **LARGE) as (emu, target, storage):
        dest = tmp_path / "d"
        run = run_mirror(emu, dest, thread_body_min=BODY_PATHS[body_path])
        assert run.code == 1, run.stderr
        assert "body cut short" in failure_for(run, target)
        assert storage.target_requests == ATTEMPTS
        _others_ok(check_manifest(emu, dest), target)
        check_bounded(emu, dest)


async def _drip(conn: Conn, every: float, data: bytes) -> None:
    for i in range(len(data)):
        await conn.send(data[i : i + 1])
        await asyncio.sleep(every)


@pytest.mark.parametrize(
    ("size", "body_path"), [("small", "loop"), ("large", "loop"), ("large", "pump")]
)
def test_a_dripping_body_ends_at_the_minimum_rate(
    tmp_path: Path, size: str, body_path: str
) -> None:
    # A byte every 0.1 s: the stall timer (20 s) restarts on every byte and never fires. The
    # minimum rate (8 KiB/s over 1 s here) ends each attempt; what the drip kept is no
    # progress, so the object fails after the budget, in seconds.
    async def drip(conn: Conn, request: Request, body: bytes) -> bool:
        asked = request.range()
        first = asked[0] if asked else 0
        await conn.send(
            _head(
                "206 Partial Content",
                f"Content-Range: bytes {first}-{len(body) - 1}/{len(body)}",
                f"Content-Length: {len(body) - first}",
                'ETag: "e1"',
            )
        )
        await _drip(conn, 0.1, body[first : first + 1200])  # 2 min at most, then close
        return False

    knobs = SMALL if size == "small" else LARGE
    with version(drip, **knobs) as (emu, target, storage):
        dest = tmp_path / "d"
        run = run_mirror(emu, dest, thread_body_min=BODY_PATHS[body_path])
        assert run.code == 1, run.stderr
        assert "minimum rate" in failure_for(run, target)
        assert storage.target_requests == ATTEMPTS
        _others_ok(check_manifest(emu, dest), target)
        check_bounded(emu, dest)


@pytest.mark.parametrize(
    ("size", "body_path"), [("small", "loop"), ("large", "loop"), ("large", "pump")]
)
def test_a_body_that_dripped_once_resumes_from_the_bytes_kept(
    tmp_path: Path, size: str, body_path: str
) -> None:
    async def drip_once(conn: Conn, request: Request, body: bytes) -> bool:
        if storage.target_requests > 1:
            await serve_properly(conn, request, body)
            return True
        await conn.send(
            _head(
                "206 Partial Content",
                f"Content-Range: bytes 0-{len(body) - 1}/{len(body)}",
                f"Content-Length: {len(body)}",
                'ETag: "e1"',
            )
            + body[:5000]
        )
        await _drip(conn, 0.1, body[5000:6200])  # 2 min at most, then close
        return False

    knobs = SMALL if size == "small" else LARGE
    with version(drip_once, **knobs) as (emu, _target, storage):
        dest = tmp_path / "d"
        run = run_mirror(emu, dest, thread_body_min=BODY_PATHS[body_path])
        assert run.code == 0, run.stderr
        assert set(check_manifest(emu, dest).values()) == {"ok"}
        check_bounded(emu, dest)
        ranges = [r.range() for r in storage.seen]
    # The retry asked for the rest only, from the bytes kept (the first 5000 and some drops);
    # a small object read whole keeps nothing and asks again from zero.
    assert len(ranges) == 2
    assert ranges[1] is not None
    if size == "small":
        assert ranges[1][0] == 0
    else:
        assert 5000 <= ranges[1][0] < 6200


@pytest.mark.parametrize("framing", ["until-close", "chunked"])
def test_an_endless_body_of_unannounced_length_stops_at_max_object_size(
    tmp_path: Path, framing: str
) -> None:
    async def endless(conn: Conn, request: Request, body: bytes) -> bool:
        if framing == "chunked":
            await conn.send(_head("200 OK", "Transfer-Encoding: chunked"))
            await _chunked_send(conn, SERVER_CAP)
        else:
            await conn.send(_head("200 OK", "Connection: close"))
            await _bounded_send(conn, SERVER_CAP)
        return False

    with version(endless, **SMALL) as (emu, target, storage):
        dest = tmp_path / "d"
        run = run_mirror(emu, dest)
        assert run.code == 1, run.stderr
        assert "max_object_size" in failure_for(run, target)
        assert storage.target_requests == 1  # permanent: not retried
        _others_ok(check_manifest(emu, dest), target)
        check_bounded(emu, dest)
        # Not resumable: its bytes are not kept.
        assert not [p for p in (dest / ".assetsync").rglob("*.part") if p.stat().st_size]


@pytest.mark.parametrize("status", [200, 206])
def test_an_object_announced_larger_than_max_object_size_is_refused_before_a_byte(
    tmp_path: Path, status: int
) -> None:
    # 10 TB, announced either way; the server would send whatever range is asked for.
    total = 10 * 10**12

    async def huge(conn: Conn, request: Request, body: bytes) -> bool:
        if status == 200:
            await conn.send(_head("200 OK", f"Content-Length: {total}", 'ETag: "e1"'))
        else:
            asked = request.range()
            first = asked[0] if asked else 0
            last = asked[1] if asked and asked[1] is not None else total - 1
            await conn.send(
                _head(
                    "206 Partial Content",
                    f"Content-Range: bytes {first}-{last}/{total}",
                    f"Content-Length: {last - first + 1}",
                    'ETag: "e1"',
                )
            )
        await _bounded_send(conn, SERVER_CAP)
        return False

    with version(huge, **SMALL) as (emu, target, storage):
        dest = tmp_path / "d"
        run = run_mirror(emu, dest)
        assert run.code == 1, run.stderr
        assert "max_object_size" in failure_for(run, target)
        assert storage.target_requests == 1
        _others_ok(check_manifest(emu, dest), target)
        check_bounded(emu, dest)


@pytest.mark.parametrize("knobs", [SMALL, LARGE], ids=["small", "large"])
def test_a_chunked_body_running_past_its_content_range_is_an_error(
    tmp_path: Path, knobs: dict[str, Any]
) -> None:
    async def longer(conn: Conn, request: Request, body: bytes) -> bool:
        asked = request.range()
        first = asked[0] if asked else 0
        await conn.send(
            _head(
                "206 Partial Content",
                f"Content-Range: bytes {first}-{len(body) - 1}/{len(body)}",
                "Transfer-Encoding: chunked",
                'ETag: "e1"',
            )
        )
        # The announced bytes in one chunk, then 1000 more in another.
        part, extra = body[first:], b"\x00" * 1000
        await conn.send(b"%x\r\n" % len(part) + part + b"\r\n")
        await conn.send(b"%x\r\n" % len(extra) + extra + b"\r\n0\r\n\r\n")
        return True

    with version(longer, **knobs) as (emu, target, _storage):
        dest = tmp_path / "d"
        run = run_mirror(emu, dest)
        assert run.code == 1, run.stderr
        assert "runs past its announced end" in failure_for(run, target)
        _others_ok(check_manifest(emu, dest), target)
        check_bounded(emu, dest)


def test_the_disk_reserve_stops_the_run_before_the_disk_is_full(tmp_path: Path) -> None:
    # A reserve larger than the free space: the first write of the run finds the disk "full".
    # The run stops (a full disk concerns every asset) with one line, exit 1, nothing placed.
    async def endless(conn: Conn, request: Request, body: bytes) -> bool:
        await conn.send(_head("200 OK", "Connection: close"))
        await _bounded_send(conn, SERVER_CAP)
        return False

    stats = os.statvfs(tmp_path)
    reserve = stats.f_bavail * stats.f_frsize + 1024 * 1024 * MiB
    with version(endless, **SMALL) as (emu, _target, _storage):
        dest = tmp_path / "d"
        run = run_mirror(emu, dest, disk_reserve=str(reserve))
        assert run.code == 1, run.stderr
        assert run.summary["outcome"] == "error"
        assert "disk_reserve" in run.summary["error"]
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr
        states = check_manifest(emu, dest)
        assert "ok" not in states.values()
        check_bounded(emu, dest)
