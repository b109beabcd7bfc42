"""The order of an epoch, kept on disk: a private temporary SQLite database per prefetcher.

It holds one row per asset id of the version's listing (or of the ids the caller gave), in
order, and nothing else: a million ids take tens of megabytes of a temporary file and a few
megabytes of page cache, never the whole listing in memory. An epoch reads it back through one
cursor: in order, or sorted by :func:`engine.prefetch.split.rank` (registered with
``create_function``), which SQLite's sorter evaluates once per row and spills to disk as it needs.
The database (opened with an empty file name) is deleted when it is closed, or by the OS with
the process.

Synchronous: the prefetcher calls it from a worker thread, one call at a time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from itertools import islice

from engine.errors import UsageError
from engine.prefetch.split import Shard, rank

__all__ = ["OrderCursor", "OrderStore"]

_INSERT_BATCH = 1000


class OrderStore:
    def __init__(self) -> None:
        # "": a private temporary database on disk (SQLite deletes it on close).
        self._conn = sqlite3.connect("", check_same_thread=False, isolation_level=None)
        self._conn.create_function("assetsync_rank", 2, rank, deterministic=True)
        self._conn.execute("PRAGMA cache_size = -4096")  # KiB: bounded, whatever the listing
        self._conn.execute(
            "CREATE TABLE ids (pos INTEGER PRIMARY KEY, asset_id TEXT NOT NULL UNIQUE)"
        )
        self.count = 0
        self.complete = False

    def close(self) -> None:
        self._conn.close()

    def reset(self) -> None:
        self._conn.execute("DELETE FROM ids")
        self.count = 0
        self.complete = False

    def append(self, asset_ids: Iterable[str], *, strict: bool = False) -> list[str]:
        """Add ids after those already there; returns those that were new, in order.

        A listing repeats nothing, but a live one may show an asset twice when it drifts: the
        repeat is dropped. Ids given by the caller must not repeat (``strict``).
        """
        added: list[str] = []
        ids = iter(asset_ids)
        verb = "INSERT" if strict else "INSERT OR IGNORE"
        while batch := list(islice(ids, _INSERT_BATCH)):
            self._conn.execute("BEGIN")
            try:
                for asset_id in batch:
                    if not isinstance(asset_id, str) or not asset_id:
                        raise UsageError(f"asset ids are non-empty strings, not {asset_id!r}")
                    if self._conn.execute(
                        f"{verb} INTO ids (pos, asset_id) VALUES (?, ?)",
                        (self.count + len(added), asset_id),
                    ).rowcount:
                        added.append(asset_id)
                self._conn.execute("COMMIT")
            except sqlite3.IntegrityError:
                self._conn.execute("ROLLBACK")
                raise UsageError("the asset ids given to the prefetcher repeat an id") from None
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        self.count += len(added)
        return added

    def cursor(self, key: bytes | None, shard: Shard, start: int = 0) -> OrderCursor:
        """The epoch's order (``key``: shuffled by it; None: as stored), this shard's share of
        its positions from ``start`` on (a resumed epoch skips what came before, by arithmetic:
        the order is a function of the key and the ids)."""
        if key is None:
            cur = self._conn.execute(
                "SELECT asset_id FROM ids ORDER BY pos LIMIT -1 OFFSET ?", (start,)
            )
        else:
            cur = self._conn.execute(
                "SELECT asset_id FROM ids ORDER BY assetsync_rank(?, asset_id), pos "
                "LIMIT -1 OFFSET ?",
                (key, start),
            )
        return OrderCursor(cur, shard, start)


class OrderCursor:
    """Reads an order back in chunks: ``(index in the whole order, asset id)`` pairs."""

    def __init__(self, cursor: sqlite3.Cursor, shard: Shard, start: int = 0) -> None:
        self._cursor = cursor
        self._shard = shard
        self._index = start
        self._done = False

    def take(self, count: int) -> list[tuple[int, str]]:
        """Up to ``count`` more of this shard's items; empty at the end."""
        out: list[tuple[int, str]] = []
        while len(out) < count and not self._done:
            rows = self._cursor.fetchmany(max(count - len(out), 1) * self._shard.count)
            if not rows:
                self._done = True
                break
            for (asset_id,) in rows:
                if self._shard.holds(self._index):
                    out.append((self._index, asset_id))
                self._index += 1
        return out

    def close(self) -> None:
        self._done = True
        self._cursor.close()
