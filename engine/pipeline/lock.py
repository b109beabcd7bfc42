"""The lock that keeps two runs off one DEST: ``DEST/.assetsync/lock``.

How it works, and why:

1. **flock is the lock.** We open the lock file (never following a symlink) and take
   ``fcntl.flock(LOCK_EX | LOCK_NB)`` on it. The kernel releases it when the process dies, however
   it dies (SIGKILL, OOM, power loss of a container), so a crashed cron job never blocks the next
   one, and no cleanup code has to run for the lock to be free. The file is never deleted:
   unlinking a lock file lets a third process lock a fresh inode while a second still holds the
   old one, so both would run.
2. **The file says who holds it.** The holder writes one JSON line: pid, host, boot id, start time.
   A run that finds the lock busy reads it for its one-line error. Release empties the file, so
   a non-empty file whose flock is free was left by a holder that did not finish.
3. **Stale detection beyond flock.** flock is reliable between processes of one kernel (also
   across containers sharing the directory). Over NFS it is usually mapped to NLM byte-range
   locks, but not on every client and server (``local_lock=flock``, some FUSE/SMB mounts), and
   then two hosts could both get it. So when we get the flock but the file names a holder on
   *another kernel* (different boot id):

   - if that holder's heartbeat (the file's mtime, touched every ``stale_after / 8`` by a daemon
     thread while the lock is held) is younger than ``stale_after``, it is presumed alive and we
     refuse (:class:`~engine.errors.LockHeldError`);
   - if it is older, the holder is presumed dead and the lock is reclaimed;
   - the same host name with a different boot id is this machine before a reboot: reclaimed.

   A holder on this kernel whose flock we could take is gone (dead, or its pid reused): reclaimed
   at once, whatever the age, because flock already proved it.
4. **File systems without flock** (``ENOLCK``/``EOPNOTSUPP``): the record alone decides (a live
   pid on this kernel, or a fresh heartbeat elsewhere, holds it). This mode has a small race
   window between reading and writing the record; it is logged as a warning.

Nothing is written outside DEST: ``DEST/.assetsync`` must be a real directory (a symlink there
is refused) and the lock file is opened with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from engine.errors import LockHeldError, UsageError
from engine.host import boot_id, pid_alive
from engine.state_folder import StateFolder

__all__ = ["DestLock", "LockInfo", "read_holder"]

log = logging.getLogger("engine.pipeline.lock")

_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


@dataclass(frozen=True, slots=True)
class LockInfo:
    """What the lock file says about its holder. ``heartbeat`` is the file's mtime."""

    pid: int
    host: str
    boot_id: str | None
    started_at: float
    heartbeat: float

    @staticmethod
    def parse(text: str, heartbeat: float) -> LockInfo | None:
        try:
            data: Any = json.loads(text)
            return LockInfo(
                pid=int(data["pid"]),
                host=str(data["host"]),
                boot_id=str(data["boot_id"]) if data.get("boot_id") else None,
                started_at=float(data["started_at"]),
                heartbeat=heartbeat,
            )
        except (ValueError, TypeError, KeyError):
            return None

    def dump(self) -> str:
        record = {
            "pid": self.pid,
            "host": self.host,
            "boot_id": self.boot_id,
            "started_at": self.started_at,
        }
        return json.dumps(record) + "\n"

    def describe(self) -> str:
        since = datetime.fromtimestamp(self.started_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"pid {self.pid} on {self.host} since {since}"


def read_holder(dest: Path) -> LockInfo | None:
    """The holder recorded in DEST's lock file, if any (for ``assetsync status``)."""
    path = StateFolder(dest).lock
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return _read_record(fd)
    finally:
        os.close(fd)


def _read_record(fd: int) -> LockInfo | None:
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, 64 * 1024)
    if not data.strip():
        return None
    return LockInfo.parse(data.decode("utf-8", "replace"), os.fstat(fd).st_mtime)


class DestLock:
    """``with DestLock(dest, stale_after=settings.lock_stale_after): ...``

    :meth:`acquire` never waits: a busy lock raises :class:`~engine.errors.LockHeldError` at
    once (a cron job should not pile up behind a long run). Not re-entrant.
    """

    def __init__(
        self,
        dest: Path,
        *,
        stale_after: float = 6 * 3600.0,
        create: bool = True,
        clock: Callable[[], float] = time.time,
        heartbeat_every: float | None = None,
        path: Path | None = None,
    ) -> None:
        if stale_after <= 0:
            raise ValueError("stale_after must be positive")
        self.dest = Path(dest)
        # Another lock of DEST's state folder: a shard's (StateFolder.shard_files).
        self._path = StateFolder(self.dest).lock if path is None else Path(path)
        self.stale_after = stale_after
        self._create = create
        self._clock = clock
        self._heartbeat_every = heartbeat_every or max(1.0, min(300.0, stale_after / 8))
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.info: LockInfo | None = None

    @property
    def path(self) -> Path:
        return self._path

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> DestLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    # -- acquire ---------------------------------------------------------------------------

    def acquire(self) -> LockInfo:
        if self._fd is not None:
            raise RuntimeError("lock already held by this object")
        folder = StateFolder(self.dest)
        folder.create(create_dest=self._create)
        path = self._path
        for _ in range(5):  # only repeats if someone replaced the file under us
            fd = self._open(path)
            try:
                flocked = self._flock(fd)
                if flocked and not self._same_file(fd, path):
                    os.close(fd)
                    continue
                previous = _read_record(fd)
                self._check_previous(previous, flocked)
                info = self._write_record(fd)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            self.info = info
            self._start_heartbeat()
            if previous is not None:
                log.warning("reclaimed a stale lock on %s (%s)", self.dest, previous.describe())
            return info
        raise LockHeldError(f"{self.dest} is locked: the lock file keeps changing")

    def _open(self, path: Path) -> int:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UsageError(f"{path} is a symlink; refusing to follow it") from None
            raise UsageError(f"cannot open lock file {path}: {exc.strerror}") from None

    def _flock(self, fd: int) -> bool:
        """True when we hold the flock; False when flock is unsupported here."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_record(fd)
            who = holder.describe() if holder is not None else "holder not yet recorded"
            raise LockHeldError(f"another run holds the lock on {self.dest}: {who}") from None
        except OSError as exc:
            if exc.errno in _NO_FLOCK:
                log.warning("flock unsupported on %s; using the lock record only", self.dest)
                return False
            raise UsageError(f"cannot lock {self.dest}: {exc.strerror}") from None
        return True

    @staticmethod
    def _same_file(fd: int, path: Path) -> bool:
        try:
            on_disk = os.lstat(path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)

    def _check_previous(self, previous: LockInfo | None, flocked: bool) -> None:
        """Refuse when the record names a holder we must presume alive (see the docstring)."""
        if previous is None:
            return
        here, host = boot_id(), socket.gethostname()
        if previous.boot_id is not None and here is not None:
            same_kernel = previous.boot_id == here
            rebooted = not same_kernel and previous.host == host
        else:  # no boot ids (not Linux): the host name is all we have
            same_kernel, rebooted = previous.host == host, False
        if same_kernel:
            if flocked or not pid_alive(previous.pid):
                return  # flock (or a dead pid) proves the holder is gone
            raise LockHeldError(f"another run holds the lock on {self.dest}: {previous.describe()}")
        if rebooted:
            return  # this machine before a reboot: that process is gone
        age = self._clock() - previous.heartbeat
        if age > self.stale_after:
            return
        raise LockHeldError(
            f"another run holds the lock on {self.dest}: {previous.describe()} "
            f"(other host; stale after {self.stale_after:.0f}s without heartbeat)"
        )

    def _write_record(self, fd: int) -> LockInfo:
        now = self._clock()
        info = LockInfo(
            pid=os.getpid(),
            host=socket.gethostname(),
            boot_id=boot_id(),
            started_at=now,
            heartbeat=now,
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.dump().encode("utf-8"), 0)
        os.fsync(fd)
        return info

    # -- heartbeat and release -------------------------------------------------------------

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._beat, name="assetsync-lock-heartbeat", daemon=True
        )
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self._heartbeat_every):
            self.touch()

    def touch(self) -> None:
        """Refresh the heartbeat (the file's mtime) now."""
        fd = self._fd
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.utime(fd)

    def release(self) -> None:
        """Empty the record and drop the flock. Safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # an empty record means "released cleanly"
        finally:
            os.close(fd)  # closing the last descriptor drops the flock
        self.info = None
