"""One download of an object at a time across processes sharing a DEST.

One object is downloaded by one process at a time: the transfer core's partial files (keyed by
asset and data) assume a single writer, and a second process reopening a partial that the first
has just renamed into place would write into the placed file. So a download holds an exclusive
lock on one byte of ``.assetsync/fetching.lock`` (the byte is chosen by a hash of the asset id,
:data:`FETCH_RANGE` of them: two assets rarely share one); a prefetcher that had to wait for it
first checks whether the other one has put the file in place already. The locks are Linux's
open-file-description locks (``F_OFD_SETLK``): like ``flock`` they belong to the open file, so
two prefetchers in one process exclude each other too, and one descriptor serves every object
(the per-object lock files this replaces cost a file creation per object on a fresh DEST, a
fifth of the prefetcher's event-loop time in ``benchmarks/prefetch_bench.py``). Where they do
not exist, POSIX record locks (``lockf``) take their place, which hold between processes only.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio

from engine.errors import UsageError
from engine.pipeline.sharing import NO_FLOCK, open_lock_file
from engine.state_folder import StateFolder

__all__ = ["FETCH_RANGE", "FetchLocks", "range_lock"]

log = logging.getLogger("engine.prefetch")

FETCH_RANGE = 1 << 30


def range_lock(fd: int, op: int, offset: int) -> None:
    """Lock (``F_WRLCK``) or unlock (``F_UNLCK``) one byte of ``fd``, without waiting."""
    ofd = getattr(fcntl, "F_OFD_SETLK", None)
    if ofd is None:  # no open-file-description locks here: POSIX record locks
        fcntl.lockf(
            fd, fcntl.LOCK_UN if op == fcntl.F_UNLCK else fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset
        )
        return
    # struct flock: l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks), padding.
    fcntl.fcntl(fd, ofd, struct.pack("hhqqixxxx", op, os.SEEK_SET, offset, 1, 0))


@dataclass(slots=True)
class _Stripe:
    holders: int = 0
    locked: bool = False
    acquiring: anyio.Event | None = None


class FetchLocks:
    """One download of an object at a time across processes (see the module docstring).

    Within this process a byte's lock is shared by its downloads (different assets: an asset
    is fetched once per epoch here); the lock is taken by the first and dropped by the last.
    """

    def __init__(self, dest: Path) -> None:
        self.path = StateFolder(dest).fetch_lock
        self._fd = open_lock_file(self.path)
        self._stripes: dict[int, _Stripe] = {}
        self._working = True

    @staticmethod
    def stripe_of(asset_id: str) -> int:
        digest = hashlib.blake2b(asset_id.encode("utf-8", "surrogatepass"), digest_size=8)
        return int.from_bytes(digest.digest(), "big") % FETCH_RANGE

    def _try_lock(self, index: int) -> bool:
        """One attempt at the byte's lock, without waiting: True once it is ours (or when this
        file system has no locks: the claims still keep paths apart)."""
        if not self._working:
            return True
        try:
            range_lock(self._fd, fcntl.F_WRLCK, index)
            return True
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            if exc.errno in NO_FLOCK:
                log.warning("no file locks on %s: downloads are not serialised", self.path)
                self._working = False
                return True
            raise UsageError(f"cannot lock {self.path}: {exc.strerror}") from None

    async def _lock(self, index: int) -> None:
        """Take the byte's lock, which another process held a moment ago: poll until it lets
        go."""
        delay = 0.01
        while True:
            await anyio.sleep(delay)
            if self._try_lock(index):
                return
            delay = min(delay * 2, 0.2)

    @contextlib.asynccontextmanager
    async def hold(self, asset_id: str) -> AsyncIterator[bool]:
        """Hold the lock of ``asset_id``'s byte; yields whether it had to wait for it."""
        index = self.stripe_of(asset_id)
        stripe = self._stripes.get(index)
        if stripe is None:
            stripe = self._stripes[index] = _Stripe()
        stripe.holders += 1
        try:
            waited = False
            while not stripe.locked:
                if stripe.acquiring is not None:
                    await stripe.acquiring.wait()
                    waited = True
                    continue
                if self._try_lock(index):
                    # Nobody had it: the usual case, with no event and no wait to pay for.
                    stripe.locked = True
                    break
                stripe.acquiring = anyio.Event()
                try:
                    await self._lock(index)
                    waited = True
                    stripe.locked = True
                finally:
                    stripe.acquiring.set()
                    stripe.acquiring = None
            yield waited
        finally:
            stripe.holders -= 1
            if stripe.holders == 0:
                del self._stripes[index]
                if stripe.locked and self._working:
                    with contextlib.suppress(OSError):
                        range_lock(self._fd, fcntl.F_UNLCK, index)

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)  # drops every lock this descriptor holds
        self._stripes.clear()
