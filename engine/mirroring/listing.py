"""The mirror pipeline: stages in one anyio task group, joined by bounded memory streams.

::

    lister ─pages─▶ content planner ─jobs─▶ URL freshness ─jobs─▶ fetchers (N) ─outcomes─┐
                         │                                                              ▼
                         └─pages─▶ metadata (annotations, staged tags) ─metadata─▶ joiner
    tag stager ─▶ SQLite staging ─┘                                                     │
                                                                                manifest ◀┘

Downloads depend on content alone (data id, object name, the file on disk), so a page's
downloads start as soon as it is listed; its tags and annotations are fetched alongside, and the
joiner commits each file together with its metadata once both are in. At most
:data:`PAGES_IN_FLIGHT` pages are between listing and commit, so memory stays flat however large
the version is, and a slow stage throttles the ones before it.

The manifest is touched from one worker thread (SQLite is synchronous); the joiner commits
whatever has accumulated in one transaction, so commits are few when files are many.

Errors: an asset that fails after the transfer core's retries is recorded as failed and the run
goes on; a listing that fails stops listing (so nothing is deleted) but lets queued work finish;
an authentication failure or a full disk stops the run. What the listing gets wrong without
failing (a malformed item, an asset listed twice: see :mod:`engine.pipeline.planning`) fails that
asset or skips the repeat; a repeat, or an item without a readable id, marks the listing as not
complete, so nothing is deleted. Tags that cannot be staged leave this run's tags unknown (the
manifest keeps the stored ones; a warning says so); a page's annotations that cannot be read
fail the assets concerned, whose files are still mirrored. Cancelled, the joiner still records the
files already in place (with their metadata when it arrived, without it otherwise: the next run
completes it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from anyio.streams.memory import MemoryObjectReceiveStream

from engine.errors import AuthError, EngineError
from engine.pipeline.freshness import UrlFreshener
from engine.pipeline.jobs import Job, Outcome, PlannedAction, transfer_job, update_for_outcome
from engine.pipeline.metadata import (
    DATALAKE_CANDIDATES,
    PageAnnotations,
    TagStager,
    fetch_page_annotations,
)
from engine.pipeline.planning import ContentPlan, PagePlan, PagePlanner, StagedTags
from engine.pipeline.summary import LiveCounters
from engine.pipeline.writer import (
    BatchWriter,
    ManifestAccess,
    WriteItem,
    take_batch,
    take_leftovers,
)
from engine.platform import PlatformClient
from engine.platform.per_item import ListingPage
from engine.settings import Settings
from engine.transfer import Transferer

__all__ = ["PAGES_IN_FLIGHT", "Pipeline", "PipelineResult"]

log = logging.getLogger("engine.mirroring.listing")

# Pages whose tags and annotations are fetched at the same time (at most PAGES_IN_FLIGHT).
METADATA_PAGES_AT_ONCE = 3

# Pages between listing and commit. Enough to keep downloads going while a page's metadata is
# fetched; few enough that the results waiting for it stay small.
PAGES_IN_FLIGHT = 4


@dataclass(slots=True)
class PipelineResult:
    listing_complete: bool = False
    listing_error: str | None = None
    url_batches: int = 0
    url_batch_refreshes: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Page:
    """A page between listing and commit."""

    content: ContentPlan
    outstanding: int  # downloads not finished yet
    settled: PagePlan | None = None  # set once its metadata is in
    finished: list[Outcome] = field(default_factory=list)  # waiting for the metadata


@dataclass(slots=True)
class _Metadata:
    page: _Page
    staged: StagedTags | None  # None: this run's tags are unknown
    annotations: PageAnnotations


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
            once_per_run=True,
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
        self._tags_unknown: str | None = None
        self._first_data_ids: list[str] = []
        self._first_page_seen = anyio.Event()
        self._page_slots = anyio.Semaphore(PAGES_IN_FLIGHT)
        self._page_of: dict[str, _Page] = {}  # asset id of a running job -> its page
        self._listed: set[str] = set()  # asset ids of the pages in flight
        self._duplicates: list[str] = []  # the first few repeats, for the message
        self._unidentified = 0

    # -- the whole pipeline ------------------------------------------------------------------

    async def run(self, query: str | None) -> PipelineResult:
        concurrency = self.settings.limits.concurrency
        pages_tx, pages_rx = anyio.create_memory_object_stream[ListingPage](1)
        meta_tx, meta_rx = anyio.create_memory_object_stream[_Page](PAGES_IN_FLIGHT)
        chunks_tx, chunks_rx = anyio.create_memory_object_stream[list[Job]](PAGES_IN_FLIGHT)
        jobs_tx, jobs_rx = anyio.create_memory_object_stream[Job](concurrency)
        # Never full: everything sent here is bounded by the pages in flight.
        events_tx, events_rx = anyio.create_memory_object_stream[Outcome | _Metadata](
            PAGES_IN_FLIGHT * (self.settings.page_size + 1)
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._stage_tags)
            tg.start_soon(self._lister, query, pages_tx)
            tg.start_soon(self._content, pages_rx, meta_tx, chunks_tx)
            async with meta_rx:
                # Several pages' metadata at once: each is a chain of requests (annotation ids,
                # then the bulk answer) whose latency would otherwise add up page after page.
                for _ in range(METADATA_PAGES_AT_ONCE):
                    tg.start_soon(self._metadata, meta_rx.clone(), events_tx.clone())
            tg.start_soon(self._freshness, chunks_rx, jobs_tx)
            async with jobs_rx, events_tx:
                for _ in range(concurrency if self.transferer is not None else 1):
                    tg.start_soon(self._fetcher, jobs_rx.clone(), events_tx.clone())
            tg.start_soon(self._joiner, events_rx)
        self.result.url_batches = self.freshener.batches
        self.result.url_batch_refreshes = self.freshener.refreshed
        self._judge_listing()
        return self.result

    def _judge_listing(self) -> None:
        """A listing that repeated assets, or gave items without a readable id, may have skipped
        others: it is not complete, whatever its pages said."""
        problems = []
        if self.counters.duplicates:
            problems.append(
                f"it listed {self.counters.duplicates} asset(s) more than once "
                f"(first: {self._duplicates[0]}); the repeats were skipped"
            )
        if self._unidentified:
            problems.append(f"{self._unidentified} item(s) had no readable id")
        if not problems:
            return
        message = "the listing is not trustworthy: " + "; ".join(problems)
        self.result.listing_complete = False
        previous = self.result.listing_error
        self.result.listing_error = message if previous is None else f"{previous}; {message}"

    # -- stages ------------------------------------------------------------------------------

    async def _stage_tags(self) -> None:
        manifest = self.db.manifest
        if manifest is None:
            # A dry run into an empty DEST: every asset is new, tags decide nothing.
            self._tags_ready.set()
            return

        async def stage(kind: str, name: str, ids: Sequence[str]) -> None:
            await self.db.call(manifest.stage_tags, self.run_id, kind, name, ids)  # type: ignore[arg-type]

        async def first_data_ids() -> list[str]:
            await self._first_page_seen.wait()
            return self._first_data_ids

        try:
            await TagStager(self.client, self.dv, stage).run(first_data_ids)
        except AuthError:
            raise
        except EngineError as exc:
            # Files do not depend on tags: mirror them, and keep the tags the manifest has.
            self._tags_unknown = str(exc)
            warning = f"tags and data tags were not updated (the stored ones are kept): {exc}"
            self.result.warnings.append(warning)
            log.warning("%s", warning)
        finally:
            self._tags_ready.set()

    async def _lister(self, query: str | None, out: ObjectSendStream[ListingPage]) -> None:
        async with out:
            try:
                async for page in self.client.asset_pages(
                    self.dv, q=query, limit=self.settings.page_size
                ):
                    if not self._first_page_seen.is_set() and page.items:
                        # A few candidates: the first asset's data may be gone (a 404) by the
                        # time it is looked up for the datalake.
                        data_ids = dict.fromkeys(asset.data.id for asset in page.items)
                        self._first_data_ids = list(data_ids)[:DATALAKE_CANDIDATES]
                        self._first_page_seen.set()
                    if page.count is not None:
                        self.counters.total = max(page.count, self.counters.listed + page.size)
                    self.counters.listed += page.size
                    if page.size:
                        await out.send(page)
                self.result.listing_complete = True
            except AuthError:
                raise
            except EngineError as exc:
                # Keep what was listed flowing; a run with a broken listing deletes nothing.
                self.result.listing_error = str(exc)
            finally:
                self._first_page_seen.set()

    async def _content(
        self,
        pages: ObjectReceiveStream[ListingPage],
        to_metadata: ObjectSendStream[_Page],
        to_freshness: ObjectSendStream[list[Job]],
    ) -> None:
        async with pages, to_metadata, to_freshness:
            async for listed in pages:
                await self._page_slots.acquire()  # released by the joiner once committed
                content = await self.planner.plan_content(
                    listed.items, rejected=listed.rejected, in_flight=self._listed
                )
                self._note_repeats(content)
                self._listed.update(content.order)
                page = _Page(content, outstanding=len(content.jobs))
                for job in content.jobs:
                    self._page_of[job.asset.id] = page
                await to_metadata.send(page)
                if content.jobs:
                    await to_freshness.send(content.jobs)

    def _note_repeats(self, content: ContentPlan) -> None:
        self._unidentified += content.unidentified
        if not content.duplicates:
            return
        self.counters.duplicates += len(content.duplicates)
        if len(self._duplicates) < 5:
            self._duplicates += content.duplicates[: 5 - len(self._duplicates)]
        log.warning(
            "the listing gave %d asset(s) again (first: %s); the repeats are skipped",
            len(content.duplicates),
            content.duplicates[0],
        )

    async def _metadata(
        self, pages: ObjectReceiveStream[_Page], events: ObjectSendStream[Outcome | _Metadata]
    ) -> None:
        async with pages, events:
            async for page in pages:
                ids = page.content.order
                # One page's annotations (a few requests) while its files download.
                try:
                    annotations = await fetch_page_annotations(self.client, self.dv, ids)
                except AuthError:
                    raise
                except EngineError as exc:
                    # The files do not depend on it: they are mirrored, these assets fail.
                    unreadable = dict.fromkeys(ids, str(exc))
                    annotations = PageAnnotations({a: [] for a in ids}, unreadable)
                await self._tags_ready.wait()
                staged = None
                if self._tags_unknown is None:
                    staged = await self.db.call(self.planner.staged_tags, ids)
                await events.send(_Metadata(page, staged, annotations))

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
        self, jobs: ObjectReceiveStream[Job], events: ObjectSendStream[Outcome | _Metadata]
    ) -> None:
        async with jobs, events:
            async for job in jobs:
                if self.transferer is None:  # dry run: the plan was emitted, nothing moves
                    await events.send(Outcome(job, None, None))
                    continue
                outcome = await transfer_job(
                    job,
                    transferer=self.transferer,
                    client=self.client,
                    dest=self.dest,
                    counters=self.counters,
                )
                await events.send(outcome)

    async def _joiner(self, events: MemoryObjectReceiveStream[Outcome | _Metadata]) -> None:
        """Pairs each finished file with its page's metadata and commits them together."""
        async with events:
            try:
                async for first in events:
                    await self._commit_events(take_batch(events, first))
            finally:
                with anyio.CancelScope(shield=True):
                    await self._flush_on_exit(events)

    async def _commit_events(self, batch: list[Outcome | _Metadata]) -> None:
        items: list[WriteItem] = []
        completed: list[_Page] = []
        for event in batch:
            if isinstance(event, _Metadata):
                page = event.page
                page.settled = self.planner.settle(
                    page.content,
                    event.staged,
                    event.annotations.by_asset,
                    event.annotations.unreadable,
                )
                items += page.settled.updates
                if page.settled.seen:
                    items.append(page.settled.seen)
                items += [self._item(outcome) for outcome in page.finished]
                page.finished.clear()
            else:
                page = self._page_of.pop(event.job.asset.id)
                page.outstanding -= 1
                if page.settled is None:
                    page.finished.append(event)
                    if event.result is not None:
                        # The file is in place: record it now, without the metadata still on
                        # its way, so a SIGKILL before that arrives does not lose the file (the
                        # next run would fetch it again); the metadata follows in its own row.
                        items.append(update_for_outcome(event, metadata=False))
                else:
                    items.append(self._item(event))
            if page.settled is not None and page.outstanding == 0:
                completed.append(page)
        await self.writer.commit(items)
        for page in completed:
            # Committed: from now on the manifest answers "seen this run?" for these ids.
            self._listed.difference_update(page.content.order)
            self._page_slots.release()

    def _item(self, outcome: Outcome) -> WriteItem:
        if self.transferer is None:
            self.planner.in_flight.release([outcome.job.asset.id])
            return [outcome.job.asset.id]
        return update_for_outcome(outcome)

    async def _flush_on_exit(self, events: MemoryObjectReceiveStream[Outcome | _Metadata]) -> None:
        """Cancelled or failed: commit the outcomes still queued. Files whose page metadata never
        came were recorded without it as they finished (tags and annotations left unknown): the
        next run sees that and fills it in, instead of downloading them again."""
        leftover = take_leftovers(events)
        if leftover:
            await self._commit_events(leftover)
