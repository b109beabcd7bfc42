"""The manifest seen from the event loop: one worker thread, and a batching writer.

SQLite is synchronous and its connection is used by one thread at a time, so every manifest call
goes through :class:`ManifestAccess` (a capacity-1 limiter on a worker thread). The
:class:`BatchWriter` commits whatever has queued up in one transaction: many files per commit
when files arrive fast, one when they trickle in, never a commit per file on a busy run.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from functools import partial
from typing import ParamSpec, TypeVar

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream

from engine.manifest import AssetUpdate, Manifest

__all__ = [
    "MAX_BATCH",
    "BatchWriter",
    "ManifestAccess",
    "WriteItem",
    "take_batch",
    "take_leftovers",
]

P = ParamSpec("P")
T = TypeVar("T")

MAX_BATCH = 1000

# An update to apply, or asset ids to mark as seen by this run (skipped, or planned in a dry run).
WriteItem = AssetUpdate | list[str]


class ManifestAccess:
    """Runs manifest calls on one worker thread: SQLite is synchronous, the loop must not be."""

    def __init__(self, manifest: Manifest | None) -> None:
        self.manifest = manifest
        self._limiter = anyio.CapacityLimiter(1)

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self._limiter)


def _commit(
    manifest: Manifest, run_id: int, updates: Sequence[AssetUpdate], seen: Sequence[str]
) -> None:
    if manifest.read_only:
        manifest.mark_seen(run_id, seen)  # a dry run: scratch marks, for the deletion count
    else:
        manifest.apply(updates, run_id, seen=seen)  # one transaction for both


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


class BatchWriter:
    """Drains a stream of :data:`WriteItem` into the manifest, a transaction per batch.

    ``on_committed`` hears the asset ids of every committed batch (the planner releases their
    in-flight path claims: from now on the manifest answers for them).
    """

    def __init__(
        self,
        db: ManifestAccess,
        run_id: int,
        on_committed: Callable[[Collection[str]], None] | None = None,
    ) -> None:
        self.db = db
        self.run_id = run_id
        self.on_committed = on_committed
        self.commits = 0

    async def run(self, items: MemoryObjectReceiveStream[WriteItem]) -> None:
        async with items:
            try:
                async for first in items:
                    await self.commit(take_batch(items, first))
            finally:
                # Cancelled (a signal, a fatal error): files already in place must still reach
                # the database, or the next run would fetch them again.
                with anyio.CancelScope(shield=True):
                    leftover = take_leftovers(items)
                    if leftover:
                        await self.commit(leftover)

    async def commit(self, batch: Sequence[WriteItem]) -> None:
        manifest = self.db.manifest
        if manifest is None:
            return
        updates = [item for item in batch if isinstance(item, AssetUpdate)]
        seen = [asset_id for item in batch if isinstance(item, list) for asset_id in item]
        if manifest.read_only:
            seen += [u.asset_id for u in updates]
            updates = []
        # A batch whose files are in place must reach the database even during cancellation.
        with anyio.CancelScope(shield=True):
            await self.db.call(_commit, manifest, self.run_id, updates, seen)
        self.commits += 1
        if self.on_committed is not None:
            self.on_committed([u.asset_id for u in updates])
