"""The transfer core's entry point: :meth:`Transferer.fetch` — one signed object, one file.

Flow of one fetch::

    open partial (lock, sidecar) ──resumable──▶ Job(segments with their bytes on disk)
            │ nothing usable                         │
            ▼                                        │
    first request, Range 0..segment_size-1 (first.py)│
            │ ≤ chunk_size: body read whole, hashed, │
            │ written and placed on the event loop   │
            ▼ (fsync each file: one thread hop)      ▼
    Job.run: workers fill segments (parallel above segment_threshold), SHA-256 on the way
            │ ObjectChanged (ETag differs, 200 to a range, 416) → discard, restart from zero
            ▼
    check size → fsync (setting) → rename into place under dest_root (no symlink followed)
    → drop the sidecar

Durability (``transfer.fsync``, on by default) comes two ways. A caller that records files
only after a barrier says so with ``group_commit=True``: small objects are then written and
renamed without fsync, and :meth:`Transferer.sync_placed` makes them durable together
(:mod:`engine.transfer.durability`); their results say ``awaits_barrier``. Otherwise every file
is durable when :meth:`Transferer.fetch` returns (fsync of the file before its rename, of its
folder after). Objects above ``chunk_size`` are always synced before their rename: their fsync
is a small part of their cost, and it happens while their hash is finished.

Every request goes through :meth:`Context.with_retries`: the URL is made valid for
``url_margin`` first; a refused URL is refreshed (a freshly obtained one being refused is
permanent); connection errors, resets, stalls, 5xx and 429 back off exponentially with jitter or
for ``Retry-After``; the budget resets when more bytes are kept on disk than ever before (see
:class:`~engine.transfer.retry.Backoff`).

What a server can make a fetch do is bounded: an object announced above ``max_object_size`` or
too large for the disk's room above ``disk_reserve`` is refused before a byte is written; a
body never goes past its announced end; a body of unannounced length stops at
``max_object_size``; every body keeps to ``timeouts.min_rate``; the run's writes stop with
:class:`DiskFullError` before the disk is full (:mod:`engine.transfer.disk_room`); the plan of
a claimed size takes constant memory (:class:`~engine.transfer.ranges.SegmentPlan`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import aiohttp
import anyio
import anyio.to_thread

from engine.errors import IntegrityError, ObjectChanged, PermanentTransferError
from engine.settings import TransferOptions
from engine.signed_urls import SignedUrl
from engine.transfer.context import Context
from engine.transfer.disk_room import DiskGuard
from engine.transfer.durability import PlacedFiles
from engine.transfer.first import start_fresh
from engine.transfer.http1 import StorageHttp
from engine.transfer.partial import Partial, PartialDir, ResumeState, Validator, storage_error
from engine.transfer.placement import (
    DestDirs,
    check_rel_path,
    create_small,
    place,
    sha256_of,
    write_all,
    write_and_place,
)
from engine.transfer.progress import ProgressEvent, TransferStats
from engine.transfer.ranges import SegmentProgress, plan_segments
from engine.transfer.segments import Job, RangeIgnored
from engine.transfer.threads import ThreadSlots, in_thread
from engine.transfer.urls import UrlProvider, UrlSource

__all__ = ["ObjectRef", "TransferResult", "Transferer"]

# DEST folders whose descriptors a transferer keeps (one per run, in practice); a fetch into
# yet another one opens and closes its folders itself.
_KEPT_DESTS = 8

# Threads that read large bodies from their sockets. Mirroring 4 x 1 GiB without fsync
# (`python -m benchmarks run --only large --tools assetsync --assetsync-arg=--no-fsync`, one
# run each): 741 MB/s with 8, 785 with 16, 807 with 32; bodies beyond them use the event loop.
_PUMP_THREADS = 16


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """The identity of one stored object: the asset and its (immutable) data."""

    asset_id: str
    data_id: str


@dataclass(frozen=True, slots=True)
class TransferResult:
    """A file in place. ``bytes_downloaded`` came over the network in this fetch (all
    attempts); ``bytes_resumed`` were already on disk from an earlier attempt or process.

    ``awaits_barrier``: the file is in place but not yet durable: it becomes so when the next
    :meth:`Transferer.sync_placed` returns, and must not be recorded before (only with
    ``group_commit=True`` and ``fsync`` on)."""

    rel_path: PurePosixPath
    size: int
    sha256: str
    etag: str | None
    content_type: str | None
    last_modified: str | None
    bytes_downloaded: int
    bytes_resumed: int
    retries: int
    refreshes: int
    resumed: bool
    segmented: bool
    restarts: int = 0
    awaits_barrier: bool = False


class Transferer:
    """Downloads objects to files. One per run; many :meth:`fetch` calls may run concurrently.

    ``http`` is the storage connection pool (:class:`~engine.transfer.http1.StorageHttp`),
    shared so connections are reused across objects. An ``aiohttp.ClientSession`` is accepted
    too: its connector's limits then size a pool the transferer owns (storage bytes never go
    through aiohttp, see :mod:`engine.transfer.http1`). ``state_dir`` holds partial files
    (``state_dir/partial``) and should be on the file system of the destinations so that
    placement is a rename (otherwise it is a copy).

    ``group_commit``: the caller records a file whose result ``awaits_barrier`` only after a
    later :meth:`sync_placed` returned (see there). Without it, with ``options.fsync`` on,
    every file is durable when :meth:`fetch` returns, at one fsync of the file and one of its
    folder each.
    """

    def __init__(
        self,
        http: StorageHttp | aiohttp.ClientSession,
        options: TransferOptions,
        state_dir: Path,
        on_progress: Callable[[ProgressEvent], None] | None = None,
        clock: Callable[[], float] = time.time,
        *,
        group_commit: bool = False,
    ) -> None:
        t = options.timeouts
        self._owns_http = not isinstance(http, StorageHttp)
        if isinstance(http, StorageHttp):
            self.http = http
        else:
            connector = http.connector
            self.http = StorageHttp(
                limit=connector.limit if connector is not None else 100,
                limit_per_host=connector.limit_per_host if connector is not None else 0,
                connect_timeout=t.connect,
            )
        self.options = options
        self.state_dir = Path(state_dir)
        self.on_progress = on_progress
        self.clock = clock
        self.stats = TransferStats()
        # The read timeout bounds the wait for headers; the body's stall timeout replaces it
        # once they came. Waiting for a pooled connection counts as neither.
        self._timeout = t.read
        # Hashers hold a thread for a whole download; more of them than cores gains nothing.
        self._hash_limiter = anyio.CapacityLimiter(max(2, os.cpu_count() or 2))
        self._partial_dir = PartialDir(self.state_dir)
        self._disk = DiskGuard(self._partial_dir, options.disk_reserve)
        # File-system work off the loop: batches of large bodies (one in flight per body),
        # small objects written and placed whole, fsync and placement. An own pool, so that it
        # never queues behind (or holds up) DNS lookups in the loop's default executor.
        self._io = ThreadPoolExecutor(max_workers=16, thread_name_prefix="assetsync-io")
        # Threads that read large bodies straight from their sockets (engine.transfer.body).
        self._pumps = ThreadSlots(_PUMP_THREADS, "assetsync-pump")
        # Jitter needs randomness, not a fresh generator (seeding one costs) per fetch.
        self._rng = random.Random()
        # Small objects placed since the last barrier (group commit with fsync on), else None.
        self._placed = (
            PlacedFiles(options.barrier, self._io) if group_commit and options.fsync else None
        )
        self._dests: dict[Path, DestDirs] = {}
        self._last_dest: DestDirs | None = None
        # The loop every fetch runs on, taken once: asyncio.get_running_loop() costs a getpid.
        self._loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()

    def close(self) -> None:
        """Release the writer threads and the descriptors (idempotent). Files placed since the
        last :meth:`sync_placed` stay where they are, not made durable."""
        self._io.shutdown(wait=True)
        self._pumps.shutdown()
        if self._placed is not None:
            self._placed.close()
        for dirs in self._dests.values():
            dirs.close()
        self._dests.clear()
        self._last_dest = None
        self._partial_dir.close()
        if self._owns_http:
            self.http.close()

    async def sync_placed(self) -> int:
        """The durability barrier of group commit: returns once every file whose
        :meth:`fetch` returned (with ``awaits_barrier``) before this call is durable — its
        bytes, its inode and its folder's entry on stable storage — and says how many files
        this call made so. One worker-thread hop for all of them (``transfer.barrier``:
        fdatasync of each file and fsync of each folder, or one ``syncfs`` of DEST's file
        system). Without group commit, or with fsync off, there is nothing to do: returns 0.

        The contract a caller builds on: record (commit a manifest row for) a file whose result
        ``awaits_barrier`` only after a ``sync_placed()`` called after that ``fetch`` returned
        has returned. A process killed at any moment then leaves no file recorded without its
        bytes; a power cut leaves unrecorded files possibly short, which the next run fetches
        again since nothing vouches for them.

        Barriers run one at a time in the order called; a cancelled one leaves its files to the
        next. Raises :class:`~engine.errors.LocalStorageError` (or ``DiskFullError``) when
        the file system reports a write-back error: the files it covered must not be recorded,
        and every later barrier raises too (the kernel reports such an error once, so no later
        barrier could vouch for them).
        """
        if self._placed is None:
            return 0
        return await self._placed.sync()

    @property
    def awaiting_barrier(self) -> int:
        """Files placed since the last barrier began, not yet durable."""
        return self._placed.pending if self._placed is not None else 0

    def _dest_dirs(self, dest_root: Path) -> DestDirs:
        last = self._last_dest
        if last is not None and (last.path is dest_root or last.path == dest_root):
            return last
        dirs = self._dests.get(dest_root)
        if dirs is None:
            dirs = DestDirs(dest_root, keep=len(self._dests) < _KEPT_DESTS)
            if dirs.keeps:
                self._dests[dest_root] = dirs
        self._last_dest = dirs
        return dirs

    async def __aenter__(self) -> Transferer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    async def fetch(
        self,
        ref: ObjectRef,
        url: str | SignedUrl | None,
        refresh: UrlProvider,
        dest_root: Path,
        rel_path: PurePosixPath,
    ) -> TransferResult:
        """Download ``ref`` to ``dest_root/rel_path``: afterwards the verified file is there,
        or nothing new is. ``url`` is the listing's URL (None: ask ``refresh`` first).
        Raises only :class:`~engine.errors.EngineError` subclasses."""
        parts = check_rel_path(rel_path)
        options = self.options
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        urls = UrlSource(
            url,
            refresh,
            margin=options.url_margin,
            unknown_lifetime=options.unknown_url_lifetime,
            clock=self.clock,
            on_refresh=self._count_refresh,
        )
        ctx = Context(
            asset_id=ref.asset_id,
            data_id=ref.data_id,
            loop=loop,
            session=self.http,
            options=options,
            read_timeout=self._timeout,
            clock=self.clock,
            urls=urls,
            stats=self.stats,
            on_progress=self.on_progress,
            executor=self._io,
            rng=self._rng,
            disk=self._disk,
            pumps=self._pumps,
        )
        partial = Partial(self._partial_dir, ref.asset_id, ref.data_id)
        try:
            resume = partial.open()
            dirs = self._dest_dirs(dest_root)
            result = await self._download(ctx, partial, resume, dirs, parts, rel_path)
        except Exception:
            self.stats.failures += 1
            ctx.emit("failed", 0, 0, None)
            raise
        finally:
            partial.close()
        self.stats.files += 1
        self.stats.bytes += result.bytes_downloaded
        ctx.emit("done", 0, result.size, result.size)
        return result

    def _count_refresh(self) -> None:
        self.stats.refreshes += 1

    async def _download(
        self,
        ctx: Context,
        partial: Partial,
        resume: ResumeState | None,
        dirs: DestDirs,
        parts: tuple[str, ...],
        rel_path: PurePosixPath,
    ) -> TransferResult:
        ranged = True
        resumed = 0
        workers = 1
        while True:
            job: Job | None = None
            try:
                if resume is not None:
                    job = self._resumed_job(ctx, partial, resume)
                    first = None
                    self.stats.resumes += 1
                    validator = resume.validator
                    resume = None
                else:
                    fresh = await start_fresh(ctx, partial, ranged)
                    job, first, validator = fresh.job, fresh.first, fresh.validator
                    digest = fresh.digest
                    if fresh.body is not None:
                        self._disk.charge(validator.size)
                        digest, pending = await self._place_small(
                            partial, fresh.body, validator.size, dirs, parts
                        )
                        # Read whole and written in one go: its bytes count once they are in place.
                        ctx.emit("start", 0, 0, validator.size)
                        if ctx.emit_bytes is not None and validator.size:
                            ctx.emit_bytes(validator.size, validator.size, validator.size)
                        return self._result(ctx, validator, digest, rel_path, 0, 1, pending)
                if job is not None:
                    resumed = job.resumed_bytes
                    ctx.emit("start", 0, resumed, job.size)
                    workers = self._workers(job)
                    digest = await job.run(workers, first, self._hash_limiter)
                break
            except ObjectChanged as exc:
                if isinstance(exc, RangeIgnored):
                    ranged = False
                if ctx.restarts >= self.options.retry.attempts:
                    raise
                partial.discard()
                resume = None
                ctx.emit_restart(job.resumed_bytes + job.downloaded if job is not None else 0)
                resumed = 0
        assert digest is not None
        on_disk = partial.size_on_disk()
        if on_disk != validator.size:
            raise IntegrityError(
                f"{partial.path}: {on_disk} bytes on disk, {validator.size} expected"
            )
        await self._place(partial, dirs, parts, synced=job is not None and job.synced)
        return self._result(ctx, validator, digest, rel_path, resumed, workers, False)

    @staticmethod
    def _result(
        ctx: Context,
        validator: Validator,
        digest: str,
        rel_path: PurePosixPath,
        resumed: int,
        workers: int,
        awaits_barrier: bool,
    ) -> TransferResult:
        return TransferResult(
            rel_path=rel_path,
            size=validator.size,
            sha256=digest,
            etag=validator.etag,
            content_type=validator.content_type,
            last_modified=validator.last_modified,
            bytes_downloaded=ctx.received,
            bytes_resumed=resumed,
            retries=ctx.retries,
            refreshes=ctx.urls.refreshes,
            resumed=resumed > 0,
            segmented=workers > 1,
            restarts=ctx.restarts,
            awaits_barrier=awaits_barrier,
        )

    async def _place_small(
        self,
        partial: Partial,
        body: list[bytes],
        size: int,
        dirs: DestDirs,
        parts: tuple[str, ...],
    ) -> tuple[str, bool]:
        """Hash, write and place a small object received whole; returns the SHA-256 and
        whether the file awaits a barrier.

        On the event loop, without an ``await`` between creating the file and renaming it: a
        small write to the page cache costs less than a thread hop (85-100 µs against 110-163 µs
        for 64 KiB, and a tenth of the GIL hand-offs, measured for issue 13). Only a file that
        must be durable on its own (fsync without group commit) goes to a worker thread, since
        an fsync on the loop would hold up every other transfer."""
        dir_fd = partial.dir_fd
        name = partial.name
        placed = self._placed
        if placed is None and self.options.fsync:
            walk = dirs.walk(parts)
            try:
                # The hash too: here writer threads wait for the GIL, and hashlib on the loop
                # (which releases it for large updates) would hand it over once more per file.
                digest = await in_thread(
                    self._io,
                    lambda: write_and_place(dir_fd, name, body, size, dirs, parts, walk),
                    self._loop,
                )
                return digest, False
            finally:
                walk.close_owned()
        digest = sha256_of(body)
        fd = create_small(dir_fd, name, lock=False)
        try:
            try:
                write_all(fd, body, size)
            except OSError as exc:
                raise storage_error(exc, f"cannot write {partial.path}") from None
            walk = dirs.walk(parts)
            try:
                place(dir_fd, name, dirs, parts, fsync=False, walk=walk)
            except BaseException:
                walk.close_owned()
                raise
        except BaseException:
            os.close(fd)
            # Nothing here is worth resuming: a few hundred KiB come again faster than a sidecar.
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dir_fd)
            raise
        if placed is not None:
            placed.add(fd, walk, parts[-1])  # it closes fd and the walk's own descriptors
            return digest, True
        os.close(fd)
        walk.close_owned()
        return digest, False

    def _workers(self, job: Job) -> int:
        if not job.ranged or job.size < self.options.segment_threshold:
            return 1
        return max(1, min(self.options.segments, job.pending()))

    def _resumed_job(self, ctx: Context, partial: Partial, state: ResumeState) -> Job:
        size = state.validator.size
        if size > self.options.max_object_size:
            # Left by a run with a larger limit: the object is refused now, its bytes with it.
            partial.discard()
            raise PermanentTransferError(
                f"{partial.path}: the object has {size} bytes, more than "
                f"transfer.max_object_size ({self.options.max_object_size})"
            )
        segments = plan_segments(size, state.segment_size)
        done = SegmentProgress(segments, enumerate(state.done))
        self._disk.room_for(size - done.total, str(partial.path))
        return Job(ctx, partial, state.validator, segments, done, ranged=True, inline_hash=False)

    async def _place(
        self, partial: Partial, dirs: DestDirs, parts: tuple[str, ...], *, synced: bool
    ) -> None:
        walk = dirs.walk(parts)
        try:
            if self.options.fsync:

                def sync_and_place() -> None:
                    if not synced:
                        partial.sync()
                    place(partial.dir_fd, partial.name, dirs, parts, fsync=True, walk=walk)

                await in_thread(self._io, sync_and_place, self._loop)
            else:
                # A few syscalls on page-cache metadata: cheaper than a hop to a thread.
                place(partial.dir_fd, partial.name, dirs, parts, fsync=False, walk=walk)
        finally:
            walk.close_owned()
        partial.remove()
