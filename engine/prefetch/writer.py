"""The prefetcher's manifest writer: the mirror's :class:`~engine.pipeline.writer.BatchWriter`,
plus evictions, in one ordered stream.

A file's row (``ok``) and its later eviction (``evicted``) must reach the manifest in that
order, or a deleted file would be recorded as present. Both go through one stream; each batch
applies its updates before it marks its evictions, and batches commit one after the other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass

import anyio

from engine.manifest import AssetState
from engine.pipeline.writer import (
    BatchWriter,
    ManifestAccess,
    WriteItem,
    take_batch,
    take_leftovers,
)

__all__ = ["Evicted", "SessionWriter"]


@dataclass(frozen=True, slots=True)
class Evicted:
    """This asset's file was deleted to stay within the disk budget."""

    asset_id: str


@dataclass(frozen=True, slots=True)
class _Flush:
    done: anyio.Event


Item = WriteItem | Evicted | _Flush


class SessionWriter:
    def __init__(
        self,
        db: ManifestAccess,
        run_id: int,
        on_committed: Callable[[Collection[str]], None] | None = None,
    ) -> None:
        self.db = db
        self._batches = BatchWriter(db, run_id, on_committed=on_committed)
        # Unbounded: what is put here is bounded by the epoch's window and planned chunks.
        self._tx, self._rx = anyio.create_memory_object_stream[Item](math.inf)

    def put(self, item: Item) -> None:
        self._tx.send_nowait(item)

    async def flush(self) -> None:
        """Return once everything put so far is committed (a new epoch plans against it)."""
        done = anyio.Event()
        self._tx.send_nowait(_Flush(done))
        await done.wait()

    def close(self) -> None:
        """No more items: :meth:`run` commits what is queued and returns."""
        self._tx.close()

    async def run(self) -> None:
        async with self._rx:
            try:
                async for first in self._rx:
                    await self._commit(take_batch(self._rx, first))
            finally:
                # Cancelled: files already in place must still be recorded.
                with anyio.CancelScope(shield=True):
                    leftover = take_leftovers(self._rx)
                    if leftover:
                        await self._commit(leftover)

    async def _commit(self, batch: list[Item]) -> None:
        try:
            await self._write(batch)
        finally:
            for item in batch:
                if isinstance(item, _Flush):
                    item.done.set()

    async def _write(self, batch: list[Item]) -> None:
        items = [item for item in batch if not isinstance(item, Evicted | _Flush)]
        evicted = [item.asset_id for item in batch if isinstance(item, Evicted)]
        if items:
            await self._batches.commit(items)
        manifest = self.db.manifest
        if evicted and manifest is not None:
            changes: list[tuple[str, AssetState, str | None]] = [
                (asset_id, "evicted", None) for asset_id in evicted
            ]
            with anyio.CancelScope(shield=True):
                await self.db.call(manifest.mark_states, changes)
