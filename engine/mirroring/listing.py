"""The pipeline in listing order: the mirror's stages in one anyio task group.

::

    lister ─pages─▶ content planner ─jobs─▶ queue ─▶ fetchers (N): URL freshness, transfer ─┐
                         │                                                                  ▼
                         └─pages─▶ metadata (annotations, staged tags) ──────────▶ ledger ──▶ writer
    tag staging ─▶ SQLite staging ─┘                                                          │
                                                                                      manifest ◀┘

Downloads depend on content alone (data id, object name, the file on disk), so a page's
downloads start as soon as it is listed; its tags and annotations are fetched alongside. What is
recorded and when is the pipeline's one commit rule (:mod:`engine.pipeline.commit`): a file in
place at once, its metadata following. At most :data:`PAGES_IN_FLIGHT` pages are between listing
and commit, so memory stays flat however large the version is, and a slow stage throttles the
ones before it. Each fetcher makes its job's URL usable just before the transfer
(:mod:`engine.pipeline.freshness`), handing the freshener the queue, so stale URLs are refreshed
together.

Errors: an asset that fails after the transfer core's retries is recorded as failed and the run
goes on; a listing that fails stops listing (so nothing is deleted) but lets queued work finish;
an authentication failure or a full disk stops the run. What the listing gets wrong without
failing (a malformed item, an asset listed twice: see :mod:`engine.pipeline.planning`) fails
that asset or skips the repeat; a repeat, or an item without a readable id, marks the listing as
not complete, so nothing is deleted. Tags that cannot be staged leave this run's tags unknown
(the manifest keeps the stored ones; a warning says so); a page's annotations that cannot be
read fail the assets concerned, whose files are still mirrored. Cancelled, the writer still
records what was put to it (files in place, with their metadata when it arrived).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from engine.errors import AuthError, EngineError
from engine.mirroring.shard_filter import own_assets
from engine.pipeline.commit import Ledger, Page
from engine.pipeline.freshness import UrlFreshener
from engine.pipeline.jobs import AssetJob, Outcome, PlannedAction, transfer_job
from engine.pipeline.metadata import AnnotationStaging, PageAnnotations, TagStaging
from engine.pipeline.planning import ContentPlan, PagePlanner
from engine.pipeline.run import Run
from engine.pipeline.summary import LiveCounters
from engine.pipeline.writer import ManifestWriter
from engine.platform.per_item import ListingPage

__all__ = ["METADATA_PAGES_AT_ONCE", "PAGES_IN_FLIGHT", "ListingPipeline", "PipelineResult"]

log = logging.getLogger("engine.mirroring")

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


class _JobQueue:
    """Jobs in listing order, waiting for a fetcher (bounded by the pages in flight)."""

    def __init__(self) -> None:
        self.jobs: deque[AssetJob] = deque()
        self._changed = anyio.Event()
        self._closed = False

    def extend(self, jobs: list[AssetJob]) -> None:
        self.jobs.extend(jobs)
        self._wake()

    def close(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def take(self) -> AssetJob | None:
        while not self.jobs:
            if self._closed:
                return None
            await self._changed.wait()
        return self.jobs.popleft()


class ListingPipeline:
    """One run of the pipeline over one dataset version, in listing order."""

    def __init__(
        self,
        run: Run,
        counters: LiveCounters,
        *,
        clock: Callable[[], float] = time.time,
        plan_sink: Callable[[PlannedAction], None] | None = None,
    ) -> None:
        settings = run.settings
        self.run_ctx = run
        self.settings = settings
        self.dv = run.dataset_version
        self.client = run.client
        self.transferer = run.transferer
        self.counters = counters
        self.result = PipelineResult()
        self.planner = PagePlanner(
            db=run.db,
            run_id=run.run_id,
            dest=run.dest,
            layout_name=settings.layout,
            unknown_url_lifetime=settings.transfer.unknown_url_lifetime,
            counters=counters,
            clock=clock,
            plan_sink=plan_sink,
            once_per_run=True,
        )
        self.freshener = UrlFreshener(
            run.client,
            self.dv,
            margin=settings.transfer.url_margin,
            unknown_lifetime=settings.transfer.unknown_url_lifetime,
            clock=clock,
        )
        # Group commit: a file's row waits for the barrier that makes it durable (the run was
        # opened with group_commit; without fsync the barrier has nothing to do).
        barrier = run.transferer.sync_placed if run.transferer is not None else None
        self.writer = ManifestWriter(
            run.db,
            run.run_id,
            on_committed=self.planner.in_flight.release,
            barrier=barrier,
            journal=run.journal,
        )
        self.ledger = Ledger(self.planner, self.writer, dry_run=run.transferer is None)
        self.tags = TagStaging(run.client, self.dv, run.db, run.run_id)
        self.annotations = AnnotationStaging(run.client, self.dv, run.db, run.run_id)
        self._queue = _JobQueue()
        self._page_slots = anyio.Semaphore(PAGES_IN_FLIGHT)
        self._listed: set[str] = set()  # asset ids of the pages in flight
        self._duplicates: list[str] = []  # the first few repeats, for the message
        self._unidentified = 0

    # -- the whole pipeline ------------------------------------------------------------------

    async def run(self, query: str | None) -> PipelineResult:
        concurrency = self.settings.limits.concurrency
        pages_tx, pages_rx = anyio.create_memory_object_stream[ListingPage](1)
        meta_tx, meta_rx = anyio.create_memory_object_stream[Page](PAGES_IN_FLIGHT)
        async with anyio.create_task_group() as outer:
            # The writer outlives the stages: what they put is committed after they end, and
            # (shielded) when they are cancelled.
            outer.start_soon(self.writer.run)
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._stage_tags)
                    # A filtered listing takes a part of the version: its pages ask for theirs.
                    self.annotations.version_wide &= query is None
                    tg.start_soon(self.annotations.run)
                    tg.start_soon(self._lister, query, pages_tx)
                    tg.start_soon(self._content, pages_rx, meta_tx)
                    async with meta_rx:
                        # Several pages' metadata at once: each is a chain of requests
                        # (annotation ids, then the bulk answer) whose latency would otherwise
                        # add up page after page.
                        for _ in range(METADATA_PAGES_AT_ONCE):
                            tg.start_soon(self._metadata, meta_rx.clone())
                    for _ in range(concurrency if self.transferer is not None else 1):
                        tg.start_soon(self._fetcher)
            finally:
                self.writer.close()
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
        await self.tags.run()
        error = self.tags.error
        if isinstance(error, AuthError):
            raise error
        if error is not None:
            # Files do not depend on tags: mirror them, and keep the tags the manifest has.
            warning = f"tags and data tags were not updated (the stored ones are kept): {error}"
            self.result.warnings.append(warning)
            log.warning("%s", warning)

    async def _lister(self, query: str | None, out: ObjectSendStream[ListingPage]) -> None:
        async with out:
            try:
                async for page in self.client.asset_pages(
                    self.dv, q=query, limit=self.settings.page_size
                ):
                    if page.items:
                        self.tags.saw_first([asset.data.id for asset in page.items])
                    page = own_assets(page, self.run_ctx.shard)
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
                self.tags.saw_first([])

    async def _content(
        self, pages: ObjectReceiveStream[ListingPage], to_metadata: ObjectSendStream[Page]
    ) -> None:
        try:
            async with pages, to_metadata:
                async for listed in pages:
                    await self._page_slots.acquire()  # released once the page is committed
                    content = await self.planner.plan_content(
                        listed.items, rejected=listed.rejected, in_flight=self._listed
                    )
                    self._note_repeats(content)
                    self._listed.update(content.order)

                    def committed(content: ContentPlan = content) -> None:
                        # From now on the manifest answers "seen this run?" for these ids.
                        self._listed.difference_update(content.order)
                        self._page_slots.release()

                    page = self.ledger.open(content, on_complete=committed)
                    await to_metadata.send(page)
                    self._queue.extend(content.jobs)
        finally:
            self._queue.close()

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

    async def _metadata(self, pages: ObjectReceiveStream[Page]) -> None:
        async with pages:
            async for page in pages:
                ids = page.content.order
                # One page's annotations (a few requests) while its files download.
                try:
                    annotations = await self.annotations.page(ids)
                except AuthError:
                    raise
                except EngineError as exc:
                    # The files do not depend on it: they are mirrored, these assets fail.
                    unreadable = dict.fromkeys(ids, str(exc))
                    annotations = PageAnnotations({a: [] for a in ids}, unreadable)
                staged = await self.tags.staged(ids)
                self.ledger.settle(page, staged, annotations.by_asset, annotations.unreadable)

    async def _fetcher(self) -> None:
        while (job := await self._queue.take()) is not None:
            if self.transferer is None:  # dry run: the plan was emitted, nothing moves
                self.ledger.finished(Outcome(job, None, None))
                continue
            await self.freshener.ready(job, self._queue.jobs)
            outcome = await transfer_job(
                job,
                transferer=self.transferer,
                client=self.client,
                dest=self.run_ctx.dest,
                counters=self.counters,
            )
            self.ledger.finished(outcome)
