"""The manifest: what DEST holds, where each file came from, and every run.

Synchronous sqlite3. The async scheduler calls it through one worker thread at a time
(``anyio.to_thread.run_sync(..., limiter=CapacityLimiter(1))``); a lock makes a stray
concurrent call wait instead of interleaving statements on the shared connection.

Crash safety: every write method is one transaction (``BEGIN IMMEDIATE`` … ``COMMIT``), and
SQLite's WAL makes a transaction all-or-nothing against a SIGKILL at any instant. The scheduler
renames a fetched file into place *before* :meth:`Manifest.apply` records it, so the worst a
crash can leave is a file without its row, which the next run simply fetches again; never a row
claiming a file that is not there.
"""

from __future__ import annotations

import json
import marshal
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import fields
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

from engine.digests import path_key
from engine.errors import ManifestError
from engine.manifest import export as _export
from engine.manifest.adoption import adopt_rows
from engine.manifest.db import InLists, connect, set_pragmas, translate
from engine.manifest.jsontext import dump_json
from engine.manifest.records import (
    STATES,
    ApplyResult,
    AssetRow,
    AssetState,
    AssetUpdate,
    ManifestStatus,
    RunRecord,
)
from engine.manifest.sanitize import safe_api_url, safe_options
from engine.manifest.schema import (
    DROP_STAGED_ANNOTATIONS_INDEX,
    DROP_STAGED_TAGS_INDEX,
    MIGRATIONS,
    STAGED_ANNOTATIONS_INDEX,
    STAGED_TAGS_INDEX,
    TEMP_TABLES,
    Migration,
    check_compatible,
    migrate,
)
from engine.manifest.writes import apply_batch
from engine.state_folder import StateFolder

T = TypeVar("T")

__all__ = ["Manifest"]

# Only these constant column lists and conditions are ever interpolated into SQL.
_ROW_COLUMNS = ", ".join(f.name for f in fields(AssetRow))
_ROWS = f"SELECT {_ROW_COLUMNS} FROM assets"  # noqa: S608
_ROWS_BY_ID = _ROWS + " WHERE asset_id IN ({marks})"
_PAGE_FIRST = _ROWS + " WHERE 1 {where} ORDER BY asset_id LIMIT ?"
_PAGE_NEXT = _ROWS + " WHERE asset_id > ? {where} ORDER BY asset_id LIMIT ?"
# Not seen: neither recorded as seen by this run in the file, nor (read-only dry runs) in the
# connection's scratch table, which is empty otherwise.
_UNSEEN = (
    "AND last_seen_run IS NOT ?"
    " AND asset_id NOT IN (SELECT asset_id FROM temp.seen WHERE run_id = ?)"
)
_COUNT_UNSEEN = (
    "SELECT count(*) FROM assets WHERE last_seen_run IS NOT ?"
    " AND asset_id NOT IN (SELECT asset_id FROM temp.seen WHERE run_id = ?)"
)
# ... and not in the version's unfiltered id listing staged by this run (--delete with a filter:
# what the filter left out is still in the version, and stays).
_GONE = (
    "AND last_seen_run IS NOT ?"
    " AND asset_id NOT IN (SELECT asset_id FROM temp.seen WHERE run_id = ?)"
    " AND asset_id NOT IN (SELECT asset_id FROM temp.in_version WHERE run_id = ?)"
)
_COUNT_GONE = (
    "SELECT count(*) FROM assets WHERE last_seen_run IS NOT ?"
    " AND asset_id NOT IN (SELECT asset_id FROM temp.seen WHERE run_id = ?)"
    " AND asset_id NOT IN (SELECT asset_id FROM temp.in_version WHERE run_id = ?)"
)
# Which of the given keys have a recorded path under them (see directory_keys).
_UNDER = (
    "SELECT key FROM (SELECT column1 AS key FROM (VALUES {rows}))"
    " WHERE key IS NOT NULL AND EXISTS (SELECT 1 FROM assets"
    " WHERE path_key >= key || '/' AND path_key < key || '0')"
)
_RUNS = (
    "SELECT run_id, started_at, finished_at, outcome, counts, dataset_version, api_url, pid, host,"
    " options FROM runs"
)
TagKind = Literal["asset", "data"]


def _run_record(row: Sequence[Any]) -> RunRecord:
    run_id, started, finished, outcome, counts, version, api_url, pid, host, options = row
    return RunRecord(
        run_id, started, finished, outcome, json.loads(counts), version, api_url, pid, host,
        json.loads(options),
    )  # fmt: skip


def _mark_seen(conn: sqlite3.Connection, lists: InLists, run_id: int, ids: Sequence[str]) -> None:
    sql = "UPDATE assets SET last_seen_run = ? WHERE asset_id IN ({marks})"
    for query, params in lists.chunks(sql, ids):
        conn.execute(query, (run_id, *params))


class Manifest:
    """DEST/.assetsync/manifest.sqlite. Open with :meth:`open`; a context manager."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        dest: Path,
        path: Path,
        schema_version: int,
        *,
        read_only: bool = False,
    ) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._lock = threading.RLock()
        self._lists = InLists(conn)
        self.dest = dest
        self.path = path
        self.schema_version = schema_version
        self.read_only = read_only
        self._staging_indexed = False
        self._annotations_indexed = False

    # -- opening and closing ---------------------------------------------------------------

    @classmethod
    def open(
        cls,
        dest: Path,
        *,
        create: bool = True,
        read_only: bool = False,
        busy_timeout: float = 30.0,
        migrations: Sequence[Migration] = MIGRATIONS,
        path: Path | None = None,
    ) -> Manifest:
        """Open DEST's manifest, creating and migrating it as needed.

        ``read_only`` (a dry run, ``status``): the file is opened read-only and never created
        or migrated; writing methods raise :class:`~engine.errors.ManifestError`, except the
        per-connection scratch ones (:meth:`stage_tags`, :meth:`mark_seen`), so a dry run can
        plan everything a real run would, deletions included.

        Raises :class:`~engine.errors.UsageError` when DEST is not a directory or (without
        ``create``) holds no manifest, and :class:`~engine.errors.ManifestError` for a file that
        is not a manifest, is damaged, or has a newer schema; such a file is never modified.
        ``migrations`` exists for tests and is the schema's full history otherwise. ``path``:
        another manifest of DEST's state folder (a shard's, :meth:`StateFolder.shard_files`).
        """
        dest = Path(dest)
        path = StateFolder(dest).manifest if path is None else Path(path)
        mode: Literal["rwc", "rw", "ro"] = "ro" if read_only else ("rwc" if create else "rw")
        conn = connect(dest, path, mode=mode, busy_timeout=busy_timeout)
        try:
            # One read transaction: the checks must see one snapshot, not a migration that
            # another process commits between two of their statements.
            conn.execute("BEGIN")
            try:
                version = check_compatible(conn, str(path), migrations)
            finally:
                conn.execute("COMMIT")
            set_pragmas(conn, path, busy_timeout, read_only=read_only)
            if read_only:
                if any(step.readers_need for step in migrations[version:]):
                    raise ManifestError(
                        f"{path} has manifest schema v{version} and needs an upgrade to "
                        f"v{len(migrations)}, which a read-only open cannot do: run a mirror first"
                    )
            else:
                version = migrate(conn, str(path), migrations)
            for statement in TEMP_TABLES:
                conn.execute(statement)
        except sqlite3.Error as exc:
            conn.close()
            raise translate(exc, path, "open it") from None
        except BaseException:
            conn.close()
            raise
        return cls(conn, dest, path, version, read_only=read_only)

    def close(self) -> None:
        """Close the connection (the last one out checkpoints and removes the WAL)."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            if not self.read_only:
                # Keeps the query planner's statistics fresh, cheaply; an optimisation only, so
                # closing must not fail because of it.
                with suppress(sqlite3.Error):
                    conn.execute("PRAGMA optimize")
            conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- transactions ----------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ManifestError(f"the manifest {self.path} is closed")
        return self._conn

    @contextmanager
    def _write(self, doing: str, *, scratch: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction; any failure rolls the whole of it back.

        ``scratch``: it writes TEMP tables only, which a read-only connection may do too.
        """
        with self._lock:
            conn = self._connection()
            if self.read_only and not scratch:
                raise ManifestError(f"the manifest {self.path} is open read-only: cannot {doing}")
            try:
                # IMMEDIATE takes the write lock up front (waiting up to busy_timeout), so the
                # transaction can never fail half-way on a lock upgrade. TEMP tables are
                # private to the connection and need no lock on the file.
                conn.execute("BEGIN" if scratch else "BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    # The original error says more; SQLite rolls back on close anyway.
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise translate(exc, self.path, doing) from exc
                raise

    @contextmanager
    def _read(self, doing: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connection()
            try:
                yield conn
            except sqlite3.Error as exc:
                raise translate(exc, self.path, doing) from exc

    # -- runs --------------------------------------------------------------------------------

    def begin_run(
        self, dataset_version: str, api_url: str, options: Mapping[str, Any] | None = None
    ) -> int:
        """Record the start of a run and return its id. Call with the DEST lock held.

        Runs left without an outcome were killed (the lock says no other run is live): they are
        closed as ``unfinished``, and their tag staging is dropped. This DEST now mirrors
        ``dataset_version``. Credentials are stripped from ``api_url`` and ``options``.
        """
        with self._write("start a run") as conn:
            conn.execute("UPDATE runs SET outcome = 'unfinished' WHERE outcome IS NULL")
            cursor = conn.execute(
                "INSERT INTO runs (started_at, dataset_version, api_url, pid, host, options)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    time.time(),
                    dataset_version,
                    safe_api_url(api_url),
                    os.getpid(),
                    socket.gethostname(),
                    dump_json(safe_options(options or {})),
                ),
            )
            run_id = cursor.lastrowid
            assert run_id is not None
            conn.execute("DELETE FROM staged_tags WHERE run_id <> ?", (run_id,))
            conn.execute("DELETE FROM staged_annotations WHERE run_id <> ?", (run_id,))
            conn.execute("DELETE FROM seen WHERE run_id <> ?", (run_id,))
            conn.execute("DELETE FROM in_version WHERE run_id <> ?", (run_id,))
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('dataset_version', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (dataset_version,),
            )
            return run_id

    def finish_run(self, run_id: int, outcome: str, counts: Mapping[str, int | float]) -> None:
        """Record how a run ended and its summary counts; drops its tag staging."""
        with self._write("finish a run") as conn:
            conn.execute(
                "UPDATE runs SET finished_at = ?, outcome = ?, counts = ? WHERE run_id = ?",
                (time.time(), outcome, dump_json(dict(counts)), run_id),
            )
            conn.execute("DELETE FROM staged_tags WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM staged_annotations WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM seen WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM in_version WHERE run_id = ?", (run_id,))

    def last_run(self, *, finished: bool = False) -> RunRecord | None:
        """The latest run (``finished``: the latest that recorded an outcome)."""
        sql = _RUNS + (" WHERE finished_at IS NOT NULL" if finished else "")
        with self._read("read the runs") as conn:
            row = conn.execute(sql + " ORDER BY run_id DESC LIMIT 1").fetchone()
        return None if row is None else _run_record(row)

    def dataset_version(self) -> str | None:
        """The dataset version this DEST mirrors (set by :meth:`begin_run`)."""
        with self._read("read the dataset version") as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'dataset_version'").fetchone()
        return None if row is None else str(row[0])

    # -- tag staging -------------------------------------------------------------------------

    def stage_tags(
        self, run_id: int, kind: TagKind, tag_name: str, asset_ids: Iterable[str]
    ) -> None:
        """Record that ``asset_ids`` carry ``tag_name`` (one page of a per-tag id listing).

        Stage everything before the first :meth:`staged_tags`: a lookup indexes the table in
        one pass, and staging again drops that index so appends stay cheap."""
        if kind not in ("asset", "data"):
            raise ValueError(f"tag kind must be 'asset' or 'data', not {kind!r}")
        with self._write("stage tags", scratch=True) as conn:
            if self._staging_indexed:  # staging again (a new run or epoch): append fast
                conn.execute(DROP_STAGED_TAGS_INDEX)
                self._staging_indexed = False
            # Duplicates (an id listed twice as the listing drifts) are dropped when read.
            conn.executemany(
                "INSERT INTO staged_tags (run_id, asset_id, kind, name) VALUES (?,?,?,?)",
                ((run_id, asset_id, kind, tag_name) for asset_id in asset_ids),
            )

    def staged_tags(
        self, run_id: int, asset_ids: Sequence[str]
    ) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        """``asset_id -> (asset tags, data tags)``, sorted, for every id asked (empty if none)."""
        ids = list(dict.fromkeys(asset_ids))
        found: dict[str, tuple[list[str], list[str]]] = {asset_id: ([], []) for asset_id in ids}
        if not self._staging_indexed:
            with self._write("index staged tags", scratch=True) as conn:
                conn.execute(STAGED_TAGS_INDEX)
            self._staging_indexed = True
        with self._read("read staged tags") as conn:
            sql = (
                "SELECT asset_id, kind, name FROM staged_tags"
                " WHERE run_id = ? AND asset_id IN ({marks})"
            )
            for query, params in self._lists.chunks(sql, ids):
                for asset_id, kind, name in conn.execute(query, (run_id, *params)):
                    found[asset_id][0 if kind == "asset" else 1].append(name)
        return {k: (tuple(sorted(set(a))), tuple(sorted(set(d)))) for k, (a, d) in found.items()}

    # -- annotation staging ------------------------------------------------------------------

    def stage_annotations(
        self,
        run_id: int,
        annotations: Iterable[tuple[int, dict[str, Any]]],
        unreadable: Mapping[str, str],
    ) -> None:
        """Record ``(seq, annotation)`` pairs (as the API sent them, each with a string
        ``asset_id``) and the assets whose annotations could not be read, with why."""
        with self._write("stage annotations", scratch=True) as conn:
            if self._annotations_indexed:
                conn.execute(DROP_STAGED_ANNOTATIONS_INDEX)
                self._annotations_indexed = False
            conn.executemany(
                "INSERT INTO staged_annotations (run_id, asset_id, seq, body) VALUES (?,?,?,?)",
                ((run_id, a["asset_id"], seq, marshal.dumps(a)) for seq, a in annotations),
            )
            conn.executemany(
                "INSERT INTO staged_annotations (run_id, asset_id, seq, reason) VALUES (?,?,-1,?)",
                ((run_id, asset_id, why) for asset_id, why in unreadable.items()),
            )

    def staged_annotations(
        self, run_id: int, asset_ids: Sequence[str]
    ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
        """Every staged annotation of these assets in staging order (an empty list for an asset
        with none), and the assets whose annotations could not be read, with why."""
        ids = list(dict.fromkeys(asset_ids))
        found: dict[str, list[tuple[int, bytes]]] = {asset_id: [] for asset_id in ids}
        unreadable: dict[str, str] = {}
        if not self._annotations_indexed:
            with self._write("index staged annotations", scratch=True) as conn:
                conn.execute(STAGED_ANNOTATIONS_INDEX)
            self._annotations_indexed = True
        with self._read("read staged annotations") as conn:
            sql = (
                "SELECT asset_id, seq, body, reason FROM staged_annotations"
                " WHERE run_id = ? AND asset_id IN ({marks})"
            )
            for query, params in self._lists.chunks(sql, ids):
                for asset_id, seq, body, reason in conn.execute(query, (run_id, *params)):
                    if body is None:
                        unreadable.setdefault(asset_id, reason or "unreadable")
                    else:
                        found[asset_id].append((seq, body))
        out: dict[str, list[dict[str, Any]]] = {}
        for asset_id, rows in found.items():
            rows.sort()
            # marshal: written by this connection from the API's parsed JSON (see the schema).
            out[asset_id] = [marshal.loads(body) for _, body in rows]  # noqa: S302
        return out, unreadable

    def stage_in_version(self, run_id: int, asset_ids: Iterable[str]) -> None:
        """Record that ``asset_ids`` are in the version (one page of its unfiltered id
        listing), so :meth:`unseen` can tell an asset a filter left out from one that is gone.
        A scratch table: it works on a read-only (dry run) connection too."""
        with self._write("stage the version's ids", scratch=True) as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO temp.in_version (run_id, asset_id) VALUES (?, ?)",
                ((run_id, asset_id) for asset_id in asset_ids),
            )

    def clear_staging(self, run_id: int) -> None:
        with self._write("clear staged tags", scratch=True) as conn:
            conn.execute("DELETE FROM staged_tags WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM staged_annotations WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM seen WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM in_version WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM in_version WHERE run_id = ?", (run_id,))

    # -- reading assets ----------------------------------------------------------------------

    def rows(self, asset_ids: Sequence[str]) -> dict[str, AssetRow]:
        """The stored rows of these assets (absent ids are left out): one query per 1000 ids."""
        ids = list(dict.fromkeys(asset_ids))
        found: dict[str, AssetRow] = {}
        with self._read("read assets") as conn:
            for query, params in self._lists.chunks(_ROWS_BY_ID, ids):
                for row in conn.execute(query, params):
                    found[row[0]] = AssetRow(*row)
        return found

    def row(self, asset_id: str) -> AssetRow | None:
        return self.rows([asset_id]).get(asset_id)

    def path_owners(self, paths: Sequence[str]) -> dict[str, str]:
        """``path -> asset_id`` for the given paths (or path keys) that an asset already holds.

        Matching is by :func:`~engine.digests.path_key`, so ``A.jpg`` finds the owner
        of ``a.jpg``; the answer is keyed by the strings as given.
        """
        by_key: dict[str, list[str]] = {}
        for path in paths:
            by_key.setdefault(path_key(path), []).append(path)
        owners: dict[str, str] = {}
        with self._read("read paths") as conn:
            sql = "SELECT path_key, asset_id FROM assets WHERE path_key IN ({marks})"
            for query, params in self._lists.chunks(sql, list(by_key)):
                for key, asset_id in conn.execute(query, params):
                    for path in by_key[key]:
                        owners[path] = asset_id
        return owners

    def directory_keys(self, keys: Sequence[str]) -> set[str]:
        """The given path keys that some recorded path lies under (``key + "/"`` prefixes it).

        The layout needs them: a file cannot be placed where a recorded file needs a folder.
        One index range probe per key (``key/`` <= path_key < ``key0``: ``0`` follows ``/``).
        """
        wanted: dict[str, list[str]] = {}
        for key in keys:
            wanted.setdefault(path_key(key), []).append(key)
        found: set[str] = set()
        with self._read("read paths") as conn:
            for query, params in self._lists.chunks(_UNDER, list(wanted)):
                for (key,) in conn.execute(query, params):
                    found.update(wanted[key])
        return found

    def count_assets(self) -> int:
        with self._read("count assets") as conn:
            return int(conn.execute("SELECT count(*) FROM assets").fetchone()[0])

    def _pages(self, where: str, params: tuple[Any, ...], page_size: int) -> Iterator[AssetRow]:
        # Keyset pagination rather than one long-lived cursor: between pages no statement is
        # open, so the caller may write (verify marks states, --delete removes rows) while
        # iterating, and a long iteration never pins an old WAL snapshot.
        first, following = _PAGE_FIRST.format(where=where), _PAGE_NEXT.format(where=where)
        after: str | None = None
        while True:
            if after is None:
                sql, args = first, (*params, page_size)
            else:
                sql, args = following, (after, *params, page_size)
            with self._read("read assets") as conn:
                page = conn.execute(sql, args).fetchall()
            for row in page:
                yield AssetRow(*row)
            if len(page) < page_size:
                return
            after = page[-1][0]

    def iter_rows(self, *, page_size: int = 500) -> Iterator[AssetRow]:
        """Every asset, ordered by id, ``page_size`` rows in memory at a time."""
        return self._pages("", (), page_size)

    def unseen(
        self, run_id: int, *, page_size: int = 500, keep_in_version: bool = False
    ) -> Iterator[AssetRow]:
        """Assets this run's listing did not contain (the ``--delete`` candidates).

        ``keep_in_version``: leave out those :meth:`stage_in_version` recorded as still in the
        version (a filtered run's listing does not contain what the filter left out)."""
        if keep_in_version:
            return self._pages(_GONE, (run_id, run_id, run_id), page_size)
        return self._pages(_UNSEEN, (run_id, run_id), page_size)

    def count_unseen(self, run_id: int, *, keep_in_version: bool = False) -> int:
        """How many assets :meth:`unseen` would give."""
        with self._read("count unseen assets") as conn:
            if keep_in_version:
                row = conn.execute(_COUNT_GONE, (run_id, run_id, run_id)).fetchone()
            else:
                row = conn.execute(_COUNT_UNSEEN, (run_id, run_id)).fetchone()
        return int(row[0])

    def tags(self, asset_id: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The stored ``(asset tags, data tags)`` of one asset, sorted."""
        with self._read("read tags") as conn:
            rows = conn.execute(
                "SELECT kind, name FROM tags WHERE asset_id = ? ORDER BY kind, name", (asset_id,)
            ).fetchall()
        return (
            tuple(name for kind, name in rows if kind == "asset"),
            tuple(name for kind, name in rows if kind == "data"),
        )

    def annotations(self, asset_id: str) -> list[dict[str, Any]] | None:
        """The stored annotations of one asset as the API gave them (``None``: never fetched)."""
        with self._read("read annotations") as conn:
            row = conn.execute(
                "SELECT annotations_digest FROM assets WHERE asset_id = ?", (asset_id,)
            ).fetchone()
            if row is None or row[0] is None:
                return None
            bodies = conn.execute(
                "SELECT body FROM annotations WHERE asset_id = ? ORDER BY ord", (asset_id,)
            ).fetchall()
        return [json.loads(body) for (body,) in bodies]

    def asset_ids_with_label(self, label: str, kind: str | None = None) -> list[str]:
        """Ids of the assets having a shape with this label (and kind), sorted."""
        sql = "SELECT DISTINCT asset_id FROM shapes WHERE label = ?"
        args: tuple[str, ...] = (label,)
        if kind is not None:
            sql, args = sql + " AND kind = ?", (label, kind)
        with self._read("query shapes") as conn:
            return sorted(asset_id for (asset_id,) in conn.execute(sql, args))

    # -- writing assets ----------------------------------------------------------------------

    def apply(
        self, updates: Sequence[AssetUpdate], run_id: int, *, seen: Sequence[str] = ()
    ) -> ApplyResult:
        """Write a batch in ONE transaction: rows, tags, annotations, shapes, seen marks.

        ``seen`` names more assets of this run's listing (skipped ones) to mark in the same
        transaction, saving a separate :meth:`mark_seen` commit. Files must already be in
        place: a crash before the commit leaves them unrecorded (and fetched again next run),
        never recorded and absent.
        """
        with self._write("record a batch") as conn:
            result = apply_batch(conn, self._lists, updates, run_id, time.time())
            if seen:
                _mark_seen(conn, self._lists, run_id, list(dict.fromkeys(seen)))
            return result

    def apply_claims(self, claims: Sequence[AssetUpdate], run_id: int) -> set[str]:
        """Record path claims (rows of files about to be downloaded) in one transaction, except
        for the assets whose rows say this very content is in place: another process recorded
        it since the claims were planned, and a claim would overwrite its row. Under the write
        lock, no commit comes between that check and the claims. Returns the assets left out."""
        with self._write("claim paths") as conn:
            placed: dict[str, str] = {}
            sql = (
                "SELECT asset_id, data_id FROM assets WHERE state = 'ok' AND asset_id IN ({marks})"
            )
            for query, params in self._lists.chunks(sql, [c.asset_id for c in claims]):
                placed.update(conn.execute(query, params).fetchall())
            left_out = {c.asset_id for c in claims if placed.get(c.asset_id) == c.data_id}
            kept = [c for c in claims if c.asset_id not in left_out]
            apply_batch(conn, self._lists, kept, run_id, time.time())
            return left_out

    def budget_books(self, doing: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` (one of :mod:`engine.manifest.budget`'s steps) in one write transaction:
        the books of a disk budget shared by prefetchers change only under the write lock."""
        with self._write(doing) as conn:
            return fn(conn)

    def mark_seen(self, run_id: int, asset_ids: Sequence[str]) -> None:
        """These assets are in this run's listing (so :meth:`unseen` leaves them out).

        Read-only, the marks go to the connection's scratch table instead of the file.
        """
        ids = list(dict.fromkeys(asset_ids))
        if self.read_only:
            with self._write("mark assets seen", scratch=True) as conn:
                conn.executemany(
                    "INSERT OR IGNORE INTO temp.seen (run_id, asset_id) VALUES (?, ?)",
                    ((run_id, asset_id) for asset_id in ids),
                )
            return
        with self._write("mark assets seen") as conn:
            _mark_seen(conn, self._lists, run_id, ids)

    def remove(self, asset_ids: Sequence[str]) -> int:
        """Forget assets (their files were deleted); tags and annotations go with them."""
        ids = list(dict.fromkeys(asset_ids))
        removed = 0
        with self._write("remove assets") as conn:
            sql = "DELETE FROM assets WHERE asset_id IN ({marks})"
            for query, params in self._lists.chunks(sql, ids):
                removed += conn.execute(query, params).rowcount
        return removed

    def mark_state(self, asset_id: str, state: AssetState, error: str | None = None) -> bool:
        """Set one asset's state (verify, failures, eviction); ``False`` if it is unknown."""
        return self.mark_states([(asset_id, state, error)]) == 1

    def mark_states(self, changes: Iterable[tuple[str, AssetState, str | None]]) -> int:
        """Set many states in one transaction; returns how many assets were known.

        ``ok`` for an asset with no file on record is stored as ``missing``.
        """
        rows = []
        for asset_id, state, error in changes:
            if state not in STATES:
                raise ValueError(f"unknown asset state {state!r}")
            rows.append((state, error, asset_id))
        with self._write("record asset states") as conn:
            before = conn.total_changes
            conn.executemany(
                "UPDATE assets SET error = ?2,"
                " state = CASE WHEN ?1 = 'ok' AND path IS NULL THEN 'missing' ELSE ?1 END"
                " WHERE asset_id = ?3",
                rows,
            )
            return conn.total_changes - before

    # -- reports -------------------------------------------------------------------------------

    def adopt(self, source: Path, holds: Callable[[str], bool]) -> tuple[int, int]:
        """Move the rows of the assets ``holds`` accepts from the manifest file ``source`` into
        this one (:mod:`engine.manifest.adoption`): (adopted, left in ``source``)."""
        with self._lock:
            conn = self._connection()
            if self.read_only:
                raise ManifestError(f"the manifest {self.path} is open read-only: cannot adopt")
            try:
                return adopt_rows(conn, source, holds)
            except sqlite3.Error as exc:
                raise translate(exc, source, "move its rows to another shard") from exc

    def export(self, fh: _export.TextSink, fmt: Literal["jsonl", "json"] = "jsonl") -> int:
        """Write one JSON object per asset to ``fh``, streamed; returns how many."""
        with self._read("export the manifest") as conn:
            return _export.export(conn, fh, fmt)

    @staticmethod
    def export_together(
        manifests: Sequence[Manifest], fh: _export.TextSink, fmt: Literal["jsonl", "json"] = "jsonl"
    ) -> int:
        """:meth:`export` of several manifests (a DEST's shards) as one, in asset id order."""
        with ExitStack() as stack:
            conns = [stack.enter_context(m._read("export the manifest")) for m in manifests]
            return _export.export_many(conns, fh, fmt)

    def status(self) -> ManifestStatus:
        with self._read("read the status") as conn:
            conn.execute("BEGIN")  # one snapshot for all the numbers
            try:
                states: dict[str, int] = dict.fromkeys(STATES, 0)
                total_bytes = 0
                for state, count, size in conn.execute(
                    "SELECT state, count(*), coalesce(sum(size), 0) FROM assets GROUP BY state"
                ):
                    states[state] = int(count)
                    if state == "ok":
                        total_bytes = int(size)
                runs = int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])
                version = conn.execute(
                    "SELECT value FROM meta WHERE key = 'dataset_version'"
                ).fetchone()
                last = conn.execute(_RUNS + " ORDER BY run_id DESC LIMIT 1").fetchone()
            finally:
                conn.execute("COMMIT")
        return ManifestStatus(
            path=str(self.path),
            schema_version=self.schema_version,
            dataset_version=None if version is None else str(version[0]),
            assets=sum(states.values()),
            states=states,
            total_bytes=total_bytes,
            last_run=None if last is None else _run_record(last),
            runs=runs,
        )

    def check(self) -> list[str]:
        """SQLite's own integrity and foreign-key checks: ``[]`` when the database is sound."""
        with self._read("check the manifest") as conn:
            problems = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
            if problems == ["ok"]:
                problems = []
            problems += [
                f"foreign key violation: {r}" for r in conn.execute("PRAGMA foreign_key_check")
            ]
        return problems
