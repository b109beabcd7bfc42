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
``flock`` on one of :data:`FETCH_STRIPES` lock files (``.assetsync/fetching/<n>.lock``, chosen by
the asset id); a prefetcher that had to wait for it first checks whether the other one has put
the file in place already. The first open of a fresh DEST's manifest (creation, migration) is
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
import stat
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import anyio

from engine.errors import LockHeldError, UsageError
from engine.pipeline.lock import LOCK_NAME, STATE_DIR, read_holder

__all__ = [
    "CLAIMS_LOCK",
    "FETCH_STRIPES",
    "FetchLocks",
    "SharedDestLock",
    "claims_locked",
    "state_dir",
]

log = logging.getLogger("engine.prefetch")

CLAIMS_LOCK = "claims.lock"
FETCH_STRIPES = 1024
_IDLE_FDS = 64
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_OPEN = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


def state_dir(dest: Path) -> Path:
    """``DEST/.assetsync``, created if missing; a symlink there is refused (writes through it
    could land outside DEST)."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create destination {dest}: {exc.strerror}") from None
    if not dest.is_dir():
        raise UsageError(f"destination {dest} is not a directory")
    state = dest / STATE_DIR
    with contextlib.suppress(FileExistsError):
        os.mkdir(state, 0o755)
    if not stat.S_ISDIR(os.lstat(state).st_mode):
        raise UsageError(f"{state} is not a directory (a symlink is not accepted)")
    return state


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
        fd = _open(state_dir(self.dest) / LOCK_NAME)
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
    fd = _open(dest / STATE_DIR / CLAIMS_LOCK)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in _NO_FLOCK:
                raise UsageError(f"cannot lock {dest}: {exc.strerror}") from None
        yield
    finally:
        os.close(fd)


@dataclass(slots=True)
class _Stripe:
    fd: int
    holders: int = 0
    locked: bool = False
    acquiring: anyio.Event | None = None


class FetchLocks:
    """One download of an object at a time across processes (see the module docstring).

    Within this process a stripe's lock is shared by its downloads (different assets: an
    asset is fetched once per epoch here); the ``flock`` is taken by the first and dropped by
    the last. Descriptors of idle stripes are kept for reuse, :data:`_IDLE_FDS` at most.
    """

    def __init__(self, dest: Path) -> None:
        self.folder = dest / STATE_DIR / "fetching"
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.folder, 0o755)
        self._stripes: dict[int, _Stripe] = {}
        self._idle: OrderedDict[int, None] = OrderedDict()

    @staticmethod
    def stripe_of(asset_id: str) -> int:
        digest = hashlib.blake2b(asset_id.encode("utf-8", "surrogatepass"), digest_size=4)
        return int.from_bytes(digest.digest(), "big") % FETCH_STRIPES

    def _stripe(self, index: int) -> _Stripe:
        stripe = self._stripes.get(index)
        if stripe is None:
            stripe = _Stripe(_open(self.folder / f"{index}.lock"))
            self._stripes[index] = stripe
        self._idle.pop(index, None)
        return stripe

    async def _lock(self, stripe: _Stripe) -> bool:
        """Take the stripe's flock; True if another process held it meanwhile."""
        waited = False
        delay = 0.01
        while True:
            try:
                fcntl.flock(stripe.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return waited
            except BlockingIOError:
                waited = True
            except OSError as exc:
                if exc.errno in _NO_FLOCK:
                    return waited  # no flock here: the claims still keep paths apart
                raise UsageError(f"cannot lock {self.folder}: {exc.strerror}") from None
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.2)

    @contextlib.asynccontextmanager
    async def hold(self, asset_id: str) -> AsyncIterator[bool]:
        """Hold the lock of ``asset_id``'s stripe; yields whether it had to wait for it."""
        index = self.stripe_of(asset_id)
        stripe = self._stripe(index)
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
                    waited = await self._lock(stripe) or waited
                    stripe.locked = True
                finally:
                    stripe.acquiring.set()
                    stripe.acquiring = None
            yield waited
        finally:
            stripe.holders -= 1
            if stripe.holders == 0:
                if stripe.locked:
                    with contextlib.suppress(OSError):
                        fcntl.flock(stripe.fd, fcntl.LOCK_UN)
                    stripe.locked = False
                self._park(index)

    def _park(self, index: int) -> None:
        self._idle[index] = None
        while len(self._idle) > _IDLE_FDS:
            old, _ = self._idle.popitem(last=False)
            stripe = self._stripes.pop(old)
            os.close(stripe.fd)

    def close(self) -> None:
        for stripe in self._stripes.values():
            with contextlib.suppress(OSError):
                os.close(stripe.fd)
        self._stripes.clear()
        self._idle.clear()
