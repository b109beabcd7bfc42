"""One epoch of a prefetcher: the pipeline in the consumer's order.

::

    EpochSource ─chunks─▶ planner ─▶ Window (pure: positions, look-ahead, budget)
                            │  plan_content (PagePlanner)          ▲        │
                            │  metadata: annotations + staged tags │        ▼ next_download
                            └─▶ ledger.settle ─▶ writer ◀── ledger.finished ── fetchers (N)
                                                   ▲                              │
                        consumer: next() ── take ──┴─ evictions ◀─────────────────┘

The planner registers each chunk's positions in the window *before* asking the manifest
about them (so nothing it is about to hand out can be evicted), then resolves each asset: on
disk already (no request), to download, failed (gone from the version) or skipped (upload not
finished). A chunk's tags and annotations come alongside its downloads; an item goes out once
its file is in place and its metadata is in. What is recorded, and when, is the pipeline's one
commit rule (:mod:`engine.pipeline.commit`), as for the mirror: a file in place is recorded at
once, its metadata following, so a SIGKILL loses no file that was in place, and a later
``mirror`` skips it.

Fetchers take the lowest queued position the window allows (priority), evict what the budget
needs first (deleting without following symlinks, recording ``evicted``), on a shared DEST hold
the object's fetch lock (:class:`~engine.prefetch.locking.FetchLocks`: if another prefetcher
had it, its file is used instead), make the URL usable (:mod:`engine.pipeline.freshness`,
handing it the queued jobs in priority order to refresh together), and run the pipeline's
:func:`~engine.pipeline.jobs.transfer_job`.

Stopping: :meth:`EpochRun.cancel` lets downloads in flight finish for a short grace (so small
files land and are recorded rather than orphaned), then cuts them. Any fatal error (the token
was revoked, the disk is full, the listing broke) reaches the consumer's next call: never a
hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from engine.errors import AuthError, EngineError, PlatformError, primary_error
from engine.manifest import AssetRow
from engine.pipeline.commit import Page
from engine.pipeline.jobs import AssetJob, Outcome, transfer_job
from engine.pipeline.metadata import fetch_page_annotations
from engine.pipeline.planning import ContentPlan
from engine.pipeline.writer import After
from engine.prefetch.items import AssetUnavailable, PrefetchItem
from engine.prefetch.resume import OrderMark, Share
from engine.prefetch.source import EpochSource, Listed
from engine.prefetch.window import SlotState, Start, Window
from engine.state_folder import StateFolder
from engine.transfer import ProgressEvent
from engine.transfer.partial import Partial, PartialDir

if TYPE_CHECKING:
    from engine.prefetch.locking import HeldLock
    from engine.prefetch.session import Session

__all__ = ["CANCEL_GRACE", "EpochRun"]

log = logging.getLogger("engine.prefetch")

# Downloads in flight when an epoch is stopped get this long to land (seconds).
CANCEL_GRACE = 2.0
_MAX_CLAIM_ROUNDS = 4
_MAX_LISTED_FAILURES = 20
# A download the disk budget cannot admit yet asks again after this long (seconds), or sooner if
# something changes here: room is also made by other processes, which wake nobody here.
ROOM_POLL = 0.05


@dataclass(slots=True)
class _Entry:
    """What the async side keeps for one registered position."""

    listed: Listed
    job: AssetJob | None = None
    row: AssetRow | None = None  # on disk already
    outcome: Outcome | None = None
    error: str | None = None
    tags: tuple[str, ...] = ()
    data_tags: tuple[str, ...] = ()
    annotations: list[dict[str, Any]] = field(default_factory=list)
    meta: bool = False
    elsewhere: bool = False  # another process put the file in place (and recorded it)


class EpochRun:
    """One epoch: the items of ``share`` (default: the session's shard of the whole epoch; a
    resumed epoch: what is left of it)."""

    def __init__(
        self,
        session: Session,
        number: int,
        *,
        share: Share | None = None,
        resumed: OrderMark | None = None,
    ) -> None:
        s = session
        o = s.options
        self.s = session
        self.number = number
        self.share = share if share is not None else Share(s.shard, equal=o.equal_shards)
        self.resumed = resumed  # a resumed epoch: the order its state's positions are of
        budget = s.budget is not None
        # With a budget, plan no further than the window: files found on disk are protected
        # from registration on, and must not crowd the budget from beyond the look-ahead.
        self.chunk_cap = min(s.settings.page_size, o.window) if budget else s.settings.page_size
        self.plan_limit = o.window if budget else o.window + 2 * s.settings.page_size
        self.window = Window(
            items=o.window,
            bytes_ahead=o.window_bytes,
            pins=s.budget.pins if s.budget is not None else None,
            hold=o.hold,
            ordered=o.order == "ordered",
            unknown_size=s.settings.transfer.chunk_size,
        )
        self.entries: dict[int, _Entry] = {}
        self.scope = anyio.CancelScope()
        self.fatal: BaseException | None = None
        self.listing_error: EngineError | None = None
        self.ended = anyio.Event()
        self._event = anyio.Event()
        self._room = anyio.Event()
        self._consumer_waits = False
        self._planner_waits = False
        self._planner_done = False
        self._start_lock = anyio.Lock()
        self._refresh_lock = anyio.Lock()
        self._meta_limiter = anyio.CapacityLimiter(2)
        self._transfers: set[anyio.CancelScope] = set()
        self._active: dict[str, int] = {}  # asset id -> position of its download in flight
        self._tg: TaskGroup | None = None
        self._closed = False
        # Fetchers waiting for a download to start: bare futures of the loop (an anyio.Event
        # asks anyio, sniffio and the loop which library runs, at every wait).
        self._idle: deque[asyncio.Future[None]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Called at the end of every _notify (the plain iterator serves a consumer waiting in
        # another thread from here: as soon as its item is ready, not a loop turn later).
        self.on_change: Callable[[], None] | None = None
        self._reserved: dict[int, int] = {}  # position -> bytes the disk budget set aside for it

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            with self.scope:
                try:
                    async with anyio.create_task_group() as tg:
                        self._tg = tg
                        tg.start_soon(self._planner)
                        fetchers = min(self.s.settings.limits.concurrency, self.window.items)
                        for _ in range(fetchers):
                            tg.start_soon(self._fetcher)
                except Exception as exc:
                    self.fatal = primary_error(exc)
                    self.s.failed_fatally()
        finally:
            self._wind_up()  # synchronous: nothing here can be cancelled
            self.ended.set()
            self._notify()

    def cancel(self, grace: float = CANCEL_GRACE) -> None:
        """Stop the epoch; downloads in flight get ``grace`` seconds to land."""
        deadline = anyio.current_time() + grace
        for scope in self._transfers:
            scope.deadline = min(scope.deadline, deadline)
        self.scope.cancel()

    def _wind_up(self) -> None:
        """The epoch's tasks are over (what is in place was recorded as it landed). Stopped
        early, let go of everything the epoch holds; finished, the items left wait for the
        consumer."""
        budget = self.s.budget
        if budget is not None:
            for reserved in self._reserved.values():
                budget.released(reserved)  # downloads that never reported back (a fatal error)
            self._reserved.clear()
        if self.scope.cancel_called or self.fatal is not None:
            self.close()

    def close(self) -> None:
        """Let go of the paths claimed and the files protected for items not handed out."""
        if self._closed:
            return
        self._closed = True
        unplaced = [
            entry.job
            for entry in self.entries.values()
            if entry.job is not None
            and not entry.elsewhere
            and (entry.outcome is None or entry.outcome.result is None)
        ]
        self.s.ledger.drop(unplaced)
        self.window.close()

    def _notify(self) -> None:
        """Something changed. Wake only who can act on it: the consumer if an item (or the
        end, or an error) is there for it, the planner if the look-ahead has room, and one
        idle fetcher (which wakes the next if it could start a download: no herd per event)."""
        if self._consumer_waits and self._consumer_can_go():
            self._consumer_waits = False
            self._event.set()
            self._event = anyio.Event()
        if self._planner_waits and self.window.outstanding < self.plan_limit:
            self._planner_waits = False
            self._room.set()
            self._room = anyio.Event()
        if self._idle and (self._could_start() or not self._more_to_fetch()):
            # A woken fetcher that finds nothing to start costs a task switch and a lock: most
            # events (an item taken far behind the window's edge, metadata in) allow none.
            self._wake_fetcher()
        if self.on_change is not None:
            self.on_change()

    def _could_start(self) -> bool:
        return self.window.queued > 0 and self.window.next_download() is not None

    def _consumer_can_go(self) -> bool:
        return (
            self.window.next_yield() is not None
            or self.window.done()
            or self.ended.is_set()
            or self.fatal is not None
            or self.s.error is not None
        )

    async def _changed(self) -> None:
        self._consumer_waits = True
        await self._event.wait()

    async def _has_room(self) -> None:
        self._planner_waits = True
        await self._room.wait()

    def _wake_fetcher(self, everyone: bool = False) -> None:
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():  # a cancelled fetcher's is done: wake the next one instead
                waiter.set_result(None)
                if not everyone:
                    return

    async def _idle_wait(self, poll: float | None = None) -> None:
        """Wait to be woken (or ``poll`` seconds at most)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        waiter = self._loop.create_future()
        self._idle.append(waiter)
        if poll is None:
            await waiter
            return
        with anyio.move_on_after(poll) as waited:
            await waiter
        if waited.cancelled_caught:
            # Timed out: gone from the queue, or fetchers polling for room while nothing wakes
            # them would add a future to it every poll (a cancelled one is passed over anyway).
            with contextlib.suppress(ValueError):
                self._idle.remove(waiter)

    # -- the consumer ------------------------------------------------------------------------

    async def next(self) -> PrefetchItem:
        while (item := self.next_ready()) is None:
            await self._changed()
        return item

    def next_ready(self) -> PrefetchItem | None:
        """The next item if it can be handed out now (or the end, or an error, raised as
        :meth:`next` would); ``None`` when the consumer must wait. Synchronous, so a caller on
        another thread can take a ready item in one loop callback instead of a task."""
        s = self.s
        while True:
            error = self.fatal or s.error
            if error is not None:
                raise error
            position = self.window.next_yield()
            if position is None:
                if self.window.done():
                    self.close()
                    if self.listing_error is not None:
                        error, self.listing_error = self.listing_error, None
                        raise error
                    raise StopAsyncIteration
                if self.ended.is_set():
                    raise EngineError("the prefetcher stopped before the epoch ended")
                return None
            slot = self.window.take(position)
            entry = self.entries.pop(position)
            self._notify()
            if slot.state is SlotState.FAILED:
                item = self._failed(entry)
                if item is None:
                    continue
                return item
            return self._item(entry)

    def _item(self, entry: _Entry) -> PrefetchItem:
        s = self.s
        listed = entry.listed
        if entry.row is not None:
            row = entry.row
            assert row.path is not None
            rel, size, sha256, cached = row.path, row.size, row.sha256, True
            asset = listed.asset
        else:
            assert entry.outcome is not None and entry.outcome.result is not None
            assert entry.job is not None
            result = entry.outcome.result
            rel, size, sha256 = result.rel_path.as_posix(), result.size, result.sha256
            cached = False
            asset = entry.job.asset
        assert asset is not None
        data = asset.data
        s.stats.yielded += 1
        s.stats.cached += cached
        return PrefetchItem(
            asset_id=asset.id,
            data_id=data.id,
            filename=data.filename,
            path=s.dest / rel,
            rel_path=rel,
            size=size,
            sha256=sha256,
            content_type=data.content_type,
            width=data.width,
            height=data.height,
            tags=entry.tags,
            data_tags=entry.data_tags,
            annotations=entry.annotations,
            object_name=data.object_name,
            index=listed.index,
            epoch=self.number,
            cached=cached,
        )

    def _failed(self, entry: _Entry) -> PrefetchItem | None:
        s = self.s
        listed = entry.listed
        asset = entry.job.asset if entry.job is not None else listed.asset
        filename = asset.data.filename if asset is not None else ""
        reason = entry.error or "could not be fetched"
        s.stats.failed += 1
        if len(s.stats.failures) < _MAX_LISTED_FAILURES:
            s.stats.failures.append(f"{listed.asset_id}: {reason}")
        policy = s.options.on_failure
        if policy == "raise":
            raise AssetUnavailable(listed.asset_id, filename, reason)
        if policy == "skip":
            log.warning("skipping asset %s (%r): %s", listed.asset_id, filename, reason)
            return None
        data = asset.data if asset is not None else None
        return PrefetchItem(
            asset_id=listed.asset_id,
            data_id=data.id if data is not None else None,
            filename=filename,
            path=None,
            rel_path=None,
            size=None,
            sha256=None,
            content_type=data.content_type if data is not None else None,
            width=data.width if data is not None else None,
            height=data.height if data is not None else None,
            tags=entry.tags,
            data_tags=entry.data_tags,
            annotations=entry.annotations,
            object_name=data.object_name if data is not None else None,
            index=listed.index,
            epoch=self.number,
            cached=False,
            error=reason,
        )

    # -- the planner -------------------------------------------------------------------------

    async def _planner(self) -> None:
        source = EpochSource(
            self.s, self.number, chunk_cap=self.chunk_cap, share=self.share, resumed=self.resumed
        )
        try:
            await self.s.writer.flush()  # plan against everything earlier epochs recorded
            async with contextlib.aclosing(source.chunks()) as chunks:
                async for chunk in chunks:
                    while (
                        self.window.outstanding
                        and self.window.outstanding + len(chunk) > self.plan_limit
                    ):
                        await self._has_room()
                    await self._plan_chunk(chunk)
        except AuthError:
            raise
        except EngineError as exc:
            # What was listed still goes out; the consumer gets the error where it broke.
            self.listing_error = exc
        finally:
            self.window.source_done = True
            self._planner_done = True
            self._notify()
            self._wake_fetcher(everyone=True)

    async def _plan_chunk(self, chunk: list[Listed]) -> None:
        s = self.s
        window = self.window
        positions: dict[str, int] = {}
        for listed in chunk:
            position = window.planned
            window.plan(position, listed.asset_id)
            self.entries[position] = _Entry(listed)
            positions[listed.asset_id] = position
        found = [listed.asset for listed in chunk if listed.asset is not None]
        if s.budget is not None:
            # The pins are in the books before the planner looks for files on disk: another
            # process cannot evict a file between our finding it and our consumer reading it.
            await s.budget.flush()
        content = await s.planner.plan_content(found)
        gave_up = await self._claim(content, found)
        page = s.ledger.open(content)
        kept = {asset.id: row for asset, row, _ in content.kept}
        jobs = {job.asset.id: job for job in content.jobs}
        not_ready = set(content.not_ready)
        for listed in chunk:
            position = positions[listed.asset_id]
            entry = self.entries[position]
            asset_id = listed.asset_id
            if listed.asset is None:
                entry.error = "no longer in the dataset version"
                window.fail(position)
            elif asset_id in gave_up:
                entry.error = "no free path for it (another process keeps taking it)"
                window.fail(position)
            elif asset_id in not_ready:
                s.stats.skipped_not_ready += 1
                window.skip(position)
                del self.entries[position]
            elif asset_id in kept:
                row = entry.row = kept[asset_id]
                window.on_disk(position, row.size or 0)
                if s.budget is not None and row.path is not None:
                    s.budget.known(asset_id, row.path, row.size or 0)
            else:
                job = jobs[asset_id]
                entry.job = job
                window.queue(position, hint=self._hint(job, content.rows.get(asset_id)))
        self._notify()
        assert self._tg is not None
        self._tg.start_soon(self._metadata, page, positions)

    async def _claim(self, content: ContentPlan, found: list[Any]) -> set[str]:
        """Shared DEST: claim new paths; plan again the assets another process beat us to.
        Returns the assets that never got a path (after a few rounds)."""
        s = self.s
        by_id = {asset.id: asset for asset in found}
        for attempt in range(_MAX_CLAIM_ROUNDS):
            recorded = {asset_id: row.path for asset_id, row in content.rows.items()}
            lost = await s.claim(content.jobs, recorded)
            if not lost:
                return set()
            s.planner.in_flight.release(lost)
            content.jobs = [job for job in content.jobs if job.asset.id not in lost]
            if attempt == _MAX_CLAIM_ROUNDS - 1:
                return lost
            again = await s.planner.plan_content([by_id[asset_id] for asset_id in lost])
            content.rows.update(again.rows)
            content.kept += again.kept
            content.jobs += again.jobs
            content.not_ready += again.not_ready
        return set()

    @staticmethod
    def _hint(job: AssetJob, row: AssetRow | None) -> int | None:
        """The size to reserve if the manifest knows it (an evicted file of the same data)."""
        if row is None or row.data_id != job.asset.data.id or not row.sha256:
            return None
        return row.size

    async def _metadata(self, page: Page, positions: dict[str, int]) -> None:
        s = self.s
        order = page.content.order
        async with self._meta_limiter:
            annotations = await fetch_page_annotations(s.client, s.dv, order)
            if annotations.unreadable:
                # Items carry their annotations: handing out [] for unknown ones would lie.
                asset_id, why = next(iter(annotations.unreadable.items()))
                raise PlatformError(f"the annotations of asset {asset_id} could not be read: {why}")
            staged = await s.tags.staged(order)
            if staged is None:
                assert s.tags.error is not None
                raise s.tags.error
        s.ledger.settle(page, staged, annotations.by_asset)
        for asset_id, position in positions.items():
            entry = self.entries.get(position)
            if entry is None:
                continue
            entry.tags, entry.data_tags = staged.get(asset_id, ((), ()))
            entry.annotations = annotations.by_asset.get(asset_id, [])
            entry.meta = True
            self.window.meta_done(position)
        self._notify()

    # -- the fetchers ------------------------------------------------------------------------

    def _more_to_fetch(self) -> bool:
        return not self._planner_done or self.window.queued > 0

    def _queued(self, position: int) -> bool:
        slot = self.window.slot(position)
        return slot is not None and slot.state is SlotState.QUEUED

    async def _next_start(self) -> Start | None:
        while True:
            if self.s.budget is None:
                # No budget: nothing to evict, no await between choosing and starting, so no
                # lock either (the event loop runs one fetcher at a time).
                start = self.window.next_download()
                if start is not None:
                    self.window.start(start)
                    if self._could_start():
                        self._wake_fetcher()  # the next idle one starts the next download
                    return start
                if not self._more_to_fetch():
                    self._wake_fetcher(everyone=True)
                    return None
                await self._idle_wait()
                continue
            async with self._start_lock:
                start = self.window.next_download()
                admitted = await self._admitted(start) if start is not None else False
                if start is not None and admitted:
                    self.window.start(start)
                    self._wake_fetcher()  # there may be more to start: the next idle one looks
                    return start
            if admitted is None:
                continue  # the window moved while the books were asked: choose again now
            refused = start is not None
            if start is None and not self._more_to_fetch():
                self._wake_fetcher(everyone=True)  # the others end too
                return None
            # Nothing allowed yet, or no room: wait for the consumer or the planner to change
            # something (or, for room, for other processes to: ask again shortly).
            await self._idle_wait(ROOM_POLL if refused else None)

    async def _admitted(self, start: Start) -> bool | None:
        """Whether the disk budget's books reserved room for ``start`` (evicting as needed);
        None: they did, but the window moved meanwhile, and the room was given back."""
        budget = self.s.budget
        assert budget is not None
        job = self.entries[start.position].job
        assert job is not None
        admission = await budget.admit(
            job.asset.id, job.rel_path.as_posix(), start.reserve, must=start.must
        )
        if not admission.granted:
            return False
        if self.window.next_download() != start:
            # The window moved while the books were asked (an item taken, a chunk planned):
            # give the room back and choose again.
            budget.released(admission.reserved)
            return None
        self._reserved[start.position] = admission.reserved
        return True

    async def _fetcher(self) -> None:
        s = self.s
        while (start := await self._next_start()) is not None:
            position = start.position
            entry = self.entries[position]
            job = entry.job
            assert job is not None
            self._active[job.asset.id] = position
            scope = anyio.CancelScope(shield=True)
            self._transfers.add(scope)
            unlock: Callable[[], None] | None = None
            try:
                async with self._one_fetcher(job) as (held, placed):
                    if placed is not None:
                        self._placed_by_another(position, entry, placed)
                        continue
                    await s.freshener.ready(job, self._upcoming())
                    with scope:
                        outcome = await transfer_job(
                            job,
                            transferer=s.transferer,
                            client=s.client,
                            dest=s.dest,
                            counters=s.counters,
                        )
                    if s.budget is not None and (scope.cancelled_caught or outcome.result is None):
                        # A cache keeps no half files (a partial sits outside the books); under
                        # the object's fetch lock, so no other process is resuming it.
                        self._discard_partial(job)
                    unlock = held.keep()
            finally:
                self._transfers.discard(scope)
                self._active.pop(job.asset.id, None)
            # From here to the writer's After below nothing awaits: the kept lock is released.
            reserved = self._reserved.pop(position, 0)
            if scope.cancelled_caught:
                if unlock is not None:
                    unlock()
                self._give_back(reserved)
                self.window.fail(position)
                return
            entry.outcome = outcome
            try:
                s.ledger.finished(outcome)
            finally:
                if unlock is not None:
                    # Released once the row is committed: a process that waited for this
                    # object's lock then finds the row, not a file it would download again.
                    s.writer.put(After(unlock))
            if outcome.result is not None:
                s.stats.downloaded += 1
                self.window.finished(position, outcome.result.size)
                if s.budget is not None:
                    # The file joins the books once its row is committed (see budget.py).
                    path = outcome.result.rel_path.as_posix()
                    size = outcome.result.size
                    record = functools.partial(s.budget.placed, job.asset.id, path, size, reserved)
                    s.writer.put(After(record))
            else:
                entry.error = outcome.error
                self.window.fail(position)
                self._give_back(reserved)
            self._notify()

    def _give_back(self, reserved: int) -> None:
        if self.s.budget is not None and reserved:
            self.s.budget.released(reserved)

    def _discard_partial(self, job: AssetJob) -> None:
        state = StateFolder(self.s.dest)
        part = Partial(PartialDir(state.path), job.asset.id, job.asset.data.id).path
        for path in state.partial_files(part):
            with contextlib.suppress(OSError):
                os.unlink(path)

    @contextlib.asynccontextmanager
    async def _one_fetcher(self, job: AssetJob) -> AsyncIterator[tuple[HeldLock, AssetRow | None]]:
        """Hold the object's fetch lock (DEST is shared); if another prefetcher may have put
        the file in place since it was planned, yield with it that file's row (None: download
        it)."""
        locks = self.s.fetch_locks
        async with locks.hold(job.asset.id) as held:
            # Reading the row costs a trip to the manifest's thread: made when another process
            # had the lock, or when another prefetcher is about and a file is at the path (the
            # workers of one DataLoader fetch disjoint shares: there, nothing is at the path).
            look = held.waited or (not locks.alone() and self._something_at(job))
            yield held, await self._in_place(job) if look else None

    def _something_at(self, job: AssetJob) -> bool:
        """Whether anything is at the job's path: one ``lstat`` on the loop, a few microseconds,
        against the hop to the manifest's thread it saves."""
        return os.path.lexists(self.s.dest / job.rel_path)

    async def _in_place(self, job: AssetJob) -> AssetRow | None:
        s = self.s
        row = await s.db.call(s.manifest.row, job.asset.id)
        return row if s.planner.file_current(job.asset, row) else None

    def _placed_by_another(self, position: int, entry: _Entry, row: AssetRow) -> None:
        """Another prefetcher fetched this asset while we waited: use its file."""
        assert entry.job is not None
        entry.row = row
        entry.elsewhere = True
        self.s.ledger.ended_elsewhere(entry.job)
        self.window.finished(position, row.size or 0)
        self._give_back(self._reserved.pop(position, 0))
        if self.s.budget is not None and row.path is not None:
            self.s.budget.known(row.asset_id, row.path, row.size or 0)
        self._notify()

    def _upcoming(self) -> Iterator[AssetJob]:
        """The queued jobs, next to start first (the freshener refreshes stale ones together)."""
        queued = sorted(p for p, e in self.entries.items() if e.job is not None and self._queued(p))
        for position in queued:
            job = self.entries[position].job
            assert job is not None
            yield job

    def on_progress(self, event: ProgressEvent) -> None:
        """A download announced its size before writing: keep the books within budget now."""
        if event.kind != "start" or event.total is None:
            return
        position = self._active.get(event.asset_id)
        if position is None:
            return
        extra = self.window.size_known(position, event.total)
        budget = self.s.budget
        if extra > 0 and budget is not None:
            self._reserved[position] = self._reserved.get(position, 0) + extra
            budget.grow(extra)
