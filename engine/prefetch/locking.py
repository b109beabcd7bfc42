"""Who may use a DEST at the same time as whom.

The rule (the README's "Concurrency" section says it to users):

* ``mirror`` (and ``verify``) hold DEST's lock **exclusively**
  (:class:`engine.pipeline.lock.DestLock`): nothing else touches DEST while they run.
* A prefetcher **without** a disk budget holds the same lock file **shared** (``flock(LOCK_SH)``):
  any number of them may read from and download into one DEST at once (the workers of a
  DataLoader, several training jobs), and a mirror refuses to start meanwhile (exit 4), as a
  prefetcher refuses to start during a mirror (:class:`~engine.errors.LockHeldError`).
* A prefetcher **with** a disk budget deletes files, so it takes the lock **exclusively**, like a
  mirror: no other process can be reading a file it evicts.

Prefetchers sharing a DEST write one manifest: SQLite serialises their transactions (WAL,
``BEGIN IMMEDIATE``, a busy timeout). Before downloading to a path nobody recorded yet, a
prefetcher *claims* it: under a short exclusive ``flock`` on ``.assetsync/claims.lock`` it checks
that no other asset holds the path (or a folder/file in its way) and records the asset with that
path in state ``missing`` ("being fetched"). Two prefetchers therefore never place two assets on
one path. A claim left by a killed prefetcher is an ordinary ``missing`` row: the next mirror or
prefetcher fetches that asset to that path.

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
The first open of a fresh DEST's manifest (creation, migration) is
made under the claims lock too: the manifest's compatibility check is not atomic against a
concurrent first migration.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import anyio

from engine.errors import LockHeldError, UsageError
from engine.pipeline.lock import read_holder
from engine.state_folder import StateFolder

__all__ = [
    "FETCH_RANGE",
    "FetchLocks",
    "SharedDestLock",
    "claims_locked",
]

log = logging.getLogger("engine.prefetch")

FETCH_RANGE = 1 << 30
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_OPEN = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


def _open(path: Path) -> int:
    try:
        return os.open(path, _OPEN, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(f"{path} is a symlink; refusing to follow it") from None
        raise UsageError(f"cannot open lock file {path}: {exc.strerror}") from None


class SharedDestLock:
    """DEST's lock held shared: prefetchers together, never with a mirror. Never waits."""

    def __init__(self, dest: Path) -> None:
        self.dest = Path(dest)
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            raise RuntimeError("lock already held by this object")
        folder = StateFolder(self.dest)
        folder.create()
        fd = _open(folder.lock)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_holder(self.dest)
            who = holder.describe() if holder is not None else "holder not recorded"
            raise LockHeldError(
                f"a mirror or verify run holds the lock on {self.dest}: {who}"
            ) from None
        except OSError as exc:
            if exc.errno not in _NO_FLOCK:
                os.close(fd)
                raise UsageError(f"cannot lock {self.dest}: {exc.strerror}") from None
            log.warning("flock unsupported on %s: prefetching without the DEST lock", self.dest)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # drops the flock

    def __enter__(self) -> SharedDestLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


@contextlib.contextmanager
def claims_locked(dest: Path) -> Iterator[None]:
    """The short exclusive section in which a prefetcher checks and records path claims.
    Blocking (the holder keeps it for one manifest transaction); call it off the event loop."""
    fd = _open(StateFolder(dest).claims_lock)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in _NO_FLOCK:
                raise UsageError(f"cannot lock {dest}: {exc.strerror}") from None
        yield
    finally:
        os.close(fd)


def _range_lock(fd: int, op: int, offset: int) -> None:
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
        self._fd = _open(self.path)
        self._stripes: dict[int, _Stripe] = {}
        self._working = True

    @staticmethod
    def stripe_of(asset_id: str) -> int:
        digest = hashlib.blake2b(asset_id.encode("utf-8", "surrogatepass"), digest_size=8)
        return int.from_bytes(digest.digest(), "big") % FETCH_RANGE

    async def _lock(self, index: int) -> bool:
        """Take the byte's lock; True if another process held it meanwhile."""
        waited = False
        delay = 0.01
        while self._working:
            try:
                _range_lock(self._fd, fcntl.F_WRLCK, index)
                return waited
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    waited = True
                elif exc.errno in _NO_FLOCK:
                    # No locks on this file system: the claims still keep paths apart.
                    log.warning("no file locks on %s: downloads are not serialised", self.path)
                    self._working = False
                else:
                    raise UsageError(f"cannot lock {self.path}: {exc.strerror}") from None
            if waited:
                await anyio.sleep(delay)
                delay = min(delay * 2, 0.2)
        return waited

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
                stripe.acquiring = anyio.Event()
                try:
                    waited = await self._lock(index) or waited
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
                        _range_lock(self._fd, fcntl.F_UNLCK, index)

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)  # drops every lock this descriptor holds
        self._stripes.clear()
