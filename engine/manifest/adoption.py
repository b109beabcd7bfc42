"""Moving rows between two manifests of one DEST when the shard count changes (``--reshard``).

After N changes, the assets a shard now owns are recorded in the manifests of the old N. The new
shard *adopts* them: in one transaction over both files (the old one ATTACHed), the rows of the
assets it owns and does not record yet are copied with their tags, annotations and shapes, then
deleted from the old manifest. Its files are in place, so nothing is fetched again. The caller
holds the old manifest's lock, so no other process writes it meanwhile.

SQLite commits a transaction over two WAL databases atomically in each file but not across them:
a process killed between the two leaves a row in both. The next adoption then finds it already
recorded (the copy is skipped: the adopter's own row is the newer) and deletes the old one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

__all__ = ["adopt_rows"]

# Child tables, parents first; every one has an asset_id column.
_CHILDREN = ("tags", "annotations", "shapes")
# The source's run ids mean nothing in the adopter: the next run that lists the asset sets it.
_RUN_COLUMNS = frozenset({"last_seen_run"})


def _columns(conn: sqlite3.Connection, schema: str, table: str) -> list[str]:
    return [str(row[1]) for row in conn.execute(f"PRAGMA {schema}.table_info({table})")]


def adopt_rows(
    conn: sqlite3.Connection, source: Path, holds: Callable[[str], bool]
) -> tuple[int, int]:
    """Move the rows ``holds`` accepts from the manifest at ``source`` into ``conn``'s.

    Both must have the same schema (open the source once as a manifest first: that migrates
    it). Returns (rows adopted, rows left in the source). ``conn`` must be in autocommit mode
    (no transaction open): ATTACH cannot run inside one.
    """
    conn.create_function(
        "assetsync_holds", 1, lambda asset_id: 1 if holds(str(asset_id)) else 0, deterministic=True
    )
    conn.execute("ATTACH DATABASE ? AS adopted_from", (f"{source.resolve().as_uri()}?mode=rw",))
    try:
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS adopting (asset_id TEXT PRIMARY KEY, new INTEGER)"
        )
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM temp.adopting")
            # new: not recorded by the adopter yet (one it records is newer than the old copy).
            conn.execute(
                "INSERT INTO temp.adopting SELECT asset_id,"
                " asset_id NOT IN (SELECT asset_id FROM main.assets)"
                " FROM adopted_from.assets WHERE assetsync_holds(asset_id)"
            )
            for table in ("assets", *_CHILDREN):
                names = _columns(conn, "main", table)
                picked = ", ".join("NULL" if name in _RUN_COLUMNS else name for name in names)
                # OR IGNORE for assets: a row whose path another recorded asset holds stays in
                # the old manifest (a clash its files decide; verify reports it).
                conn.execute(
                    # Table and column names come from this module and the schema, not input.
                    f"INSERT {'OR IGNORE ' if table == 'assets' else ''}"  # noqa: S608
                    f"INTO main.{table} ({', '.join(names)})"
                    f" SELECT {picked} FROM adopted_from.{table}"
                    " WHERE asset_id IN (SELECT asset_id FROM temp.adopting WHERE new)"
                )
                if table == "assets":
                    conn.execute(
                        "DELETE FROM temp.adopting WHERE new"
                        " AND asset_id NOT IN (SELECT asset_id FROM main.assets)"
                    )
            moved = conn.execute("SELECT count(*) FROM temp.adopting WHERE new").fetchone()[0]
            for table in (*reversed(_CHILDREN), "assets"):
                conn.execute(
                    f"DELETE FROM adopted_from.{table}"  # noqa: S608
                    " WHERE asset_id IN (SELECT asset_id FROM temp.adopting)"
                )
            left = conn.execute("SELECT count(*) FROM adopted_from.assets").fetchone()[0]
            conn.execute("DELETE FROM temp.adopting")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    finally:
        conn.execute("DETACH DATABASE adopted_from")
    return int(moved), int(left)
