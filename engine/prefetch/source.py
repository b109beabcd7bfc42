"""Where an epoch's assets come from, in order, a chunk at a time.

* The first epoch in listing order streams the version's listing (cursor pages of
  ``page_size``, the next page requested while this one is planned): the first items are on
  their way before the listing ends. The ids are written to the order store as they come.
* Every other epoch (a later one, a shuffled one, or explicit ids) reads the order store: in
  order or sorted by the epoch's keyed hash, this shard's share, and asks the platform for each
  chunk's records through the ``XGET`` listing by ids (up to 1000 a request, each with a freshly
  signed URL). A shuffled first epoch lists the whole version into the store first.

The epoch's order is therefore the version as listed when the session first listed it: later
epochs see the same assets (an asset deleted since comes as a failure; changed content is
followed: the ``XGET`` gives the current data).

A resumed epoch (a state loaded) lists the whole order before its first item and checks that
the positions its state skips are of this order: the same first ids in listing order (assets
added at the end change nothing before them), the very same ids when shuffled (any change moves
every position). Otherwise it refuses in one line rather than skip or repeat assets.

Chunks start small and double up to ``page_size``, so the first items need little metadata
before they can go out, and later chunks cost few requests.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import anyio
import anyio.to_thread

from engine.errors import UsageError
from engine.platform import models
from engine.prefetch.resume import OrderMark, Share, ShareScan
from engine.prefetch.split import shuffle_key

if TYPE_CHECKING:
    from engine.prefetch.session import Session

__all__ = ["EpochSource", "Listed"]

T = TypeVar("T")
FIRST_CHUNK = 32


@dataclass(slots=True)
class Listed:
    """One asset of the epoch: its index in the whole order, and its record (None: the
    platform no longer has it in the version)."""

    index: int
    asset_id: str
    asset: models.Asset | None


class _Sizer:
    def __init__(self, first: int, cap: int) -> None:
        self.size = max(1, min(first, cap))
        self.cap = cap

    def take(self) -> int:
        size = self.size
        self.size = min(self.size * 2, self.cap)
        return size


class EpochSource:
    def __init__(
        self,
        session: Session,
        epoch: int,
        *,
        chunk_cap: int,
        share: Share,
        resumed: OrderMark | None = None,
    ) -> None:
        self.s = session
        self.epoch = epoch
        self.share = share  # the positions this prefetcher yields (a resumed epoch: the rest)
        self.resumed = resumed  # the order a resumed epoch's share is of
        self._sizer = _Sizer(min(FIRST_CHUNK, session.options.window), chunk_cap)
        self._limiter = anyio.CapacityLimiter(1)

    async def _store(self, fn: Callable[..., T], *args: object) -> T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def chunks(self) -> AsyncGenerator[list[Listed], None]:
        s = self.s
        streams = not s.options.shuffle and self.share.equal is None and self.resumed is None
        if not s.order.complete and streams:
            async for chunk in self._stream_listing():
                yield chunk
            return
        if not s.order.complete:
            await self._list_all()
        if self.resumed is not None:
            await self._check_resumed(self.resumed)
        async for chunk in self._from_order():
            yield chunk

    def _split(self, listed: Sequence[Listed]) -> list[list[Listed]]:
        out: list[list[Listed]] = []
        start = 0
        while start < len(listed):
            size = self._sizer.take()
            out.append(list(listed[start : start + size]))
            start += size
        return out

    async def _pages(self) -> AsyncGenerator[list[models.Asset], None]:
        """The listing's pages, their new ids recorded in the order store."""
        s = self.s
        await self._store(s.order.reset)
        pages = s.client.asset_pages(s.dv, q=s.query, limit=s.settings.page_size)
        try:
            async for page in pages:
                if page.items:
                    s.saw_first([asset.data.id for asset in page.items])
                new = set(await self._store(s.order.append, [a.id for a in page.items]))
                # A live listing may repeat an asset (drift): keep its first appearance only.
                fresh = []
                for asset in page.items:
                    if asset.id in new:
                        new.discard(asset.id)
                        fresh.append(asset)
                yield fresh
        finally:
            with anyio.CancelScope(shield=True):
                await pages.aclose()  # type: ignore[attr-defined]
        s.order.complete = True
        s.saw_first([])

    async def _stream_listing(self) -> AsyncIterator[list[Listed]]:
        scan = ShareScan(self.share)
        index = 0
        async with contextlib.aclosing(self._pages()) as pages:
            async for assets in pages:
                mine = []
                for asset in assets:
                    if index >= scan.start and scan.wants(index):
                        mine.append(Listed(index, asset.id, asset))
                    index += 1
                for chunk in self._split(mine):
                    yield chunk

    async def _list_all(self) -> None:
        async with contextlib.aclosing(self._pages()) as pages:
            async for _ in pages:
                pass

    async def _check_resumed(self, mark: OrderMark) -> None:
        order = self.s.order
        shuffled = self.s.options.shuffle
        same = order.count == mark.count if shuffled else order.count >= mark.count
        if same and await self._store(order.prefix_digest, mark.count) == mark.digest:
            return
        raise UsageError(
            f"the version's order changed since the state was taken ({mark.count} assets in it "
            f"then, {order.count} now): resuming epoch {self.epoch} by position would skip or "
            "repeat assets; start the epoch afresh (without the state)"
        )

    async def _from_order(self) -> AsyncIterator[list[Listed]]:
        s = self.s
        key = shuffle_key(s.options.seed, self.epoch) if s.options.shuffle else None
        scan = ShareScan(self.share, s.order.count)
        cursor = await self._store(s.order.cursor, key, scan)
        try:
            while batch := await self._store(cursor.take, self._sizer.take()):
                ids = [asset_id for _, asset_id in batch]
                assets = await s.client.assets_by_ids(s.dv, ids)
                if assets:
                    s.saw_first([asset.data.id for asset in assets])
                by_id = {asset.id: asset for asset in assets}
                yield [Listed(index, asset_id, by_id.get(asset_id)) for index, asset_id in batch]
        finally:
            with anyio.CancelScope(shield=True):
                await self._store(cursor.close)
        s.saw_first([])
