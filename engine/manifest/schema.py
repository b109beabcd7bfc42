"""The manifest's schema and its migrations.

The schema version lives in ``PRAGMA user_version`` and the file is marked as ours with
``PRAGMA application_id``. Migrations are an ordered list: migration *n* takes a database from
version *n - 1* to *n*, in one transaction together with the version bump, so a crash in the
middle of a migration leaves the previous version intact. A database newer than the code is
refused (an old binary must not scribble on a newer layout), and so is an SQLite file that is not
a manifest (it is somebody's data: it is left exactly as it was).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from engine.errors import ManifestError

__all__ = [
    "APPLICATION_ID",
    "MIGRATIONS",
    "TEMP_TABLES",
    "Migration",
    "check_compatible",
    "migrate",
]

APPLICATION_ID = 0x41535943  # "ASYC": marks the file as an assetsync manifest


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema: ``apply`` runs inside the migration's transaction.

    It must not commit, and must not use ``executescript`` (which commits first). A step that
    rebuilds a table referenced by foreign keys has to keep the references valid itself, since
    ``PRAGMA foreign_keys`` cannot change inside a transaction.
    """

    version: int
    description: str
    apply: Callable[[sqlite3.Connection], None]
    # False for a step that only adds what readers never read (the budget's tables): a
    # read-only open (``status``, a dry run) of a manifest written before it still works.
    readers_need: bool = True


def statements(*sql: str) -> Callable[[sqlite3.Connection], None]:
    """A migration body made of plain SQL statements, run in order."""

    def run(conn: sqlite3.Connection) -> None:
        for statement in sql:
            conn.execute(statement)

    return run


_V1 = statements(
    """CREATE TABLE meta (
        key   TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    ) WITHOUT ROWID""",
    # AUTOINCREMENT: run ids only grow, so "seen in an older run" is a plain comparison.
    """CREATE TABLE runs (
        run_id          INTEGER PRIMARY KEY AUTOINCREMENT,
        started_at      REAL NOT NULL,
        finished_at     REAL,
        outcome         TEXT,
        counts          TEXT NOT NULL DEFAULT '{}',
        dataset_version TEXT NOT NULL,
        api_url         TEXT NOT NULL,
        pid             INTEGER NOT NULL,
        host            TEXT NOT NULL DEFAULT '',
        options         TEXT NOT NULL DEFAULT '{}'
    )""",
    # path_key is the case-folded path: UNIQUE makes two assets sharing a file impossible even
    # on case-insensitive file systems. NULLs (no file yet) do not collide.
    """CREATE TABLE assets (
        asset_id           TEXT PRIMARY KEY NOT NULL,
        data_id            TEXT NOT NULL,
        object_name        TEXT NOT NULL,
        filename           TEXT NOT NULL,
        path               TEXT,
        path_key           TEXT UNIQUE,
        size               INTEGER,
        sha256             TEXT,
        etag               TEXT,
        content_type       TEXT,
        width              INTEGER,
        height             INTEGER,
        metadata           TEXT NOT NULL DEFAULT '{}',
        fetched_at         REAL,
        state              TEXT NOT NULL DEFAULT 'ok'
                           CHECK (state IN ('ok', 'missing', 'corrupt', 'failed', 'evicted')),
        error              TEXT,
        tags_digest        TEXT,
        annotations_digest TEXT,
        last_seen_run      INTEGER REFERENCES runs (run_id) ON DELETE SET NULL,
        CHECK ((path IS NULL) = (path_key IS NULL)),
        -- "ok" promises a file: a row the next run trusts never says ok without one.
        CHECK (state <> 'ok' OR path IS NOT NULL)
    )""",
    # Child tables are clustered by asset (WITHOUT ROWID, asset first in the key): replacing an
    # asset's tags or annotations touches one contiguous key range, and the export's ordered
    # scans need no sort.
    """CREATE TABLE tags (
        asset_id TEXT NOT NULL REFERENCES assets (asset_id) ON DELETE CASCADE,
        kind     TEXT NOT NULL CHECK (kind IN ('asset', 'data')),
        name     TEXT NOT NULL,
        PRIMARY KEY (asset_id, kind, name)
    ) WITHOUT ROWID""",
    "CREATE INDEX tags_by_name ON tags (kind, name)",
    """CREATE TABLE annotations (
        asset_id      TEXT NOT NULL REFERENCES assets (asset_id) ON DELETE CASCADE,
        ord           INTEGER NOT NULL,
        annotation_id TEXT,
        status        TEXT,
        body          TEXT NOT NULL,
        PRIMARY KEY (asset_id, ord)
    ) WITHOUT ROWID""",
    # One row per shape of an annotation (an index over the stored body, for queries by label):
    # the idx-th entry of the annotation's list of that kind ("rectangles", "polygons", ...).
    """CREATE TABLE shapes (
        asset_id TEXT NOT NULL,
        ann_ord  INTEGER NOT NULL,
        kind     TEXT NOT NULL
                 CHECK (kind IN ('rectangle', 'polygon', 'classification', 'line', 'point')),
        idx      INTEGER NOT NULL,
        label    TEXT,
        text     TEXT,
        geometry TEXT,
        PRIMARY KEY (asset_id, ann_ord, kind, idx),
        FOREIGN KEY (asset_id, ann_ord) REFERENCES annotations (asset_id, ord) ON DELETE CASCADE
    ) WITHOUT ROWID""",
    "CREATE INDEX shapes_by_label ON shapes (label, kind)",
)

# Per-connection scratch tables (TEMP: not part of the file, so not versioned). They hold what
# one run learns during its listing without keeping it in RAM: tag membership streamed in per
# tag, (for a read-only dry run, which cannot update assets.last_seen_run) the ids listed, and
# the version's unfiltered ids when a filtered run deletes.
# TEMP tables cost no WAL traffic, vanish with a crash, and work on a read-only connection.
TEMP_TABLES = (
    # A heap, not a B-tree keyed by asset id: ids arrive in no order, and keyed inserts cost
    # 6.5 ms per 1000 rows against 1 ms for appends (287 pages for 100,000 assets, on the path
    # every page waits for). Lookups come once staging is complete, so Manifest.staged_tags
    # builds STAGED_TAGS_INDEX then, in one sorted pass (0.23 s for 300,000 rows).
    """CREATE TEMP TABLE IF NOT EXISTS staged_tags (
        run_id   INTEGER NOT NULL,
        asset_id TEXT NOT NULL,
        kind     TEXT NOT NULL CHECK (kind IN ('asset', 'data')),
        name     TEXT NOT NULL
    )""",
    # A version's annotations, fetched once for the whole run (not page by page) and read back
    # per listing page: the bulk answers arrive in no listing order, and holding them in RAM
    # would grow with the version. A heap indexed once staging ends, as staged_tags. ``body``
    # is the annotation as the API sent it (marshal: an exact round trip, NaN and big integers
    # included, and only this connection ever reads it); NULL with ``reason``: unreadable.
    """CREATE TEMP TABLE IF NOT EXISTS staged_annotations (
        run_id   INTEGER NOT NULL,
        asset_id TEXT NOT NULL,
        seq      INTEGER NOT NULL,
        body     BLOB,
        reason   TEXT
    )""",
    """CREATE TEMP TABLE IF NOT EXISTS seen (
        run_id   INTEGER NOT NULL,
        asset_id TEXT NOT NULL,
        PRIMARY KEY (run_id, asset_id)
    ) WITHOUT ROWID""",
    # The version's unfiltered id listing, for --delete after a filtered listing (an asset the
    # filter left out is still in the version and must stay). Keyed: only such runs fill it,
    # and the deletion query probes it once per candidate.
    """CREATE TEMP TABLE IF NOT EXISTS in_version (
        run_id   INTEGER NOT NULL,
        asset_id TEXT NOT NULL,
        PRIMARY KEY (run_id, asset_id)
    ) WITHOUT ROWID""",
)

STAGED_TAGS_INDEX = (
    "CREATE INDEX IF NOT EXISTS temp.staged_tags_by_asset"
    " ON staged_tags (run_id, asset_id, kind, name)"  # covering: lookups never read the heap
)
DROP_STAGED_TAGS_INDEX = "DROP INDEX IF EXISTS temp.staged_tags_by_asset"
STAGED_ANNOTATIONS_INDEX = (
    "CREATE INDEX IF NOT EXISTS temp.staged_annotations_by_asset"
    " ON staged_annotations (run_id, asset_id, seq)"
)
DROP_STAGED_ANNOTATIONS_INDEX = "DROP INDEX IF EXISTS temp.staged_annotations_by_asset"

# The disk budget shared by the prefetchers of one DEST (engine.manifest.budget): who holds it,
# the files it counts (in eviction order) and the files each holder must keep.
_V2 = statements(
    # One row per live prefetcher (with or without a budget: they must agree on it). ``reserved``:
    # bytes of its downloads in flight, counted against the budget until their files are recorded.
    # ``closed``: its session ended, its process lives on (its last items stay pinned).
    """CREATE TABLE budget_holders (
        holder   INTEGER PRIMARY KEY AUTOINCREMENT,
        budget   INTEGER,
        reserved INTEGER NOT NULL DEFAULT 0,
        pid      INTEGER NOT NULL,
        joined   REAL NOT NULL,
        closed   REAL
    )""",
    # The files on disk the budget counts; ``seq``: when last used (evictions take the highest
    # first). One row per asset, written only once the asset's manifest row is committed.
    """CREATE TABLE budget_files (
        asset_id TEXT PRIMARY KEY NOT NULL,
        path     TEXT NOT NULL,
        size     INTEGER NOT NULL,
        seq      INTEGER NOT NULL
    )""",
    "CREATE INDEX budget_files_by_seq ON budget_files (seq)",
    """CREATE TABLE budget_pins (
        asset_id TEXT NOT NULL,
        holder   INTEGER NOT NULL REFERENCES budget_holders (holder) ON DELETE CASCADE,
        PRIMARY KEY (asset_id, holder)
    ) WITHOUT ROWID""",
    "CREATE INDEX budget_pins_by_holder ON budget_pins (holder)",
    # Running totals: 'files' (sum of budget_files.size) and 'seq' (the last one given).
    """CREATE TABLE budget_totals (
        key   TEXT PRIMARY KEY NOT NULL,
        value INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "INSERT INTO budget_totals (key, value) VALUES ('files', 0), ('seq', 0)",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _V1),
    Migration(2, "a disk budget shared by prefetchers", _V2, readers_need=False),
)


def _scalar(conn: sqlite3.Connection, sql: str) -> int:
    row = conn.execute(sql).fetchone()
    return int(row[0]) if row is not None else 0


def _has_foreign_tables(conn: sqlite3.Connection) -> bool:
    return _scalar(conn, "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'") > 0


def check_compatible(conn: sqlite3.Connection, where: str, migrations: Sequence[Migration]) -> int:
    """Refuse, without writing anything, a database this code must not touch; return its version.

    Runs before anything else is done to the file (even before switching it to WAL, which writes
    the header): a file that is not ours stays byte for byte as it was.
    """
    app_id = _scalar(conn, "PRAGMA application_id")
    version = _scalar(conn, "PRAGMA user_version")
    if app_id not in (0, APPLICATION_ID) or (version == 0 and _has_foreign_tables(conn)):
        raise ManifestError(f"{where} is an SQLite database but not an assetsync manifest")
    if app_id == 0 and version != 0:
        raise ManifestError(f"{where} is an SQLite database but not an assetsync manifest")
    if version > len(migrations):
        raise ManifestError(
            f"{where} has manifest schema v{version}, newer than this assetsync understands "
            f"(v{len(migrations)}): upgrade assetsync"
        )
    return version


def migrate(conn: sqlite3.Connection, where: str, migrations: Sequence[Migration]) -> int:
    """Bring the database up to the last migration; return the schema version.

    Each step re-reads the version under the write lock (``BEGIN IMMEDIATE``), so two processes
    opening a fresh DEST at once cannot both apply the same step.
    """
    for index, migration in enumerate(migrations, start=1):
        if migration.version != index:
            raise ValueError(f"migration #{index} says it is version {migration.version}")
    target = len(migrations)
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = check_compatible(conn, where, migrations)
            if version == target:
                conn.execute("COMMIT")
                return version
            migrations[version].apply(conn)
            # PRAGMA arguments cannot be bound; both values are integers from this module.
            conn.execute(f"PRAGMA user_version = {version + 1:d}")
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID:d}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # some errors (SQLITE_FULL, ...) already rolled back
                conn.execute("ROLLBACK")
            raise
