"""Who may use a DEST at the same time as whom; the exclusive lock is :mod:`engine.pipeline.lock`.

The rule (the README's "Concurrency" section says it to users):

* ``mirror`` (and ``verify``) hold DEST's lock **exclusively**
  (:class:`engine.pipeline.lock.DestLock`): nothing else touches DEST while they run.
* A prefetcher holds the same lock file **shared** (``flock(LOCK_SH)``): any number of them may
  read from and download into one DEST at once (the workers of a DataLoader, DDP ranks, several
  training jobs), and a mirror refuses to start meanwhile (exit 4), as a prefetcher refuses to
  start during a mirror (:class:`~engine.errors.LockHeldError`).
* With a disk budget, prefetchers delete files: they share one budget, kept in the manifest
  (:mod:`engine.prefetch.budget`), where each pins the files its consumer has still to read, so
  no process evicts a file another one is about to hand out. Prefetchers of one DEST must agree
  on the budget (or all have none); one that does not is refused with a usage error.

Prefetchers sharing a DEST write one manifest: SQLite serialises their transactions (WAL,
``BEGIN IMMEDIATE``, a busy timeout). Before downloading to a path nobody recorded yet, a
prefetcher *claims* it: under a short exclusive ``flock`` on ``.assetsync/claims.lock`` it checks
that no other asset holds the path (or a folder/file in its way) and records the asset with that
path in state ``missing`` ("being fetched"). Two prefetchers therefore never place two assets on
one path. A claim left by a killed prefetcher is an ordinary ``missing`` row: the next mirror or
prefetcher fetches that asset to that path.

The first open of a fresh DEST's manifest (creation, migration) is made under the claims lock
too: the manifest's compatibility check is not atomic against a
concurrent first migration.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from engine.errors import LockHeldError, UsageError
from engine.pipeline.lock import read_holder
from engine.state_folder import StateFolder

__all__ = ["NO_FLOCK", "SharedDestLock", "claims_locked", "open_lock_file"]

log = logging.getLogger("engine.pipeline")

NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_OPEN = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


def open_lock_file(path: Path) -> int:
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
        fd = open_lock_file(folder.lock)
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
            if exc.errno not in NO_FLOCK:
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
def claims_locked(state: StateFolder) -> Iterator[None]:
    """The short exclusive section in which a prefetcher checks and records path claims.
    Blocking (the holder keeps it for one manifest transaction); call it off the event loop."""
    fd = open_lock_file(state.claims_lock)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in NO_FLOCK:
                raise UsageError(f"cannot lock {state.dest}: {exc.strerror}") from None
        yield
    finally:
        os.close(fd)
