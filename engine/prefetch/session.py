"""What a prefetcher holds while it is open: the run, and what its epochs share.

The run is opened and closed by :func:`engine.pipeline.run.open_run`, as a mirror's is
(settings, platform, DEST and its lock, manifest, run record, transfer core): DEST's lock is
held shared, prefetchers together (see :mod:`engine.pipeline.sharing`), and each takes a seat
in DEST's disk budget (:mod:`engine.prefetch.budget`), which all of them must agree on.
Explicit asset ids are checked and stored before anything is asked of the platform. The session
adds what every epoch of the prefetcher shares: the planner (its in-flight paths), the URL
freshener, the manifest writer and the commit rule (:mod:`engine.pipeline.commit`), tags staged
in the background from the start, the budget seat, the fetch locks and path claims.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import anyio
import anyio.to_thread

from engine.errors import UsageError
from engine.manifest import AssetUpdate, FileInfo
from engine.pipeline.commit import Ledger
from engine.pipeline.freshness import UrlFreshener
from engine.pipeline.jobs import AssetJob, update_for
from engine.pipeline.metadata import TagStaging
from engine.pipeline.planning import PagePlanner
from engine.pipeline.run import Run, RunSpec, open_run
from engine.pipeline.sharing import claims_locked
from engine.pipeline.summary import LiveCounters
from engine.pipeline.writer import ManifestWriter
from engine.platform.query import tags_filter
from engine.prefetch.budget import BudgetSeat
from engine.prefetch.items import PrefetchStats
from engine.prefetch.locking import FetchLocks
from engine.prefetch.options import PrefetchOptions
from engine.prefetch.order import OrderStore
from engine.prefetch.split import Shard
from engine.settings import Settings
from engine.sharding import WHOLE, AssetShard
from engine.state_folder import StateFolder
from engine.transfer import ProgressEvent

__all__ = ["Session"]

log = logging.getLogger("engine.prefetch")

CLAIM_NOTE = "being fetched by a prefetcher"
# How often pins let go of (items passed) reach the shared books when nothing else carries them:
# another process may be waiting for room they hold.
PIN_FLUSH = 0.05
# Seconds between the starts of two manifest transactions. Items land a few at a time (the
# window bounds the downloads in flight), so the writer committed every few rows: 257-305
# transactions for 2,000 files, against 8 for a mirror of the same version, each rewriting
# the pages the rows touch (77,000 pwrite64 against 10,000: benchmarks/prefetch_bench.py
# under strace), and with fsync on each preceded by a barrier (a syncfs, a thread hop). Spaced,
# a transaction takes what landed meanwhile; a row waits at most this long more (a SIGKILL
# meanwhile costs those files a download, or their adoption from the placed journal).
COMMIT_SPACING = 0.1


def _prefixes(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _remove_partials(folder: StateFolder) -> int:
    """Budget mode, first prefetcher in: leftover partial files are not worth their disk (a
    cache keeps no halves)."""
    removed = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(folder.partial) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


class Session:
    """``async with Session(...) as session``: see the module docstring."""

    run: Run
    planner: PagePlanner
    freshener: UrlFreshener
    writer: ManifestWriter
    ledger: Ledger
    tags: TagStaging
    fetch_locks: FetchLocks
    seat: BudgetSeat

    def __init__(
        self,
        settings: Settings,
        options: PrefetchOptions,
        *,
        asset_ids: Iterable[str] | None,
        shard: Shard,
        clock: Callable[[], float] = time.time,
        machine: AssetShard = WHOLE,
    ) -> None:
        if asset_ids is not None and (settings.tags or settings.data_tags):
            raise UsageError("give either asset ids or a tag filter, not both")
        self.settings = settings
        self.options = options
        self.shard = shard
        self.machine = machine
        self.clock = clock
        self.explicit = asset_ids is not None
        self._asset_ids = asset_ids
        self.query = tags_filter(settings.tags, settings.data_tags)
        self.stats = PrefetchStats()
        self.counters = LiveCounters()
        self.budget: BudgetSeat | None = None  # the seat, with a disk budget
        self.on_progress: Callable[[ProgressEvent], None] | None = None
        self.error: BaseException | None = None  # the manifest writer failed: nothing is safe
        self.on_error: Callable[[], None] | None = None
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
        # The order first: bad explicit ids are refused before anything is asked or created.
        self.order = OrderStore(self.machine)
        stack.callback(self.order.close)
        if self._asset_ids is not None:
            await anyio.to_thread.run_sync(self._stage_ids, self._asset_ids)
            self._asset_ids = None
        # Group commit, as the mirror: small files are placed without an fsync each, and their
        # rows wait for the writer's barrier (one per transaction) before they are committed.
        spec = RunSpec(options=self._run_options(), shared=True, group_commit=True)
        run = await stack.enter_async_context(
            open_run(settings, spec, on_progress=self._progress, clock=self.clock)
        )
        self.run = run
        run.counts = self._counts
        self.dv, self.dest = run.dataset_version, run.dest
        self.client, self.db, self.run_id = run.client, run.db, run.run_id
        assert run.manifest is not None and run.transferer is not None  # never a dry run
        self.manifest, self.transferer = run.manifest, run.transferer
        # Shared DEST: other processes may fetch the same assets.
        self.fetch_locks = await anyio.to_thread.run_sync(FetchLocks, self.dest)
        stack.callback(self.fetch_locks.close)
        # Leaves after the writer drained (callbacks run last-in first-out): the files placed
        # reach the books before the seat goes.
        self.seat = BudgetSeat(self.manifest, self.db, self.dest, budget, self.stats)
        first = await self.seat.join()
        stack.push_async_callback(self.seat.leave)
        if budget is not None:
            self.budget = self.seat
            if first:
                await anyio.to_thread.run_sync(_remove_partials, run.state)
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
        # An item may go out as soon as its file is in place; its row is committed only once
        # the barrier made the file durable (the mirror's rule). (Prefetchers share DEST, so
        # they keep no placed journal: run.journal is None.)
        self.writer = ManifestWriter(
            self.db,
            self.run_id,
            on_committed=self.planner.in_flight.release,
            barrier=run.transferer.sync_placed,
            journal=run.journal,
            # Not with a disk budget: a placed file joins the budget's books only once its row
            # is committed, its reservation holding room until then, so rows go in promptly.
            # (Spaced, the single-process budget this replaced failed
            # tests/prefetch/test_budget.py in 4 runs of 14.)
            spacing=COMMIT_SPACING if budget is None else 0.0,
        )
        self.ledger = Ledger(self.planner, self.writer, dry_run=False)
        self.tags = TagStaging(self.client, self.dv, self.db, self.run_id)
        self._stager_scope = anyio.CancelScope()
        self._flusher_scope = anyio.CancelScope()
        tg = await stack.enter_async_context(anyio.create_task_group())
        self.tg = tg
        tg.start_soon(self._run_writer)
        tg.start_soon(self._stage_tags)
        if self.budget is not None:
            tg.start_soon(self._flush_pins)
        stack.callback(self._stop_tasks)  # runs before the task group waits for them

    def _stage_ids(self, asset_ids: Iterable[str]) -> None:
        if isinstance(asset_ids, str):
            raise UsageError("asset_ids is a sequence of ids, not one string")
        self.order.append(asset_ids, strict=True)
        self.order.complete = True

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
            "equal_shards": o.equal_shards,
            "machine_shard": str(self.machine),
            "concurrency": s.limits.concurrency,
        }

    # -- background work -----------------------------------------------------------------------

    async def _stage_tags(self) -> None:
        with self._stager_scope:
            await self.tags.run()  # an error waits in tags.error: epochs raise it when needed

    async def _flush_pins(self) -> None:
        seat = self.budget
        assert seat is not None
        with self._flusher_scope:
            while True:
                await anyio.sleep(PIN_FLUSH)
                if seat.pending:
                    await seat.flush()

    async def _run_writer(self) -> None:
        try:
            await self.writer.run()
        except Exception as exc:
            self.error = exc
            self._fatal = True
            if self.on_error is not None:
                self.on_error()

    def saw_first(self, data_ids: Sequence[str]) -> None:
        """The first assets of the version (their data tells the datalake, for data tags)."""
        self.tags.saw_first(data_ids)

    def _progress(self, event: ProgressEvent) -> None:
        if self.on_progress is not None:
            self.on_progress(event)

    # -- shared DEST: path claims ---------------------------------------------------------------

    async def claim(self, jobs: Sequence[AssetJob], recorded: dict[str, str | None]) -> set[str]:
        """Record the new paths of ``jobs`` as claimed (shared DEST only); returns the asset
        ids whose path another asset got first (plan those again)."""
        wanted = [job for job in jobs if recorded.get(job.asset.id) != job.rel_path.as_posix()]
        if not wanted:
            return set()
        return await self.db.call(self._claim, wanted)

    def _claim(self, jobs: Sequence[AssetJob]) -> set[str]:
        manifest = self.manifest
        with claims_locked(self.run.state):
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
                # may be downloading there now), or put this very content in place, at another
                # path or at this one (a claim would overwrite its row with "missing", and a
                # second download follow): never move it; planning again adopts that file.
                row = rows.get(mine)
                if row is not None and row.path is not None:
                    claimed = row.state == "missing" and row.error == CLAIM_NOTE
                    placed = row.state == "ok" and row.data_id == job.asset.data.id
                    taken = taken or placed or (claimed and row.path != path)
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
                conflicts |= manifest.apply_claims(claims, self.run_id)
        return conflicts

    # -- closing -------------------------------------------------------------------------------

    def failed_fatally(self) -> None:
        self._fatal = True

    def _stop_tasks(self) -> None:
        stats = self.refresh_stats()
        self.run.outcome = "failed" if self._fatal else ("partial" if stats.failed else "ok")
        self._stager_scope.cancel()
        self._flusher_scope.cancel()
        self.writer.close()

    def refresh_stats(self) -> PrefetchStats:
        """The counters, with the transfer core's totals brought up to date."""
        stats = self.stats
        run = getattr(self, "run", None)
        if run is not None and run.transferer is not None:
            t = run.transferer.stats
            stats.bytes_downloaded = t.bytes
            stats.retries = t.retries
            freshener = getattr(self, "freshener", None)  # None: the session failed to open
            stats.url_refreshes = t.refreshes + (freshener.refreshed if freshener else 0)
        return stats

    def _counts(self) -> dict[str, int | float]:
        stats = self.refresh_stats()
        return {key: value for key, value in stats.snapshot().items() if isinstance(value, int)}

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is None:
            return
        # A consumer leaving its loop early (``break`` closes the generator: GeneratorExit) or
        # a cancelled caller stopped the session; neither is a failure of the run.
        stopped = (anyio.get_cancelled_exc_class(), GeneratorExit)
        if exc is not None and not isinstance(exc, stopped):
            self._fatal = True
        await stack.__aexit__(exc_type, exc, tb)
