"""The order of an epoch, kept on disk: a private temporary SQLite database per prefetcher.

It holds one row per asset id of the version's listing (or of the ids the caller gave), in
order, and nothing else: a million ids take tens of megabytes of a temporary file and a few
megabytes of page cache, never the whole listing in memory. An epoch reads it back through one
cursor: in order, or sorted by :func:`engine.prefetch.split.rank` (registered with
``create_function``), which SQLite's sorter evaluates once per row and spills to disk as it needs.
The database (opened with an empty file name) is deleted when it is closed, or by the OS with
the process.

The store also keeps a digest of the ids in order as they come (:attr:`OrderStore.listed`): a
resume state carries it, so that a resumed epoch can tell whether the positions it skips are
those of the order the state was taken in (:meth:`OrderStore.prefix_digest`).

Synchronous: the prefetcher calls it from a worker thread, one call at a time.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable
from itertools import islice

from engine.errors import UsageError
from engine.prefetch.resume import ShareScan
from engine.prefetch.split import rank
from engine.sharding import WHOLE, AssetShard

__all__ = ["OrderCursor", "OrderDigest", "OrderStore"]

_INSERT_BATCH = 1000


class OrderDigest:
    """The digest of an order's ids, fed one by one in order."""

    def __init__(self) -> None:
        self._hash = hashlib.blake2b(digest_size=16)

    def feed(self, asset_id: str) -> None:
        self._hash.update(asset_id.encode("utf-8", "surrogatepass") + b"\n")

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class OrderStore:
    """``machine``: the node's shard of the version (``--shard``, :mod:`engine.sharding`): the
    one place a prefetcher leaves out the other nodes' assets, listed or given. The epoch's
    order is then this node's, and its positions are split between the node's ranks and
    workers (:class:`~engine.prefetch.split.Shard`)."""

    def __init__(self, machine: AssetShard = WHOLE) -> None:
        self.machine = machine
        # "": a private temporary database on disk (SQLite deletes it on close).
        self._conn = sqlite3.connect("", check_same_thread=False, isolation_level=None)
        self._conn.create_function("assetsync_rank", 2, rank, deterministic=True)
        self._conn.execute("PRAGMA cache_size = -4096")  # KiB: bounded, whatever the listing
        self._conn.execute(
            "CREATE TABLE ids (pos INTEGER PRIMARY KEY, asset_id TEXT NOT NULL UNIQUE)"
        )
        self.count = 0
        self.complete = False
        self._digest = OrderDigest()
        # (ids stored, digest of them in order): replaced whole after each append, so another
        # thread (the consumer's, taking a state) reads a consistent pair.
        self.listed: tuple[int, str] = (0, self._digest.hexdigest())

    def close(self) -> None:
        self._conn.close()

    def reset(self) -> None:
        self._conn.execute("DELETE FROM ids")
        self.count = 0
        self.complete = False
        self._digest = OrderDigest()
        self.listed = (0, self._digest.hexdigest())

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
                    if not self.machine.holds(asset_id):
                        continue
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
        for asset_id in added:
            self._digest.feed(asset_id)
        self.count += len(added)
        self.listed = (self.count, self._digest.hexdigest())
        return added

    def prefix_digest(self, count: int) -> str:
        """The digest of the first ``count`` ids in stored order (as :attr:`listed` had it when
        that many were stored)."""
        digest = OrderDigest()
        rows = self._conn.execute("SELECT asset_id FROM ids ORDER BY pos LIMIT ?", (count,))
        for (asset_id,) in rows:
            digest.feed(asset_id)
        return digest.hexdigest()

    def _ordered(self, key: bytes | None, offset: int, limit: int = -1) -> sqlite3.Cursor:
        if key is None:
            return self._conn.execute(
                "SELECT asset_id FROM ids ORDER BY pos LIMIT ? OFFSET ?", (limit, offset)
            )
        return self._conn.execute(
            "SELECT asset_id FROM ids ORDER BY assetsync_rank(?, asset_id), pos LIMIT ? OFFSET ?",
            (key, limit, offset),
        )

    def cursor(self, key: bytes | None, scan: ShareScan) -> OrderCursor:
        """The epoch's order (``key``: shuffled by it; None: as stored), the share's items from
        ``scan.start`` on (a resumed epoch skips what came before by arithmetic: the order is a
        function of the key and the ids), then its padded items if it has any."""
        return OrderCursor(self, key, scan)

    def id_at(self, key: bytes | None, position: int) -> str | None:
        row = self._ordered(key, position, 1).fetchone()
        return None if row is None else str(row[0])


class OrderCursor:
    """Reads an order back in chunks: ``(index in the whole order, asset id)`` pairs (a padded
    item's index is past the order's end)."""

    def __init__(self, store: OrderStore, key: bytes | None, scan: ShareScan) -> None:
        self._store = store
        self._key = key
        self._scan = scan
        self._cursor = store._ordered(key, scan.start)
        self._index = scan.start
        self._done = False
        self._pads: list[tuple[int, int]] | None = None

    def take(self, count: int) -> list[tuple[int, str]]:
        """Up to ``count`` more of this share's items; empty at the end."""
        out: list[tuple[int, str]] = []
        step = self._scan.share.shard.count
        while len(out) < count and not self._done:
            rows = [] if self._scan.exhausted else self._cursor.fetchmany((count - len(out)) * step)
            if not rows:
                self._done = True
                break
            for (asset_id,) in rows:
                if self._scan.wants(self._index):
                    out.append((self._index, asset_id))
                self._index += 1
        if self._done and len(out) < count:
            if self._pads is None:
                self._pads = self._scan.pads()
            while self._pads and len(out) < count:
                index, repeated = self._pads.pop(0)
                asset_id = self._store.id_at(self._key, repeated)
                if asset_id is not None:
                    out.append((index, asset_id))
        return out

    def close(self) -> None:
        self._done = True
        self._pads = []
        self._cursor.close()
