"""Writing response bodies: zero-copy from disk when nothing interferes, paced chunks otherwise.

:func:`send_body` writes bytes ``[start, end)`` of an object into a prepared
:class:`aiohttp.web.StreamResponse`. A file with a plain :class:`~engine.emulator.faults.BodyPlan`
goes out with ``loop.sendfile`` (``os.sendfile`` on the default asyncio loop; uvloop has no
sendfile, so there it falls back to 256 KiB reads, as aiohttp's own FileResponse does). Anything
else is written chunk by chunk, cut where a drop or a stall must happen and paced through the
plan's token buckets.

Bytes are counted as they are handed to the transport (before the write returns), so a client
that has read a whole body always finds it counted. A drop flushes what was written and closes
the transport, so the client sees a body shorter than its ``Content-Length``. A client that goes
away mid-body ends the send quietly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from aiohttp import web

from engine.emulator.content import BLOCK_SIZE
from engine.emulator.faults import BodyPlan

__all__ = ["ConnectionDropped", "send_body", "send_file"]


class ConnectionDropped(Exception):
    """Raised after a drop fault closed the connection, so the handler stops writing."""


async def send_file(
    request: web.BaseRequest,
    response: web.StreamResponse,
    path: Path,
    start: int,
    end: int,
    on_bytes: Callable[[int], None],
) -> None:
    """Send ``[start, end)`` of ``path`` without copying it through Python where possible."""
    loop = asyncio.get_running_loop()
    transport = request.transport
    count = end - start
    try:
        with path.open("rb") as handle:
            # asyncio's own loops implement sendfile (falling back to reads where the transport
            # cannot); uvloop does not, so it takes the read loop below directly.
            if transport is not None and count > 0 and isinstance(loop, asyncio.BaseEventLoop):
                on_bytes(count)  # counted before the client can see the last byte
                # The headers are already in the transport; loop.sendfile waits for its buffer
                # to drain before handing the socket to os.sendfile.
                await loop.sendfile(transport, handle, start, count)
                return
            handle.seek(start)
            remaining = count
            while remaining > 0:
                chunk = handle.read(min(BLOCK_SIZE, remaining))  # page cache: fast enough inline
                if not chunk:
                    raise OSError("file shrank while being sent")
                on_bytes(len(chunk))
                await response.write(chunk)
                remaining -= len(chunk)
    except ConnectionError:
        raise ConnectionDropped("client went away") from None


def _cut(chunks: Iterable[bytes], cuts: list[int]) -> Iterator[tuple[int, bytes]]:
    """Split the stream so every offset in ``cuts`` falls on a piece boundary."""
    position = 0
    pending = sorted(set(cuts))
    for chunk in chunks:
        offset = 0
        while offset < len(chunk):
            while pending and pending[0] <= position:
                pending.pop(0)
            take = len(chunk) - offset
            if pending:
                take = min(take, pending[0] - position)
            whole = offset == 0 and take == len(chunk)
            yield position, chunk if whole else chunk[offset : offset + take]
            position += take
            offset += take


async def send_body(
    request: web.BaseRequest,
    response: web.StreamResponse,
    chunks: Iterable[bytes],
    plan: BodyPlan,
    on_bytes: Callable[[int], None],
) -> None:
    """Write ``chunks`` applying ``plan``; raises :class:`ConnectionDropped` after a drop."""
    cuts = [at for at, _ in plan.stalls]
    if plan.drop_at is not None:
        cuts.append(plan.drop_at)
    stalls = list(plan.stalls)
    step = min((bucket.piece_size() for bucket in plan.buckets), default=0)
    sent = 0
    try:
        for position, piece in _cut(chunks, cuts):
            if plan.drop_at is not None and position >= plan.drop_at:
                break
            pause = _due(stalls, position)
            if pause:
                await asyncio.sleep(pause)
            offset = 0
            while offset < len(piece):
                part = piece[offset : offset + step] if step else piece[offset:]
                for bucket in plan.buckets:
                    await bucket.take(len(part))
                on_bytes(len(part))
                await response.write(part)
                sent += len(part)
                offset += len(part)
        if plan.drop_at is not None:
            _drop(request)
            raise ConnectionDropped(f"dropped after {sent} body bytes")
        pause = _due(stalls, None)  # a stall at the very end still holds the response open
        if pause:
            await asyncio.sleep(pause)
    except ConnectionError:
        raise ConnectionDropped("client went away") from None


def _due(stalls: list[tuple[int, float]], position: int | None) -> float:
    """Pop the stalls due at ``position`` (all of them for None); their total seconds."""
    total = 0.0
    while stalls and (position is None or stalls[0][0] <= position):
        total += stalls.pop(0)[1]
    return total


def _drop(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is not None:
        # close() (not abort()) flushes what is buffered, then sends FIN: the client sees a
        # short body, as when a load balancer or storage node cuts a connection mid-transfer.
        transport.close()
