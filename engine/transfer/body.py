"""Moving one response body to its place in the partial file.

Three paths, chosen by size, because a thread hop costs more than a small write but much less
than a large one:

* a body of at most ``chunk_size`` is read and written on the event loop: one ``read``, one
  ``pwrite`` into the page cache, no thread, no extra copy;
* a larger body is gathered in batches of ``chunk_size`` (the connection's buffers, not
  joined) and each batch goes to disk with one ``pwritev`` in a writer thread, while the loop
  keeps receiving the next batch. One batch in flight per body bounds memory to about two
  ``chunk_size``;
* a body of at least ``thread_body_min`` over plain HTTP, when a pump thread is free, is read
  from its socket by that thread (:mod:`engine.transfer.socket_pump`): no event-loop wake-up
  and no ``bytes`` object per receive. TLS bodies stay on the loop, which decrypts them.

Bytes count as done (sidecar record, hash frontier, progress, the retry budget) only once
written. Whatever ends a body — its last byte, a reset, a stall, a cancellation — every byte
received is written before this module returns: a retry then resumes after them, and the
partial's descriptor is never closed under a writing thread.

Every path bounds what a server can make it do: never a byte past the range (a larger body is
an :class:`IntegrityError`), at least ``timeouts.min_rate`` over each window (a drip ends as
:class:`SlowBodyError`, checked against the clock as bytes arrive, no timer), and the run's
disk reserve charged before each write (:mod:`engine.transfer.disk_room`).
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Executor
from typing import TYPE_CHECKING

import anyio

from engine.errors import IntegrityError, SlowBodyError, TransientTransferError
from engine.signed_urls import SignedUrl, redact
from engine.transfer.hashing import HashGate
from engine.transfer.http1 import HttpError, Response
from engine.transfer.min_rate import TooSlow
from engine.transfer.partial import storage_error
from engine.transfer.socket_pump import pump
from engine.transfer.threads import ThreadSlots
from engine.transfer.wire import translate

if TYPE_CHECKING:
    from engine.transfer.segments import Job

__all__ = ["slow_body", "stream_body"]

# pwritev takes at most IOV_MAX (1024 on Linux) buffers; tiny chunks are flushed sooner.
_MAX_BUFFERS = 512
# Seconds a partly filled batch may wait in memory when the body arrives slowly.
_FLUSH_AFTER = 0.5
# The longest a pump waits for the hasher before it stops waiting for it (HashGate).
_GATE_MAX = 2.0


class _Batch:
    """Bytes handed to a writer thread, and whether the job has counted them yet."""

    __slots__ = ("chunks", "counted", "index", "job", "size")

    def __init__(self, job: Job, index: int, chunks: list[bytes], size: int) -> None:
        self.job = job
        self.index = index
        self.chunks = chunks
        self.size = size
        self.counted = False

    def count(self) -> None:
        """Once written: count the bytes, exactly once. Batches of one body are counted in
        order because each is counted (at the latest) before the next one is written."""
        if not self.counted:
            self.counted = True
            self.job.landed(self.index, self.size, self.chunks)

    def on_written(self, future: asyncio.Future[None]) -> None:
        # As soon as the write finishes, not when the next batch is ready: a process killed
        # in between must find these bytes in the sidecar.
        if not future.cancelled() and future.exception() is None:
            self.count()


def slow_body(url: SignedUrl, exc: TooSlow) -> SlowBodyError:
    return SlowBodyError(f"{redact(url.url)}: {exc}")


async def stream_body(
    job: Job,
    index: int,
    response: Response,
    url: SignedUrl,
    pos: int,
    stop: int,
    executor: Executor,
) -> None:
    """Write bytes ``[pos, stop)`` of segment ``index`` from ``response``'s body."""
    options = job.ctx.options
    pumps = job.ctx.pumps
    if stop - pos <= options.chunk_size:
        await _small(job, index, response, url, pos, stop)
    elif (
        pumps is None
        or stop - pos < options.thread_body_min
        or not await _pumped(job, index, response, url, pos, stop, pumps)
    ):
        await _large(job, index, response, url, pos, stop, executor)


async def _small(
    job: Job,
    index: int,
    response: Response,
    url: SignedUrl,
    pos: int,
    stop: int,
) -> None:
    loop = job.ctx.loop
    floor = job.ctx.rate_floor(loop.time())
    charge = job.ctx.disk.charge
    content = response.content
    write = job.partial.write
    remaining = stop - pos
    while remaining > 0:
        try:
            # read(n) returns what is buffered, up to n: usually the whole body at once.
            data = await content.read(remaining)
        except (HttpError, OSError, TimeoutError) as exc:
            raise translate(exc, url, "body") from None
        n = len(data)
        if n == 0:
            raise TransientTransferError(f"{redact(url.url)}: body ended {remaining} bytes early")
        job.received(data)
        charge(n)
        write(data, pos)
        job.landed(index, n)
        pos += n
        remaining -= n
        if floor is not None and remaining:
            try:
                floor.feed(n, loop.time())
            except TooSlow as exc:
                raise slow_body(url, exc) from None


async def _large(
    job: Job,
    index: int,
    response: Response,
    url: SignedUrl,
    pos: int,
    stop: int,
    executor: Executor,
) -> None:
    loop = job.ctx.loop
    write_many = job.partial.write_many
    content = response.content
    chunk_size = job.ctx.options.chunk_size
    floor = job.ctx.rate_floor(loop.time())
    charge = job.ctx.disk.charge
    remaining = stop - pos
    batch: list[bytes] = []
    batched = 0
    batch_started = 0.0
    inflight: asyncio.Future[None] | None = None
    written = _Batch(job, index, [], 0)

    try:
        while remaining > 0:
            try:
                # readchunk hands over the received buffers, without joining big ones.
                data, end_of_chunk = await content.readchunk()
            except (HttpError, OSError, TimeoutError) as exc:
                raise translate(exc, url, "body") from None
            n = len(data)
            if n == 0:
                if end_of_chunk:  # a chunked body's chunk ended exactly here: not the end
                    continue
                raise TransientTransferError(
                    f"{redact(url.url)}: body ended {remaining} bytes early"
                )
            if n > remaining:
                raise IntegrityError(f"{redact(url.url)}: the body runs past its announced end")
            charge(n)
            remaining -= n
            job.received(data)
            now = loop.time()
            if not batch:
                batch_started = now
            batch.append(data)
            batched += n
            if floor is not None and remaining:
                try:
                    floor.feed(n, now)
                except TooSlow as exc:
                    # The batch is written below: the retry resumes after these bytes.
                    raise slow_body(url, exc) from None
            if (
                batched >= chunk_size
                or remaining == 0
                or len(batch) >= _MAX_BUFFERS
                # A slow body still reaches the disk (and the sidecar) every so often.
                or (inflight is None and now - batch_started >= _FLUSH_AFTER)
            ):
                if inflight is not None:
                    # shield: a cancellation here must not detach us from the running write.
                    await asyncio.shield(inflight)
                    # Its done callback may still be queued: count it before the next batch.
                    written.count()
                written = _Batch(job, index, batch, batched)
                inflight = loop.run_in_executor(executor, write_many, batch, pos)
                inflight.add_done_callback(written.on_written)
                pos += batched
                batch = []
                batched = 0
    finally:
        # Land everything received, whatever ended the body; a disk error raised here outranks
        # the network error that brought us here (retrying the network would not help).
        with anyio.CancelScope(shield=True):
            if inflight is not None:
                await inflight
                written.count()
            if batch:
                write_many(batch, pos)
                job.landed(index, batched)


async def _pumped(
    job: Job,
    index: int,
    response: Response,
    url: SignedUrl,
    pos: int,
    stop: int,
    pumps: ThreadSlots,
) -> bool:
    """Read the body on a pump thread; False (nothing read) if no thread is free or the
    connection cannot be handed over."""
    if not pumps.try_take():
        return False
    try:
        handed = response.socket_body()
        if handed is None:
            return False
        sock_fd, early, rest = handed
        if sum(len(chunk) for chunk in early) + rest != stop - pos:
            # Cannot happen: the response's length was checked against the range it answers.
            raise TransientTransferError(f"{redact(url.url)}: body length differs from range")
        ctx = job.ctx
        if early:  # what came with the headers: a few KiB, written here
            n = 0
            for chunk in early:
                job.received(chunk)
                n += len(chunk)
            ctx.disk.charge(n)
            job.partial.write_many(early, pos)
            job.landed(index, n)
            pos += n
        loop = ctx.loop

        def on_landed(n: int) -> None:
            ctx.received += n
            job.landed(index, n)

        def landed(n: int) -> None:  # on the pump thread
            loop.call_soon_threadsafe(on_landed, n)

        partial = job.partial

        def partial_write_error(exc: OSError) -> Exception:
            return storage_error(exc, f"cannot write {partial.path}")

        halt = threading.Event()
        hasher = job.hasher
        gate: HashGate | None = None
        if hasher is not None:
            # A pump may run ahead of the hash by the span the segments in flight cover.
            options = ctx.options
            ahead = max(options.segments, 1) * options.segment_size
            gate = HashGate(hasher, ahead, halt, max_wait=_GATE_MAX)

        timeouts = ctx.options.timeouts
        future = loop.run_in_executor(
            pumps.executor,
            lambda: pump(
                sock_fd,
                job.partial.write,
                pos,
                rest,
                buffer_size=ctx.options.chunk_size,
                stall=response.read_timeout,
                stop=halt,
                landed=landed,
                # In-order single stream: the thread hashes too; the loop does not touch the
                # hash object until the thread is done.
                sha=job.sha,
                gate=gate,
                splice_to=(job.partial.fd, partial_write_error),
                charge=ctx.disk.charge,
                min_rate=(timeouts.min_rate, timeouts.min_rate_window),
            ),
        )
        try:
            await asyncio.shield(future)
        except BaseException:
            # Never leave the thread reading a socket (or writing a file) that the caller is
            # about to close: stop it and wait; its landed reports are queued before its end.
            halt.set()
            with anyio.CancelScope(shield=True):
                await asyncio.wait([future])
            exc = future.exception() if not future.cancelled() else None
            if isinstance(exc, HttpError | OSError | TimeoutError):
                raise translate(exc, url, "body") from None
            if isinstance(exc, TooSlow):
                raise slow_body(url, exc) from None
            raise  # a cancellation (the thread then raised PumpStopped), or an EngineError
        response.socket_body_done()
        ctx.stats.pumped += 1
        return True
    finally:
        pumps.give_back()
