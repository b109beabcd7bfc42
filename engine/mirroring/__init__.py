"""``await engine.mirror(settings)``: the pipeline in listing order, plus deletion.

A run is opened and closed by :func:`engine.pipeline.run.open_run` (checks, platform, DEST and
its lock, manifest, run record: nothing on disk before the platform has answered), the same
opening as a prefetcher's. Between those:

1. the pipeline in listing order (:mod:`engine.mirroring.listing`);
2. what left the version is deleted, if asked and if the listings were complete
   (:mod:`engine.mirroring.deletion`);
3. the run's outcome is recorded and its :class:`~engine.pipeline.summary.MirrorSummary`
   returned.

Cancellation (a signal) still records the run as interrupted and keeps partial files for resume.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from engine.errors import primary_error
from engine.mirroring.deletion import DeletionReport, delete_unseen, stage_version_ids
from engine.mirroring.listing import ListingPipeline, PipelineResult
from engine.pipeline.jobs import PlannedAction
from engine.pipeline.run import Run, RunSpec, open_run
from engine.pipeline.summary import LiveCounters, MirrorSummary, Outcome
from engine.platform.query import tags_filter
from engine.settings import Settings
from engine.sharding import WHOLE, AssetShard
from engine.transfer import Transferer

__all__ = ["mirror"]


def _run_options(settings: Settings, shard: AssetShard) -> dict[str, Any]:
    return {
        "shard": str(shard),
        "layout": settings.layout,
        "delete": settings.delete,
        "delete_excluded": settings.delete_excluded,
        "tags": list(settings.tags),
        "data_tags": list(settings.data_tags),
        "concurrency": settings.limits.concurrency,
        "dry_run": settings.dry_run,
    }


async def mirror(
    settings: Settings,
    *,
    counters: LiveCounters | None = None,
    plan_sink: Callable[[PlannedAction], None] | None = None,
    clock: Callable[[], float] = time.time,
    shard: AssetShard = WHOLE,
    reshard: bool = False,
) -> MirrorSummary:
    """Mirror ``settings.dataset_version`` into ``settings.dest`` and return what happened.

    Raises :class:`~engine.errors.EngineError` subclasses for what stops a run before or during
    it (usage, authentication, lock, full disk); failures of single assets are in the summary.
    ``shard``: mirror only the assets of this shard (:mod:`engine.sharding`), with the shard's
    own manifest and lock; ``reshard``: see :mod:`engine.pipeline.resharding`.
    """
    counters = counters or LiveCounters()
    spec = RunSpec(
        options=_run_options(settings, shard),
        dry_run=settings.dry_run,
        shard=shard,
        reshard=reshard,
        group_commit=True,
    )
    deletion = DeletionReport(0, 0, "")
    async with open_run(settings, spec, on_progress=counters.on_progress, clock=clock) as run:
        run.counts = lambda: _counts(counters, run.transferer)
        pipeline = ListingPipeline(run, counters, clock=clock, plan_sink=plan_sink)
        result = await _unwrap(pipeline.run(tags_filter(settings.tags, settings.data_tags)))
        if _shares_names(run, shard):
            result.warnings.append(
                f"shard {shard} shares {run.dest} with other shards under --layout name: two "
                "assets of the same file name in different shards claim one path, as no shard "
                "sees the others' names; use --layout id (or a DEST per shard) unless the "
                "version's file names are unique"
            )
        if settings.delete or settings.delete_excluded:
            deletion = await _delete(run, result, counters)
        run.outcome = outcome = _outcome(settings, result, counters)
    stats = run.transferer.stats if run.transferer is not None else None
    return MirrorSummary(
        dataset_version=run.dataset_version,
        dest=str(run.dest),
        outcome=outcome,
        listed=counters.listed,
        downloaded=counters.downloaded if not settings.dry_run else counters.to_download,
        skipped=counters.skipped,
        updated=counters.updated,
        deleted=counters.deleted,
        failed=counters.failed,
        bytes_downloaded=None if settings.dry_run else (stats.bytes if stats else 0),
        bytes_resumed=counters.bytes_resumed,
        duration_seconds=round(counters.elapsed, 3),
        url_refreshes=(stats.refreshes if stats else 0) + result.url_batch_refreshes,
        retries=stats.retries if stats else 0,
        resumes=stats.resumes if stats else 0,
        tag_changes=counters.tag_changes,
        annotation_changes=counters.annotation_changes,
        planned_deletions=deletion.candidates,
        deletions_kept=deletion.kept,
        deletion_note=deletion.note or None,
        failures=tuple(counters.failures),
        error=result.listing_error,
        warnings=tuple(result.warnings),
    )


def _shares_names(run: Run, shard: AssetShard) -> bool:
    """Another shard of this N keeps its manifest in this DEST, and files are named by name."""
    if shard.is_whole or run.settings.layout != "name":
        return False
    return any(
        files.shard.count == shard.count and files.shard != shard for files in run.state.manifests()
    )


async def _delete(run: Run, result: PipelineResult, counters: LiveCounters) -> DeletionReport:
    settings, dv, dest, client, db, run_id = (
        run.settings,
        run.dataset_version,
        run.dest,
        run.client,
        run.db,
        run.run_id,
    )
    filtered = bool(settings.tags or settings.data_tags)
    complete = result.listing_complete and result.listing_error is None
    if filtered and not settings.delete_excluded and complete:
        # The filtered listing cannot tell "left the version" from "left out by the filter".
        ids_error = await stage_version_ids(client, dv, db, run_id, settings.page_size)
        if ids_error is not None:
            # As for a broken listing: nothing is deleted, and the run says it failed.
            complete = result.listing_complete = False
            result.listing_error = ids_error
    return await delete_unseen(
        dest=dest,
        db=db,
        run_id=run_id,
        listing_complete=complete,
        max_delete_percent=settings.max_delete,
        force=settings.force,
        dry_run=settings.dry_run,
        counters=counters,
        filtered=filtered,
        delete_excluded=settings.delete_excluded,
    )


async def _unwrap(run: Any) -> PipelineResult:
    """anyio reports a failed task group as an exception group: surface the error it stands for."""
    try:
        result: PipelineResult = await run
    except BaseExceptionGroup as group:
        error = primary_error(group)
        if error is group:
            raise
        raise error from None
    return result


def _outcome(settings: Settings, result: PipelineResult, counters: LiveCounters) -> Outcome:
    if settings.dry_run:
        return "dry-run"
    if not result.listing_complete:
        return "failed"
    return "partial" if counters.failed else "ok"


def _counts(counters: LiveCounters, transferer: Transferer | None) -> dict[str, int | float]:
    stats = transferer.stats if transferer is not None else None
    return {
        "listed": counters.listed,
        "downloaded": counters.downloaded,
        "skipped": counters.skipped,
        "updated": counters.updated,
        "deleted": counters.deleted,
        "failed": counters.failed,
        "bytes": stats.bytes if stats else 0,
        "retries": stats.retries if stats else 0,
        "refreshes": stats.refreshes if stats else 0,
        "resumes": stats.resumes if stats else 0,
        "seconds": round(counters.elapsed, 3),
        "pid": os.getpid(),
    }
