"""What a prefetcher holds while it is open: lock, manifest, run record, HTTP, transfer core.

Opening follows the mirror's order (:mod:`engine.mirroring`), refusing early and cheaply: the
settings (DEST checked, not created), the platform (token, version, the filter's tags: nothing
exists on disk before it has answered), the DEST lock (shared, or exclusive with a disk budget:
see :mod:`engine.prefetch.locking`), the manifest (same version, same layout), then a run row so
``assetsync status`` shows the prefetcher. Tags are staged in the
background from the start, as the mirror does, for every epoch of the session.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.to_thread

from engine.destination import check_destination
from engine.errors import EngineError, UsageError
from engine.manifest import AssetRow, AssetUpdate, FileInfo, Manifest
from engine.mirroring import open_sessions
from engine.pipeline.freshness import UrlFreshener
from engine.pipeline.jobs import Job, update_for
from engine.pipeline.lock import DestLock
from engine.pipeline.metadata import TagStager
from engine.pipeline.planning import PagePlanner
from engine.pipeline.summary import LiveCounters
from engine.pipeline.writer import ManifestAccess
from engine.platform import PlatformClient
from engine.platform.query import tags_filter
from engine.prefetch.items import PrefetchStats
from engine.prefetch.locking import FetchLocks, SharedDestLock, claims_locked
from engine.prefetch.options import PrefetchOptions
from engine.prefetch.order import OrderStore
from engine.prefetch.split import Shard
from engine.prefetch.window import DiskBooks
from engine.prefetch.writer import SessionWriter
from engine.preflight import check_platform
from engine.settings import Settings
from engine.state_folder import StateFolder
from engine.transfer import ProgressEvent, Transferer

__all__ = ["Session"]

log = logging.getLogger("engine.prefetch")

CLAIM_NOTE = "being fetched by a prefetcher"


def check_settings(settings: Settings, has_ids: bool) -> tuple[str, Path]:
    if not settings.dataset_version:
        raise UsageError("no dataset version: give dataset_version in the settings")
    if settings.dest is None:
        raise UsageError("no destination: give dest in the settings")
    if settings.token is None or not settings.token.get_secret_value().strip():
        raise UsageError("no API token: set PICSELLIA_TOKEN, or give a token file or token")
    if has_ids and (settings.tags or settings.data_tags):
        raise UsageError("give either asset ids or a tag filter, not both")
    return settings.dataset_version, check_destination(settings.dest, writable=True)


def _prefixes(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _remove_partials(folder: StateFolder) -> int:
    """Budget mode: leftover partial files are not worth their disk (a cache keeps no halves)."""
    removed = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(folder.partial) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def _open_manifest(dest: Path) -> Manifest:
    # Prefetchers sharing a fresh DEST (DataLoader workers) open it at the same moment; the
    # manifest's compatibility check reads the schema in several statements, which a
    # concurrent first migration can interleave with: create and migrate one at a time.
    with claims_locked(dest):
        return Manifest.open(dest)


class Session:
    """``async with Session(...) as session``: see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        options: PrefetchOptions,
        *,
        asset_ids: Iterable[str] | None,
        shard: Shard,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.dv, self.dest = check_settings(settings, asset_ids is not None)
        self.settings = settings
        self.options = options
        self.shard = shard
        self.clock = clock
        self.explicit = asset_ids is not None
        self._asset_ids = asset_ids
        self.query = tags_filter(settings.tags, settings.data_tags)
        self.stats = PrefetchStats()
        self.counters = LiveCounters()
        self.books: DiskBooks | None = None
        self.first_data_id: str | None = None
        self.tags_error: EngineError | None = None
        self.on_progress: Callable[[ProgressEvent], None] | None = None
        self.error: BaseException | None = None  # the manifest writer failed: nothing is safe
        self.on_error: Callable[[], None] | None = None
        # The disk budget's side tables: where each tracked file is, and the untouched rows
        # (recorded before this session) still to visit when cold files must go.
        self.resident_paths: dict[str, str] = {}
        self.cold_rows: deque[AssetRow] = deque()
        self.cold_iter: Iterator[AssetRow] | None = None
        self.cold_done = False
        self.started_at = time.time()
        self._stack: AsyncExitStack | None = None
        self._fatal = False

    # -- opening -------------------------------------------------------------------------------

    async def __aenter__(self) -> Session:
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            await self._open(stack)
        except BaseException as exc:
            await stack.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._stack = stack
        return self

    async def _open(self, stack: AsyncExitStack) -> None:
        settings = self.settings
        budget = self.options.max_bytes
        # The platform first: a refused token or an unknown version creates nothing on disk.
        api, storage = await stack.enter_async_context(open_sessions(settings))
        assert settings.token is not None
        t = settings.transfer
        self.client = PlatformClient(
            api,
            settings.api_url,
            settings.token,
            t.retry,
            t.timeouts,
            max_body=settings.api_max_body,
        )
        await check_platform(
            self.client,
            settings.api_url,
            self.dv,
            tags=settings.tags,
            data_tags=settings.data_tags,
        )

        folder = StateFolder(self.dest)
        await anyio.to_thread.run_sync(folder.create)
        lock: DestLock | SharedDestLock
        if budget is not None:
            lock = DestLock(self.dest, stale_after=settings.lock_stale_after)
        else:
            lock = SharedDestLock(self.dest)
        lock.acquire()
        stack.callback(lock.release)
        # Shared DEST: other processes may fetch the same assets (exclusive: nobody else).
        self.fetch_locks = (
            await anyio.to_thread.run_sync(FetchLocks, self.dest) if budget is None else None
        )
        if self.fetch_locks is not None:
            stack.callback(self.fetch_locks.close)

        manifest = await anyio.to_thread.run_sync(_open_manifest, self.dest)
        self.manifest = manifest
        self.db = ManifestAccess(manifest)
        stack.push_async_callback(self._close_manifest)
        await self.db.call(self._check_manifest)

        self.order = OrderStore()
        stack.callback(self.order.close)
        if self._asset_ids is not None:
            await anyio.to_thread.run_sync(self._stage_ids, self._asset_ids)
            self._asset_ids = None
        if budget is not None:
            status = await self.db.call(manifest.status)
            self.books = DiskBooks(budget, cold=status.total_bytes)
            await anyio.to_thread.run_sync(_remove_partials, folder)

        self.run_id = await self.db.call(
            manifest.begin_run, self.dv, settings.api_url, self._run_options()
        )
        stack.push_async_callback(self._finish_run)
        self.transferer = await stack.enter_async_context(
            Transferer(
                storage,
                settings.transfer,
                folder.path,
                on_progress=self._progress,
                clock=self.clock,
            )
        )
        self.planner = PagePlanner(
            db=self.db,
            run_id=self.run_id,
            dest=self.dest,
            layout_name=settings.layout,
            unknown_url_lifetime=settings.transfer.unknown_url_lifetime,
            counters=self.counters,
            clock=self.clock,
        )
        self.freshener = UrlFreshener(
            self.client,
            self.dv,
            margin=settings.transfer.url_margin,
            unknown_lifetime=settings.transfer.unknown_url_lifetime,
            clock=self.clock,
        )
        self.writer = SessionWriter(self.db, self.run_id, self.planner.in_flight.release)
        self.first_seen = anyio.Event()
        self.tags_ready = anyio.Event()
        self._stager_scope = anyio.CancelScope()
        tg = await stack.enter_async_context(anyio.create_task_group())
        self.tg = tg
        tg.start_soon(self._run_writer)
        tg.start_soon(self._stage_tags)
        stack.callback(self._stop_tasks)  # runs before the task group waits for them

    def _stage_ids(self, asset_ids: Iterable[str]) -> None:
        if isinstance(asset_ids, str):
            raise UsageError("asset_ids is a sequence of ids, not one string")
        self.order.append(asset_ids, strict=True)
        self.order.complete = True

    def _check_manifest(self) -> None:
        manifest = self.manifest
        recorded = manifest.dataset_version()
        if recorded is not None and recorded != self.dv and not self.settings.force:
            raise UsageError(
                f"{self.dest} mirrors dataset version {recorded}, not {self.dv}; "
                "use another dest (or force to switch it)"
            )
        last = manifest.last_run()
        layout = (last.options or {}).get("layout") if last is not None else None
        if layout is not None and layout != self.settings.layout and manifest.count_assets():
            raise UsageError(
                f"{self.dest} was mirrored with layout {layout}; use the same layout or a new dest"
            )

    def _run_options(self) -> dict[str, Any]:
        o, s = self.options, self.settings
        return {
            "kind": "prefetch",
            "layout": s.layout,
            "tags": list(s.tags),
            "data_tags": list(s.data_tags),
            "asset_ids": self.explicit,
            "order": o.order,
            "window": o.window,
            "window_bytes": o.window_bytes,
            "max_bytes": o.max_bytes,
            "shuffle": o.shuffle,
            "seed": o.seed,
            "shard": f"{self.shard.index}/{self.shard.count}",
            "concurrency": s.limits.concurrency,
        }

    # -- background work -----------------------------------------------------------------------

    async def _stage_tags(self) -> None:
        manifest = self.manifest

        async def stage(kind: str, name: str, ids: Sequence[str]) -> None:
            await self.db.call(manifest.stage_tags, self.run_id, kind, name, ids)  # type: ignore[arg-type]

        async def first_data_ids() -> list[str]:
            await self.first_seen.wait()
            return [] if self.first_data_id is None else [self.first_data_id]

        with self._stager_scope:
            try:
                await TagStager(self.client, self.dv, stage).run(first_data_ids)
            except EngineError as exc:
                self.tags_error = exc  # the epochs raise it when they need the tags
            finally:
                self.tags_ready.set()

    async def _run_writer(self) -> None:
        try:
            await self.writer.run()
        except Exception as exc:
            self.error = exc
            self._fatal = True
            if self.on_error is not None:
                self.on_error()

    def saw_first(self, data_id: str | None) -> None:
        """The first asset of the version (its data tells the datalake, for data tags)."""
        if not self.first_seen.is_set():
            self.first_data_id = data_id
            self.first_seen.set()

    def _progress(self, event: ProgressEvent) -> None:
        if self.on_progress is not None:
            self.on_progress(event)

    # -- shared DEST: path claims ---------------------------------------------------------------

    async def claim(self, jobs: Sequence[Job], recorded: dict[str, str | None]) -> set[str]:
        """Record the new paths of ``jobs`` as claimed (shared DEST only); returns the asset
        ids whose path another asset got first (plan those again)."""
        wanted = [job for job in jobs if recorded.get(job.asset.id) != job.rel_path.as_posix()]
        if self.books is not None or not wanted:
            return set()  # exclusive: this process's in-flight claims are enough
        return await self.db.call(self._claim, wanted)

    def _claim(self, jobs: Sequence[Job]) -> set[str]:
        manifest = self.manifest
        with claims_locked(self.dest):
            paths = [job.rel_path.as_posix() for job in jobs]
            owners = manifest.path_owners(paths + [p for path in paths for p in _prefixes(path)])
            folders = manifest.directory_keys(paths)
            rows = manifest.rows([job.asset.id for job in jobs])
            conflicts: set[str] = set()
            claims: list[AssetUpdate] = []
            for job, path in zip(jobs, paths, strict=True):
                mine = job.asset.id
                taken = owners.get(path, mine) != mine or path in folders
                taken = taken or any(owners.get(p, mine) != mine for p in _prefixes(path))
                # Since we planned, another process claimed this asset a path of its own (it
                # may be downloading there now), or put this very content in place: never move
                # it; planning again adopts that path or that file.
                row = rows.get(mine)
                if row is not None and row.path is not None and row.path != path:
                    claimed = row.state == "missing" and row.error == CLAIM_NOTE
                    placed = row.state == "ok" and row.data_id == job.asset.data.id
                    taken = taken or claimed or placed
                if taken:
                    conflicts.add(mine)
                    continue
                claims.append(
                    update_for(
                        job.asset,
                        None,
                        None,
                        None,
                        file=FileInfo(path=path, size=0, sha256=""),
                        state="missing",
                        error=CLAIM_NOTE,
                    )
                )
            if claims:
                manifest.apply(claims, self.run_id)
        return conflicts

    # -- closing -------------------------------------------------------------------------------

    def failed_fatally(self) -> None:
        self._fatal = True

    def _stop_tasks(self) -> None:
        self._stager_scope.cancel()
        self.writer.close()

    def refresh_stats(self) -> PrefetchStats:
        """The counters, with the transfer core's totals brought up to date."""
        stats = self.stats
        transferer = getattr(self, "transferer", None)
        if transferer is not None:
            stats.bytes_downloaded = transferer.stats.bytes
            stats.retries = transferer.stats.retries
            stats.url_refreshes = transferer.stats.refreshes + self.freshener.refreshed
        return stats

    async def _finish_run(self) -> None:
        stats = self.refresh_stats()
        outcome = "failed" if self._fatal else ("partial" if stats.failed else "ok")
        counts: dict[str, int | float] = {
            key: value for key, value in stats.snapshot().items() if isinstance(value, int)
        }
        counts["pid"] = os.getpid()
        with anyio.CancelScope(shield=True):
            await self.db.call(self.manifest.clear_staging, self.run_id)
            await self.db.call(self.manifest.finish_run, self.run_id, outcome, counts)

    async def _close_manifest(self) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.manifest.close)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is None:
            return
        if exc is not None and not isinstance(exc, anyio.get_cancelled_exc_class()):
            self._fatal = True
        await stack.__aexit__(exc_type, exc, tb)
