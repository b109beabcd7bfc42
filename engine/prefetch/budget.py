"""The disk budget's side of an epoch: making room, and deleting without following links.

:class:`~engine.prefetch.window.DiskBooks` (pure) decides how much must go and which passed
files; this module deletes them and records it, and visits the manifest for *cold* files
(recorded before the session and untouched since), in manifest order. See the README's "A disk
budget" for the rule.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from itertools import islice
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from engine.manifest import AssetRow
from engine.pipeline.dest_files import remove_file
from engine.pipeline.writer import Evicted
from engine.prefetch.window import Start

if TYPE_CHECKING:
    from engine.prefetch.session import Session

__all__ = ["BudgetKeeper"]

log = logging.getLogger("engine.prefetch")

_COLD_BATCH = 256
COLD_MIN = 32  # untouched rows kept at hand, for evictions that cannot wait for the manifest


class BudgetKeeper:
    def __init__(self, session: Session) -> None:
        self.s = session

    def track(self, asset_id: str, rel_path: str | None) -> None:
        if self.s.books is not None and rel_path is not None:
            self.s.resident_paths[asset_id] = rel_path

    def peak(self) -> None:
        books = self.s.books
        if books is not None:
            self.s.stats.peak_usage = max(self.s.stats.peak_usage, books.usage)

    def delete(self, asset_id: str, rel_path: str, size: int) -> None:
        try:
            removed = remove_file(self.s.dest, PurePosixPath(rel_path))
        except OSError as exc:
            log.warning("could not evict %s: %s", rel_path, exc.strerror)
            return
        if removed:
            self.s.stats.evicted += 1
            self.s.stats.evicted_bytes += size
        self.s.writer.put(Evicted(asset_id))

    def evict_passed(self, need: int) -> int:
        books = self.s.books
        assert books is not None
        freed = 0
        for asset_id, size in books.victims(need):
            rel_path = self.s.resident_paths.pop(asset_id, None)
            if rel_path is not None:
                self.delete(asset_id, rel_path, size)
            freed += size
        return freed

    async def make_room(self, start: Start) -> bool:
        """Evict for ``start``; False when the books turned out wrong and it must be asked
        again (untouched files the manifest counted were not there)."""
        books = self.s.books
        assert books is not None
        freed = 0
        if books.cold:
            freed += await self.evict_cold(start.free)
        if freed < start.free:
            freed += self.evict_passed(start.free - freed)
        self.peak()
        if start.forced:
            self.s.stats.over_budget_starts += 1
            log.warning(
                "disk budget too small for the look-ahead: fetching the next item over it "
                "(%d bytes on the books, budget %d)",
                books.usage + start.reserve,
                books.budget,
            )
            return True
        return books.usage + start.reserve <= books.budget

    async def evict_cold(self, need: int) -> int:
        """Delete untouched files (recorded before this session), in manifest order, reading
        more rows as needed."""
        s = self.s
        books = s.books
        assert books is not None
        freed = 0
        while freed < need and books.cold:
            freed += self.evict_cold_now(need - freed)
            if freed >= need or s.cold_done:
                break
            await self.fill_cold(len(s.cold_rows) + _COLD_BATCH)
        return freed

    def evict_cold_now(self, need: int) -> int:
        """:meth:`_evict_cold` from the rows already read: no I/O but the deletions, so the
        transfer core's size announcement can be answered before its first byte lands.

        A row whose asset the epoch registered but has not resolved yet is still untouched
        (its bytes are in ``cold``) but must stay: it is put back for a later visit. Once every
        row was visited, ``cold`` is exactly what such rows still hold.
        """
        s = self.s
        books = s.books
        assert books is not None
        freed = 0
        deferred: list[AssetRow] = []
        while freed < need and s.cold_rows:
            row = s.cold_rows.popleft()
            if books.known(row.asset_id):
                if not books.resident(row.asset_id):
                    deferred.append(row)  # registered, unresolved: untouched but protected
                continue  # touched: no longer cold
            size = row.size or 0
            books.cold_evicted(size)
            assert row.path is not None
            self.delete(row.asset_id, row.path, size)
            freed += size
        s.cold_rows.extendleft(reversed(deferred))
        if s.cold_done and len(s.cold_rows) == len(deferred):
            books.cold = min(books.cold, sum(row.size or 0 for row in deferred))
        return freed

    async def fill_cold(self, want: int) -> None:
        """Read untouched rows until ``want`` are buffered or every row was read."""
        s = self.s
        while len(s.cold_rows) < want and not s.cold_done:
            if s.cold_iter is None:
                s.cold_iter = s.manifest.iter_rows()
            rows = await s.db.call(_take, s.cold_iter, _COLD_BATCH)
            if not rows:
                s.cold_done = True
                break
            s.cold_rows.extend(
                row
                for row in rows
                if row.state == "ok"
                and row.path is not None
                and (row.fetched_at or 0.0) < s.started_at
            )
        books = s.books
        if books is not None and s.cold_done and not s.cold_rows:
            books.cold = 0  # every untouched row was visited: none is left


def _take(rows: Iterator[AssetRow], count: int) -> list[AssetRow]:
    return list(islice(rows, count))
