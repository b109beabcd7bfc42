"""The manifest seen from the event loop: one worker thread, and one ordered writer.

SQLite is synchronous and its connection is used by one thread at a time, so every manifest call
goes through :class:`ManifestAccess` (a capacity-1 limiter on a worker thread). The
:class:`ManifestWriter` commits whatever has queued up in one transaction: many files per commit
when files arrive fast, one when they trickle in, never a commit per file on a busy run.

Everything a run records goes through one writer, in the order it was put: a file's row
(``ok``) and its later eviction (``evicted``) must reach the manifest in that order, or a
deleted file would be recorded as present; a callback put after a page's rows runs once they
are committed (the mirror frees the page's slot then).

Group commit: given a ``barrier`` (the mirror passes :meth:`Transferer.sync_placed
<engine.transfer.Transferer.sync_placed>`), a batch that records files awaits it before its
transaction, so no row vouches for a file whose bytes are not yet on stable storage. One barrier
covers every file whose row was put before it, so a busy run pays one per transaction, not one
per file. A failed barrier (a write-back error) keeps the files' rows out of the manifest for
good (the next run fetches them again), still records the rest of the batch, and stops the run.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from functools import partial
from typing import ParamSpec, TypeVar

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream

from engine.errors import LocalStorageError
from engine.manifest import AssetState, AssetUpdate, Manifest
from engine.pipeline.placed_journal import PlacedJournal

__all__ = [
    "MAX_BATCH",
    "After",
    "Evicted",
    "ManifestAccess",
    "ManifestWriter",
    "WriteItem",
    "take_batch",
    "take_leftovers",
]

P = ParamSpec("P")
T = TypeVar("T")

MAX_BATCH = 1000

# An update to apply, or asset ids to mark as seen by this run (skipped, or planned in a dry run).
WriteItem = AssetUpdate | list[str]


@dataclass(frozen=True, slots=True)
class Evicted:
    """This asset's file was deleted to stay within a disk budget."""

    asset_id: str


@dataclass(frozen=True, slots=True)
class After:
    """Call ``fn`` once everything put before it is committed (or failed to be)."""

    fn: Callable[[], None]


Item = WriteItem | Evicted | After


class ManifestAccess:
    """Runs manifest calls on one worker thread: SQLite is synchronous, the loop must not be."""

    def __init__(self, manifest: Manifest | None) -> None:
        self.manifest = manifest
        self._limiter = anyio.CapacityLimiter(1)

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self._limiter)


def _commit(
    manifest: Manifest,
    run_id: int,
    updates: Sequence[AssetUpdate],
    seen: Sequence[str],
    evicted: Sequence[str],
) -> None:
    if manifest.read_only:
        manifest.mark_seen(run_id, seen)  # a dry run: scratch marks, for the deletion count
        return
    if updates or seen:
        manifest.apply(updates, run_id, seen=seen)  # one transaction for both
    if evicted:
        changes: list[tuple[str, AssetState, str | None]] = [
            (asset_id, "evicted", None) for asset_id in evicted
        ]
        manifest.mark_states(changes)


def take_batch(stream: MemoryObjectReceiveStream[T], first: T, limit: int = MAX_BATCH) -> list[T]:
    """``first`` and whatever else is already queued, up to ``limit``: one transaction's worth."""
    batch = [first]
    while len(batch) < limit:
        try:
            batch.append(stream.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            break
    return batch


def take_leftovers(stream: MemoryObjectReceiveStream[T]) -> list[T]:
    """Everything still queued, without waiting (for the shielded flush of a cancelled run)."""
    leftover: list[T] = []
    while True:
        try:
            leftover.append(stream.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
            return leftover


class ManifestWriter:
    """Drains what is :meth:`put` into the manifest, a transaction per batch, in order.

    ``on_committed`` hears the asset ids of every committed update (the planner releases their
    in-flight path claims: from now on the manifest answers for them). Without a manifest (a dry
    run into an empty DEST) nothing is written and callbacks still run.

    ``barrier``: awaited before a transaction that records a file (see the module docstring);
    it returns once every file placed before the call is durable, or raises
    :class:`~engine.errors.LocalStorageError`.

    ``journal``: each file put here is written to it first, and it is emptied whenever
    everything put has been committed (:mod:`engine.pipeline.placed_journal`: a run killed in
    between leaves files the next run adopts instead of fetching them again).

    ``spacing``: seconds from the start of one transaction to the next at least (0: none).
    A caller whose rows trickle in (a prefetcher's window lands a few files at a time) gets
    fewer, larger transactions; what was put waits at most that long more, and a
    :meth:`flush` does not wait for it.
    """

    def __init__(
        self,
        db: ManifestAccess,
        run_id: int,
        on_committed: Callable[[Collection[str]], None] | None = None,
        *,
        barrier: Callable[[], Awaitable[object]] | None = None,
        journal: PlacedJournal | None = None,
        spacing: float = 0.0,
    ) -> None:
        self.db = db
        self.spacing = spacing
        self._last_start = -math.inf
        self._hurry = anyio.Event()  # set by flush(): someone waits, commit now
        self.journal = journal
        self.run_id = run_id
        self.on_committed = on_committed
        self.commits = 0
        self.barriers = 0
        self._barrier = barrier
        self._barrier_failed: LocalStorageError | None = None
        # Unbounded: what is put here is bounded by what the run holds in flight (pages, a
        # prefetch window), each item once.
        self._tx, self._rx = anyio.create_memory_object_stream[Item](math.inf)

    def put(self, item: Item) -> None:
        if self.journal is not None and isinstance(item, AssetUpdate) and item.file is not None:
            self.journal.record(item)
        self._tx.send_nowait(item)

    async def flush(self) -> None:
        """Return once everything put so far is committed."""
        done = anyio.Event()
        self.put(After(done.set))
        self._hurry.set()
        await done.wait()

    def close(self) -> None:
        """No more items: :meth:`run` commits what is queued and returns."""
        self._tx.close()

    async def run(self) -> None:
        async with self._rx:
            held: list[Item] = []  # taken from the stream, not yet handed to a transaction
            try:
                async for first in self._rx:
                    held = [first]
                    if self.spacing > 0:
                        wait = self._last_start + self.spacing - anyio.current_time()
                        if wait > 0 and not self._hurry.is_set():
                            with anyio.move_on_after(wait):
                                await self._hurry.wait()
                        if self._hurry.is_set():
                            self._hurry = anyio.Event()
                        self._last_start = anyio.current_time()
                    batch = take_batch(self._rx, first)
                    held = []
                    await self._commit(batch)
                    if (
                        self.journal is not None
                        and self._barrier_failed is None
                        and self._rx.statistics().current_buffer_used == 0
                    ):
                        self.journal.clear()  # every file journaled so far has its row
            finally:
                # Cancelled (a signal, a fatal error): files already in place must still reach
                # the database, or the next run would fetch them again.
                with anyio.CancelScope(shield=True):
                    leftover = held + take_leftovers(self._rx)
                    if leftover:
                        await self._commit(leftover)

    async def _commit(self, batch: Sequence[Item]) -> None:
        try:
            await self._write(batch)
        finally:
            for item in batch:
                if isinstance(item, After):
                    item.fn()

    async def _write(self, batch: Sequence[Item]) -> None:
        manifest = self.db.manifest
        if manifest is None:
            return
        updates = [item for item in batch if isinstance(item, AssetUpdate)]
        seen = [asset_id for item in batch if isinstance(item, list) for asset_id in item]
        evicted = [item.asset_id for item in batch if isinstance(item, Evicted)]
        if manifest.read_only:
            seen += [u.asset_id for u in updates]
            updates = []
        if not (updates or seen or evicted):
            return
        failed = None
        # A batch whose files are in place must reach the database even during cancellation.
        with anyio.CancelScope(shield=True):
            if self._barrier is not None and any(u.file is not None for u in updates):
                failed = await self._durable()
                if self._barrier_failed is not None:
                    updates = [u for u in updates if u.file is None]
            if updates or seen or evicted:
                await self.db.call(_commit, manifest, self.run_id, updates, seen, evicted)
                self.commits += 1
        if self.on_committed is not None and updates:
            self.on_committed([u.asset_id for u in updates])
        if failed is not None:
            raise failed

    async def _durable(self) -> LocalStorageError | None:
        """Run the barrier; the error if it failed now (once failed, it is not called again)."""
        if self._barrier_failed is not None or self._barrier is None:
            return None
        try:
            await self._barrier()
        except LocalStorageError as exc:
            self._barrier_failed = exc
            if self.journal is not None:
                # Files a barrier could not vouch for are never adopted by a later run either:
                # after a write-back error their bytes on disk are not to be trusted.
                self.journal.clear()
                self.journal = None
            return exc
        self.barriers += 1
        return None
