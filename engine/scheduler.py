"""The mirror pipeline: stages in one anyio task group, joined by bounded memory streams.

::

    lister ──pages──▶ annotator ──pages+annotations──▶ planner ──jobs (per page)──▶ freshness
      │                                                   │                           │
      │                        tags staged in SQLite ─────┘                       jobs│
      │                                                   │ metadata-only, seen       ▼
      └─ count ─▶ progress                                └──────────────▶ writer ◀── fetchers (N)

Every stream holds at most a page (or ``concurrency`` jobs), so memory stays flat however large
the version is, and a slow stage throttles the ones before it instead of letting work pile up.
The manifest is touched from one worker thread (SQLite is synchronous); the writer commits
whatever has accumulated in one transaction, so commits are few when files are many.

Errors: an asset that fails after the transfer core's retries is recorded as failed and the run
goes on; a listing that fails stops listing (so nothing is deleted) but lets queued work finish;
an authentication failure or a full disk stops the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from engine.errors import AuthError, EngineError
from engine.freshness import UrlFreshener
from engine.jobs import Job, PlannedAction, fetch_job
from engine.manifest_access import MAX_BATCH, BatchWriter, ManifestAccess, WriteItem
from engine.metadata import TagStager, fetch_page_annotations
from engine.page_plan import PagePlanner
from engine.platform import PlatformClient, models
from engine.settings import Settings
from engine.summary import LiveCounters
from engine.transfer import Transferer

__all__ = ["Pipeline", "PipelineResult"]


@dataclass(slots=True)
class PipelineResult:
    listing_complete: bool = False
    listing_error: str | None = None
    url_batches: int = 0
    url_batch_refreshes: int = 0


Annotated = tuple[models.AssetPage, dict[str, list[dict[str, Any]]]]


class Pipeline:
    """One run of the mirror pipeline over one dataset version."""

    def __init__(
        self,
        *,
        settings: Settings,
        client: PlatformClient,
        transferer: Transferer | None,
        db: ManifestAccess,
        run_id: int,
        counters: LiveCounters,
        dest: Path,
        clock: Callable[[], float] = time.time,
        plan_sink: Callable[[PlannedAction], None] | None = None,
    ) -> None:
        assert settings.dataset_version is not None
        self.settings = settings
        self.dv = settings.dataset_version
        self.client = client
        self.transferer = transferer
        self.db = db
        self.run_id = run_id
        self.counters = counters
        self.dest = dest
        self.result = PipelineResult()
        self.planner = PagePlanner(
            db=db,
            run_id=run_id,
            dest=dest,
            layout_name=settings.layout,
            unknown_url_lifetime=settings.transfer.unknown_url_lifetime,
            counters=counters,
            clock=clock,
            plan_sink=plan_sink,
        )
        self.freshener = UrlFreshener(
            client,
            self.dv,
            margin=settings.transfer.url_margin,
            unknown_lifetime=settings.transfer.unknown_url_lifetime,
            clock=clock,
        )
        self.writer = BatchWriter(db, run_id, on_committed=self.planner.in_flight.release)
        self._tags_ready = anyio.Event()
        self._first_data_id: str | None = None
        self._first_page_seen = anyio.Event()

    # -- the whole pipeline ------------------------------------------------------------------

    async def run(self, query: str | None) -> PipelineResult:
        concurrency = self.settings.limits.concurrency
        pages_tx, pages_rx = anyio.create_memory_object_stream[models.AssetPage](1)
        annotated_tx, annotated_rx = anyio.create_memory_object_stream[Annotated](1)
        chunks_tx, chunks_rx = anyio.create_memory_object_stream[list[Job]](1)
        jobs_tx, jobs_rx = anyio.create_memory_object_stream[Job](concurrency)
        writes_tx, writes_rx = anyio.create_memory_object_stream[WriteItem](
            2 * concurrency + MAX_BATCH
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._stage_tags)
            tg.start_soon(self._lister, query, pages_tx)
            tg.start_soon(self._annotator, pages_rx, annotated_tx)
            tg.start_soon(self._planner, annotated_rx, chunks_tx, writes_tx.clone())
            tg.start_soon(self._freshness, chunks_rx, jobs_tx)
            async with jobs_rx, writes_tx:
                for _ in range(concurrency if self.transferer is not None else 1):
                    tg.start_soon(self._fetcher, jobs_rx.clone(), writes_tx.clone())
            tg.start_soon(self.writer.run, writes_rx)
        self.result.url_batches = self.freshener.batches
        self.result.url_batch_refreshes = self.freshener.refreshed
        return self.result

    # -- stages ------------------------------------------------------------------------------
    async def _stage_tags(self) -> None:
        manifest = self.db.manifest
        if manifest is None:
            # A dry run into an empty DEST: every asset is new, tags decide nothing.
            self._tags_ready.set()
            return

        async def stage(kind: str, name: str, ids: Sequence[str]) -> None:
            await self.db.call(manifest.stage_tags, self.run_id, kind, name, ids)  # type: ignore[arg-type]

        async def datalake_id() -> str | None:
            await self._first_page_seen.wait()
            if self._first_data_id is None:
                return None
            return (await self.client.data(self._first_data_id)).datalake_id

        try:
            await TagStager(self.client, self.dv, stage).run(datalake_id)
        finally:
            self._tags_ready.set()

    async def _lister(self, query: str | None, out: ObjectSendStream[models.AssetPage]) -> None:
        async with out:
            try:
                async for page in self.client.asset_pages(
                    self.dv, q=query, limit=self.settings.page_size
                ):
                    if not self._first_page_seen.is_set():
                        self._first_data_id = page.items[0].data.id if page.items else None
                        self._first_page_seen.set()
                    if page.count is not None:
                        self.counters.total = max(
                            page.count, self.counters.listed + len(page.items)
                        )
                    self.counters.listed += len(page.items)
                    if page.items:
                        await out.send(page)
                self.result.listing_complete = True
            except AuthError:
                raise
            except EngineError as exc:
                # Keep what was listed flowing; a run with a broken listing deletes nothing.
                self.result.listing_error = str(exc)
            finally:
                self._first_page_seen.set()

    async def _annotator(
        self,
        pages: ObjectReceiveStream[models.AssetPage],
        out: ObjectSendStream[Annotated],
    ) -> None:
        # Fetching the next page's annotations while the planner decides the current one keeps
        # the metadata requests off the critical path.
        async with pages, out:
            async for page in pages:
                ids = [asset.id for asset in page.items]
                annotations = await fetch_page_annotations(self.client, self.dv, ids)
                await out.send((page, annotations))

    async def _planner(
        self,
        pages: ObjectReceiveStream[Annotated],
        out: ObjectSendStream[list[Job]],
        writes: ObjectSendStream[WriteItem],
    ) -> None:
        async with pages, out, writes:
            await self._tags_ready.wait()
            async for page, annotations in pages:
                plan = await self.planner.plan(page.items, annotations)
                if plan.jobs:
                    await out.send(plan.jobs)
                for update in plan.updates:
                    await writes.send(update)
                if plan.seen:
                    await writes.send(plan.seen)

    async def _freshness(
        self, chunks: ObjectReceiveStream[list[Job]], out: ObjectSendStream[Job]
    ) -> None:
        async with chunks, out:
            async for jobs in chunks:
                if self.transferer is not None:
                    await self.freshener.refresh_stale(jobs)
                for job in jobs:
                    await out.send(job)

    async def _fetcher(
        self, jobs: ObjectReceiveStream[Job], writes: ObjectSendStream[WriteItem]
    ) -> None:
        async with jobs, writes:
            async for job in jobs:
                if self.transferer is None:  # dry run: the plan was emitted, nothing moves
                    self.planner.in_flight.release([job.asset.id])
                    await writes.send([job.asset.id])
                    continue
                update, _ = await fetch_job(
                    job,
                    transferer=self.transferer,
                    client=self.client,
                    dest=self.dest,
                    counters=self.counters,
                )
                await writes.send(update)
