"""Opening the manifest: pragmas, refusing files that are not ours, schema migrations."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path

import pytest

from engine.errors import DiskFullError, ManifestError, UsageError
from engine.manifest import MIGRATIONS, Manifest, Migration
from engine.manifest.schema import APPLICATION_ID, statements
from tests.manifest.helpers import update


def db_file(dest: Path) -> Path:
    return dest / ".assetsync" / "manifest.sqlite"


def test_open_creates_a_wal_database_with_the_schema(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with Manifest.open(dest) as m:
        assert m.path == db_file(dest)
        assert m.schema_version == len(MIGRATIONS)
        conn = m._connection()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"assets", "tags", "annotations", "shapes", "runs", "meta"} <= tables
        assert m.check() == []
    # Reopening an up-to-date manifest changes nothing.
    with Manifest.open(dest, create=False) as m:
        assert m.count_assets() == 0


def test_dest_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    dest = tmp_path / "file"
    dest.write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        Manifest.open(dest)


def test_without_create_a_missing_manifest_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="nothing has been mirrored"):
        Manifest.open(tmp_path, create=False)
    assert not (tmp_path / ".assetsync").exists()


@pytest.mark.parametrize(
    "content",
    [b"this is not a database at all, just some bytes" * 100, b"SQLite", b"\x00" * 4096],
)
def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(
    tmp_path: Path, content: bytes
) -> None:
    path = db_file(tmp_path)
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(ManifestError, match="not an SQLite database"):
        Manifest.open(tmp_path)
    assert path.read_bytes() == content
    assert sorted(p.name for p in path.parent.iterdir()) == ["manifest.sqlite"]


def test_another_applications_sqlite_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = db_file(tmp_path)
    path.parent.mkdir()
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE precious (x)")
        conn.execute("INSERT INTO precious VALUES (1)")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(ManifestError, match="not an assetsync manifest"):
        Manifest.open(tmp_path)
    assert path.read_bytes() == before  # not even switched to WAL


def test_a_damaged_manifest_raises_manifest_error_and_is_kept(tmp_path: Path) -> None:
    with Manifest.open(tmp_path) as m:
        run = m.begin_run("dv", "http://x", {})
        for start in range(0, 3000, 500):
            m.apply([update(f"a{i:05d}") for i in range(start, start + 500)], run)
    path = db_file(tmp_path)
    data = bytearray(path.read_bytes())
    page = 4096
    for offset in range(2 * page, len(data) - page, 3 * page):  # scribble over many pages
        data[offset + 100 : offset + 400] = b"\xa5" * 300
    path.write_bytes(bytes(data))
    damaged = path.read_bytes()
    with Manifest.open(tmp_path) as m:  # page 1 (the schema) is intact: the damage shows later
        with pytest.raises(ManifestError, match=r"is damaged .*move it aside"):
            list(m.iter_rows())
        with pytest.raises(ManifestError, match="is damaged"):
            m.check()
    assert path.read_bytes() == damaged


def test_a_newer_schema_is_refused_with_one_clear_line(tmp_path: Path) -> None:
    Manifest.open(tmp_path).close()
    path = db_file(tmp_path)
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(ManifestError) as info:
        Manifest.open(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert f"v{len(MIGRATIONS) + 1}" in message
    assert "upgrade assetsync" in message


def _v2(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE assets ADD COLUMN quality REAL")
    conn.execute("UPDATE assets SET quality = length(asset_id)")


def test_a_database_is_migrated_by_a_later_migration(tmp_path: Path) -> None:
    now = len(MIGRATIONS)
    with Manifest.open(tmp_path) as m:
        run = m.begin_run("dv", "http://x", {})
        m.apply([update("asset-1"), update("asset-22")], run)
        assert m.schema_version == now
    later = (*MIGRATIONS, Migration(now + 1, "quality score", _v2))
    with Manifest.open(tmp_path, migrations=later) as m:
        assert m.schema_version == now + 1
        conn = m._connection()
        assert conn.execute("PRAGMA user_version").fetchone()[0] == now + 1
        scores = dict(conn.execute("SELECT asset_id, quality FROM assets"))
        assert scores == {"asset-1": 7.0, "asset-22": 8.0}
        assert m.rows(["asset-1"])["asset-1"].data_id == "data-asset-1-0"
    # The code that does not know the later migration now refuses the database.
    with pytest.raises(ManifestError, match="newer"):
        Manifest.open(tmp_path)


def test_a_failing_migration_leaves_the_previous_version_intact(tmp_path: Path) -> None:
    with Manifest.open(tmp_path) as m:
        m.apply([update("a")], m.begin_run("dv", "http://x", {}))
    broken = statements(
        "CREATE TABLE half_done (x)",
        "ALTER TABLE assets ADD COLUMN quality REAL",
        "THIS IS NOT SQL",
    )
    with pytest.raises(ManifestError):
        Manifest.open(
            tmp_path, migrations=(*MIGRATIONS, Migration(len(MIGRATIONS) + 1, "broken", broken))
        )
    with Manifest.open(tmp_path) as m:
        conn = m._connection()
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert (
            conn.execute("SELECT count(*) FROM sqlite_master WHERE name='half_done'").fetchone()[0]
            == 0
        )
        columns = [r[1] for r in conn.execute("PRAGMA table_info(assets)")]
        assert "quality" not in columns
        assert m.count_assets() == 1


def test_migrations_must_be_numbered_in_order(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="version"):
        Manifest.open(
            tmp_path, migrations=(*MIGRATIONS, Migration(len(MIGRATIONS) + 2, "skips one", _v2))
        )


def test_a_closed_manifest_says_so(tmp_path: Path) -> None:
    m = Manifest.open(tmp_path)
    m.close()
    m.close()  # idempotent
    with pytest.raises(ManifestError, match="closed"):
        m.count_assets()


def test_read_only_refuses_a_manifest_that_needs_a_migration(tmp_path: Path) -> None:
    Manifest.open(tmp_path).close()
    later = (*MIGRATIONS, Migration(len(MIGRATIONS) + 1, "quality score", _v2))
    with pytest.raises(ManifestError, match="read-only open cannot"):
        Manifest.open(tmp_path, read_only=True, migrations=later)
    with Manifest.open(tmp_path, create=False) as m:
        assert m.schema_version == len(MIGRATIONS)


def test_read_only_reads_a_manifest_from_before_the_budget_tables(tmp_path: Path) -> None:
    """`status` after an upgrade: the budget's tables are for prefetchers, not for readers."""
    with Manifest.open(tmp_path, migrations=MIGRATIONS[:1]) as m:
        m.apply([update("asset-1")], m.begin_run("dv", "http://x", {}))
    with Manifest.open(tmp_path, read_only=True) as m:
        assert m.schema_version == 1
        assert m.status().assets == 1


def test_a_full_disk_is_a_disk_full_error_and_the_batch_is_rolled_back(tmp_path: Path) -> None:
    with Manifest.open(tmp_path) as m:
        run = m.begin_run("dv", "http://x", {})
        m.apply([update("first")], run)
        conn = m._connection()
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages + 2}")  # SQLITE_FULL after two more pages
        with pytest.raises(DiskFullError, match="no space left"):
            m.apply([update(f"a{i:04d}", gen=2) for i in range(500)], run)
        assert m.count_assets() == 1
        assert m.check() == []


def test_a_manifest_locked_by_another_writer_is_a_clear_error(tmp_path: Path) -> None:
    with Manifest.open(tmp_path, busy_timeout=0.05) as m:
        run = m.begin_run("dv", "http://x", {})
        other = sqlite3.connect(db_file(tmp_path), isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(ManifestError, match="locked by another process"):
                m.apply([update("a")], run)
            other.execute("ROLLBACK")
        finally:
            other.close()
        m.apply([update("a")], run)
        assert m.count_assets() == 1


def _open_once(dest: str, results: multiprocessing.Queue[str]) -> None:
    try:
        with Manifest.open(Path(dest)):
            results.put("ok")
    except Exception as exc:  # reported to the parent, which asserts on it
        results.put(repr(exc))


def test_processes_opening_a_fresh_dest_at_once_all_succeed(tmp_path: Path) -> None:
    """Prefetch workers open one new DEST together: none may see half a migration."""
    context = multiprocessing.get_context("fork")
    for round_ in range(10):
        dest = tmp_path / f"d{round_}"
        dest.mkdir()
        results: multiprocessing.Queue[str] = context.Queue()
        workers = [context.Process(target=_open_once, args=(str(dest), results)) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert [results.get(timeout=10) for _ in workers] == ["ok"] * 4


def test_switching_to_wal_waits_for_a_writer_instead_of_failing(tmp_path: Path) -> None:
    """SQLite answers BUSY at once (no busy handler) when the WAL switch meets a writer."""
    path = db_file(tmp_path)
    path.parent.mkdir()
    path.touch()  # a fresh manifest another process is creating: rollback journal, no schema
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")  # a RESERVED lock, as another opener's migration holds
    timer = threading.Timer(0.3, writer.execute, args=("COMMIT",))
    timer.start()
    try:
        with Manifest.open(tmp_path, busy_timeout=10) as m:
            assert m._connection().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        timer.join()
        writer.close()


def test_switching_to_wal_gives_up_after_the_busy_timeout(tmp_path: Path) -> None:
    path = db_file(tmp_path)
    path.parent.mkdir()
    path.touch()
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(ManifestError, match="locked by another process"):
            Manifest.open(tmp_path, busy_timeout=0.1)
    finally:
        writer.close()


def test_a_v1_manifest_gains_the_budget_tables_and_keeps_its_rows(tmp_path: Path) -> None:
    with Manifest.open(tmp_path, migrations=MIGRATIONS[:1]) as m:
        m.apply([update("asset-1")], m.begin_run("dv", "http://x", {}))
        assert m.schema_version == 1
    with Manifest.open(tmp_path) as m:
        assert m.schema_version == 2
        conn = m._connection()
        names = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        assert {"budget_holders", "budget_files", "budget_pins", "budget_totals"} <= names
        assert m.row("asset-1") is not None
