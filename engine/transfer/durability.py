"""Group commit: small files placed without fsync, made durable together by one barrier.

Making each small file durable on its own costs an fsync of the file and one of its folder, in a
worker thread, per file (0.14-0.35 ms of CPU and 10-19 GIL hand-offs a file, measured). With
group commit the transfer core writes and renames a small object on the event loop and records
it here; :meth:`PlacedFiles.sync` (``Transferer.sync_placed``) later makes every file recorded so
far durable in one worker-thread hop, in one of two ways (``transfer.barrier``):

``files``
    ``fdatasync`` of each file, then one ``fsync`` per folder that received a file or a new
    subfolder. Bounded by our own data: a barrier costs what the batch wrote, whatever else is
    dirty on the disk. The fdatasyncs are issued from :data:`SYNC_THREADS` threads at once:
    each one ends in a flush of the device's cache, and the block layer merges flushes that
    wait together (one after the other, 2,000 files took 13-19 s on this project's benchmark
    disk, a flush each).
``syncfs``
    ``syncfs(2)`` on DEST's file system (and on the file system of any folder of the batch that
    sits on another one). Flushes everything dirty on that file system, other programs' data
    included, so its time is not ours to bound on a shared disk; fewest syscalls.

Order of events for one file, and what a crash leaves:

1. the bytes are written to a new partial file, then it is renamed to its final path. A killed
   process leaves either no file there or the whole file (the page cache survives the process);
2. the barrier returns: data, inode and folder entry are on stable storage;
3. only then may the caller record the file (a manifest row). A power cut before 2 may leave the
   final path empty, short or missing, but then no row vouches for it: the next run, which
   trusts only recorded files, downloads it again.

A failed barrier (``EIO``, ``ENOSPC`` from writeback) raises :class:`LocalStorageError` (or
:class:`DiskFullError`); none of the files it covered may then be recorded, and since Linux
forgets a writeback error once reported, a later barrier cannot vouch for them either: every
later barrier of this transferer raises the same error.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import resource
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import partial
from typing import Literal

from engine.errors import LocalStorageError
from engine.transfer.partial import storage_error
from engine.transfer.placement import Folder, Walk
from engine.transfer.threads import in_thread

__all__ = ["SYNC_THREADS", "BarrierMode", "PlacedFiles", "syncfs_available"]

BarrierMode = Literal["files", "syncfs"]

# Threads issuing a ``files`` barrier's fdatasyncs together (their flushes merge).
SYNC_THREADS = 8


def _held_cap() -> int:
    """How many placed files' descriptors a batch keeps open for its fdatasync (beyond that,
    a file is opened again by name at the barrier): a quarter of the descriptor limit."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        soft = 1024
    if soft == resource.RLIM_INFINITY:
        soft = 4096
    return max(16, min(1024, soft // 4))


_syncfs: Callable[[int], int] | None = None


def syncfs_available() -> bool:
    """Whether ``syncfs(2)`` can be called here (glibc/musl on Linux)."""
    global _syncfs
    if _syncfs is None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fn = libc.syncfs
        except (OSError, AttributeError):
            return False
        fn.argtypes = [ctypes.c_int]
        fn.restype = ctypes.c_int
        _syncfs = fn
    return True


def _syncfs_fd(fd: int) -> None:
    assert _syncfs is not None
    if _syncfs(fd) != 0:  # ctypes releases the GIL around the call
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


class _Batch:
    """What one barrier must make durable. Filled on the event loop; synced (and its
    descriptors closed) by one worker thread."""

    __slots__ = ("by_name", "count", "error", "fds", "folders", "owned", "ran")

    def __init__(self) -> None:
        self.ran = False
        self.error: LocalStorageError | None = None
        self.count = 0
        self.fds: list[int] = []  # placed files, still open (``files`` mode)
        self.by_name: list[tuple[Folder, str]] = []  # placed files whose descriptor was closed
        self.folders: dict[int, Folder] = {}  # id -> folder that got an entry
        self.owned: list[int] = []  # folder descriptors opened for the batch's walks only

    def merge(self, other: _Batch) -> None:
        self.count += other.count
        self.fds += other.fds
        self.by_name += other.by_name
        self.folders.update(other.folders)
        self.owned += other.owned

    def run(self, mode: BarrierMode, pool: ThreadPoolExecutor | None = None) -> None:
        """Blocking: make the batch durable, then close its descriptors (even on failure).
        ``pool``: threads to spread the ``files`` mode's fdatasyncs over."""
        self.ran = True
        try:
            if mode == "syncfs":
                devices: dict[int, int] = {}
                for folder in self.folders.values():
                    devices.setdefault(folder.dev, folder.fd)
                for fd in devices.values():
                    _syncfs_fd(fd)
                return
            work: list[Callable[[], None]] = [partial(os.fdatasync, fd) for fd in self.fds]
            work += [partial(_fdatasync_by_name, folder, name) for folder, name in self.by_name]
            if pool is None or len(work) < 2:
                for call in work:
                    call()
            else:
                # Interleaved slices, one per thread; every slice runs to its end (or error)
                # before the descriptors are closed below.
                slices = [work[i::SYNC_THREADS] for i in range(min(SYNC_THREADS, len(work)))]
                futures = [pool.submit(_run_all, part) for part in slices]
                errors = [f.exception() for f in futures]
                first = next((e for e in errors if e is not None), None)
                if first is not None:
                    raise first
            for folder in self.folders.values():
                os.fsync(folder.fd)
        except OSError as exc:
            self.error = storage_error(exc, "cannot make the placed files durable")
            raise self.error from None
        finally:
            self.close()

    def close(self) -> None:
        fds = self.fds + self.owned
        self.fds = []
        self.owned = []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def _run_all(calls: list[Callable[[], None]]) -> None:
    for call in calls:
        call()


def _fdatasync_by_name(folder: Folder, name: str) -> None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder.fd)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP):
            return  # removed or replaced since it was placed: nothing of ours to keep
        raise
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


class PlacedFiles:
    """The files placed since the last barrier, and the barrier (one per transferer)."""

    def __init__(self, mode: BarrierMode, executor: Executor) -> None:
        if mode == "syncfs" and not syncfs_available():
            mode = "files"
        self.mode: BarrierMode = mode
        self._executor = executor
        self._batch = _Batch()
        self._held_cap = _held_cap()
        self._order = asyncio.Lock()  # barriers run one at a time, in the order called
        self._failed: LocalStorageError | None = None
        self._sync_pool: ThreadPoolExecutor | None = None
        if self.mode == "files":
            self._sync_pool = ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="assetsync-sync")

    @property
    def pending(self) -> int:
        """Files placed since the last barrier began."""
        return self._batch.count

    def add(self, fd: int, walk: Walk, name: str) -> None:
        """A file was renamed to ``name`` in ``walk.folder``; ``fd`` is its open descriptor.
        Takes over ``fd`` and the walk's owned descriptors (event loop only)."""
        batch = self._batch
        batch.count += 1
        folders = batch.folders
        folder = walk.folder
        folders[id(folder)] = folder
        for parent in walk.created_in:
            folders[id(parent)] = parent
        if walk.owned:
            batch.owned += walk.owned
            walk.owned = []
        if self.mode == "files" and len(batch.fds) < self._held_cap:
            batch.fds.append(fd)
            return
        os.close(fd)
        if self.mode == "files":
            batch.by_name.append((folder, name))

    async def sync(self) -> int:
        """Make every file :meth:`add`-ed before this call durable; returns how many files
        this barrier covered. See :meth:`engine.transfer.Transferer.sync_placed`."""
        if self._failed is not None:
            raise self._failure()
        batch, self._batch = self._batch, _Batch()
        try:
            async with self._order:
                if self._failed is None and batch.count:
                    run = partial(batch.run, self.mode, self._sync_pool)
                    await in_thread(self._executor, run)
        finally:
            if batch.error is not None:
                if self._failed is None:
                    self._failed = batch.error
            elif not batch.ran:
                # Cancelled (or refused) before it ran: the next barrier covers these too.
                batch.merge(self._batch)
                self._batch = batch
        if batch.error is not None:
            raise batch.error
        if self._failed is not None:
            raise self._failure()
        return batch.count

    def _failure(self) -> LocalStorageError:
        assert self._failed is not None
        return type(self._failed)(
            f"an earlier durability barrier failed, nothing placed since is vouched for: "
            f"{self._failed}"
        )

    def close(self) -> None:
        """Drop what no barrier covered (its files stay in place, not made durable)."""
        batch, self._batch = self._batch, _Batch()
        batch.close()
        if self._sync_pool is not None:
            self._sync_pool.shutdown(wait=True)
            self._sync_pool = None
