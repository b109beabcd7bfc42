"""SHA-256 of a file that is still being written, without holding it in memory.

Segments land out of order, so the digest cannot be fed from the network. Instead a worker
thread hashes the file's *contiguous prefix* as it grows: the event loop only publishes how far
the prefix reaches (:meth:`PrefixHasher.advance`, a lock and an int), and the thread reads those
bytes back from the page cache into one reused buffer and feeds them to hashlib, which releases
the GIL for large updates. Hashing thus runs on another core while the loop keeps receiving; when
the last byte lands the digest is a few megabytes from done. A resumed transfer hashes the bytes
already on disk the same way, while the rest downloads.

The thread opens its own descriptor, so closing the partial file (or cancelling the transfer)
never pulls a descriptor from under it; :meth:`stop` makes it exit at the next block.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

import anyio
import anyio.to_thread

from engine.errors import LocalStorageError
from engine.transfer.partial import storage_error
from engine.transfer.socket_pump import PumpStopped

__all__ = ["HashGate", "PrefixHasher"]

_BLOCK = 4 * 1024 * 1024
# Batches (of chunk_size) held for hashing from memory: bounds the memory a hasher may pin.
_MAX_OFFERS = 4


class PrefixHasher:
    """Hashes ``[0, size)`` of a file as :meth:`advance` says those bytes are on disk.

    Bytes that were written in order (at the prefix's end) can be :meth:`offer`-ed as they
    were received: the thread then hashes them from memory, still warm, instead of reading them
    back. At most :data:`_MAX_OFFERS` batches are held; beyond that the bytes are read back.
    """

    __slots__ = (
        "_available",
        "_cond",
        "_dir_fd",
        "_laggards",
        "_name",
        "_offers",
        "_progress",
        "_stopped",
        "_waiting",
        "hashed",
        "read_back",
        "running",
        "size",
    )

    def __init__(self, dir_fd: int, name: str, size: int) -> None:
        self._dir_fd = dir_fd
        self._name = name
        self.size = size
        self._available = 0
        self._stopped = False
        self._waiting = False
        self._cond = threading.Condition(threading.Lock())
        self._offers: dict[int, list[bytes]] = {}
        self.read_back = 0  # bytes hashed from the file rather than from memory
        self.hashed = 0  # bytes hashed so far (written by the thread, read by anyone)
        self._progress = threading.Condition(threading.Lock())
        self._laggards = 0  # threads waiting in wait_hashed
        self.running = False  # the thread got its limiter token and is hashing

    def advance(self, frontier: int, offset: int = -1, chunks: list[bytes] | None = None) -> None:
        """The bytes ``[0, frontier)`` are written (called from the event loop); ``chunks``,
        if given, are the bytes just written at ``offset``, offered to hash from memory."""
        if frontier <= self._available and chunks is None:
            return
        with self._cond:
            if chunks is not None and len(self._offers) < _MAX_OFFERS:
                self._offers[offset] = chunks
            if frontier > self._available:
                self._available = frontier
            if self._waiting:
                self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._offers.clear()
            self._cond.notify()
        with self._progress:
            self._progress.notify_all()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def wait_hashed(self, at_least: int, timeout: float) -> None:
        """Block (another thread) until ``at_least`` bytes are hashed, the hasher stops, or
        ``timeout`` seconds pass."""
        with self._progress:
            if self.hashed >= at_least or self._stopped:
                return
            self._laggards += 1
            try:
                self._progress.wait(timeout)
            finally:
                self._laggards -= 1

    def _hashed_up_to(self, hashed: int) -> None:
        self.hashed = hashed
        if self._laggards:
            with self._progress:
                self._progress.notify_all()

    async def digest(self, limiter: anyio.CapacityLimiter) -> str:
        """Run the thread; the hex digest once ``size`` bytes were hashed. Cancelling returns at
        once; call :meth:`stop` then so that the thread exits too.

        ``limiter`` is the hashers' own: a hasher holds its thread for a whole download, so
        it must not take the tokens that short blocking calls (fsync) need."""
        return await anyio.to_thread.run_sync(self._run, abandon_on_cancel=True, limiter=limiter)

    def _run(self) -> str:
        self.running = True
        try:
            fd = os.open(self._name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._dir_fd)
        except OSError as exc:
            raise storage_error(exc, f"cannot read back {self._name}") from None
        try:
            return self._hash(fd)
        finally:
            os.close(fd)

    def _hash(self, fd: int) -> str:
        sha = hashlib.sha256()
        buf: bytearray | None = None
        hashed = 0
        size = self.size
        cond = self._cond
        offers = self._offers
        while hashed < size:
            with cond:
                while self._available <= hashed and not self._stopped:
                    self._waiting = True
                    cond.wait()
                    self._waiting = False
                if self._stopped:
                    raise LocalStorageError("hashing stopped")
                available = self._available
                # Offers behind the prefix can no longer be used.
                for stale in [at for at in offers if at < hashed]:
                    del offers[stale]
                chunks = offers.pop(hashed, None)
            if chunks is not None:
                for chunk in chunks:
                    sha.update(chunk)
                    hashed += len(chunk)
                self._hashed_up_to(hashed)
                continue
            if buf is None:
                buf = bytearray(min(_BLOCK, max(size, 1)))
            view = memoryview(buf)
            # Read back up to the next offered batch (or the prefix's end).
            with cond:
                limit = min([at for at in offers if at > hashed] or [available])
            limit = min(limit, available)
            while hashed < limit:
                want = min(len(buf), limit - hashed)
                try:
                    got = os.preadv(fd, [view[:want]], hashed)
                except OSError as exc:
                    raise storage_error(exc, f"cannot read back {self._name}") from None
                if got <= 0:
                    raise LocalStorageError(f"{self._name} is shorter than what was written")
                sha.update(view[:got])
                hashed += got
                self.read_back += got
                self._hashed_up_to(hashed)
        return sha.hexdigest()


class HashGate:
    """Flow control for pump threads: a pump may run ahead of the hashed prefix by ``ahead``
    bytes, no more (``gate(offset)`` blocks until the hash gets within reach).

    Why: on two cores the pumps (and the server) would otherwise starve the hasher, which then
    hashes the last few hundred MiB alone after the last byte with the other core idle; 1.12 s
    against 1.00 s per GiB, measured with no fsync (median of three runs each).

    It only ever delays: a hasher that is not running yet (waiting for its limiter token) holds
    nobody back, and a pump held back for ``max_wait`` seconds stops waiting for the rest of its
    body, so connections held by waiting pumps can never starve the segment the hash needs.
    ``stop`` set while waiting raises :class:`~engine.transfer.socket_pump.PumpStopped`.
    """

    _SLICE = 0.25  # how often a waiting pump looks at its stop flag

    def __init__(
        self, hasher: PrefixHasher, ahead: int, stop: threading.Event, *, max_wait: float
    ) -> None:
        self._hasher = hasher
        self._ahead = ahead
        self._stop = stop
        self._max_wait = max_wait
        self.gave_up = False

    def __call__(self, offset: int) -> None:
        hasher = self._hasher
        ahead = self._ahead
        deadline = 0.0
        while (
            not self.gave_up
            and hasher.running
            and not hasher.stopped
            and offset - hasher.hashed >= ahead
        ):
            if self._stop.is_set():
                raise PumpStopped
            now = time.monotonic()
            if not deadline:
                deadline = now + self._max_wait
            elif now >= deadline:
                self.gave_up = True
                return
            hasher.wait_hashed(offset - ahead + 1, min(self._SLICE, deadline - now))
