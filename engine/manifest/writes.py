"""One batch of :class:`AssetUpdate` into SQL, inside the caller's transaction.

The hot path of a mirror (about a thousand small files a second): everything is done with a few
``executemany`` calls over prepared statements, tags and annotations are rewritten only when
their digest changed, and brand-new assets (the common case on a first run) skip the deletes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from engine.digests import annotations_digest, path_key, tags_digest
from engine.manifest.db import InLists
from engine.manifest.jsontext import dump_json
from engine.manifest.records import ApplyResult, AssetUpdate
from engine.manifest.shapes import shapes_of

__all__ = ["UPSERT_METADATA", "UPSERT_WITH_FILE", "apply_batch"]

_COLUMNS = (
    "asset_id, data_id, object_name, filename, path, path_key, size, sha256, etag, content_type,"
    " width, height, metadata, fetched_at, state, error, tags_digest, annotations_digest,"
    " last_seen_run"
)
_KEEP_DIGESTS = (
    "tags_digest = coalesce(excluded.tags_digest, assets.tags_digest),"
    " annotations_digest = coalesce(excluded.annotations_digest, assets.annotations_digest),"
    " last_seen_run = excluded.last_seen_run"
)
_DESCRIBE = (
    "data_id = excluded.data_id, object_name = excluded.object_name,"
    " filename = excluded.filename, content_type = excluded.content_type,"
    " width = excluded.width, height = excluded.height, metadata = excluded.metadata,"
    " error = excluded.error"
)
_STATE_WITH_FILE = "state = excluded.state"
# "ok" promises a file (a CHECK says so). Without a file in the update, the inserted candidate
# row cannot say "ok" (SQLite checks CHECK constraints before it detects the conflict), so the
# requested state comes separately as ?20 and counts only if a file is already on record.
_STATE_KEEPING_FILE = (
    "state = CASE WHEN ?20 = 'ok' AND assets.path IS NULL THEN 'missing' ELSE ?20 END"
)
_FILE = (
    "path = excluded.path, path_key = excluded.path_key, size = excluded.size,"
    " sha256 = excluded.sha256, etag = excluded.etag, fetched_at = excluded.fetched_at"
)
# Only constant column lists are interpolated into these statements.
_VALUES = ", ".join(f"?{n}" for n in range(1, 20))
_INSERT = f"INSERT INTO assets ({_COLUMNS}) VALUES ({_VALUES}) ON CONFLICT (asset_id)"  # noqa: S608
# A NULL digest parameter means "not given": keep what is stored (coalesce).
UPSERT_WITH_FILE = (
    f"{_INSERT} DO UPDATE SET {_DESCRIBE}, {_STATE_WITH_FILE}, {_FILE}, {_KEEP_DIGESTS}"
)
UPSERT_METADATA = f"{_INSERT} DO UPDATE SET {_DESCRIBE}, {_STATE_KEEPING_FILE}, {_KEEP_DIGESTS}"


def _text(value: Any) -> str | None:
    # The id and status columns index what the body holds verbatim; a value of another JSON
    # type (the API's to send, not ours to refuse) stays in the body only.
    return value if isinstance(value, str) else None


def _stored_digests(
    conn: sqlite3.Connection, lists: InLists, ids: Sequence[str]
) -> dict[str, tuple[str | None, str | None]]:
    found: dict[str, tuple[str | None, str | None]] = {}
    sql = "SELECT asset_id, tags_digest, annotations_digest FROM assets WHERE asset_id IN ({marks})"
    for query, params in lists.chunks(sql, ids):
        for asset_id, tags, annotation_digest in conn.execute(query, params):
            found[asset_id] = (tags, annotation_digest)
    return found


def _free_claimed_paths(
    conn: sqlite3.Connection,
    lists: InLists,
    claims: Mapping[str, str],
    batch: Mapping[str, AssetUpdate],
) -> dict[str, str]:
    """Release every claimed path held by another asset; return displaced asset -> claimer.

    SQLite has no deferred UNIQUE constraints, so paths that change hands inside one batch (A
    moves away from ``x``, B takes ``x``) are released first and then assigned.
    """
    holders: list[tuple[str, str]] = []
    sql = "SELECT asset_id, path_key FROM assets WHERE path_key IN ({marks})"
    for query, params in lists.chunks(sql, list(claims)):
        holders.extend(conn.execute(query, params).fetchall())
    displaced: dict[str, str] = {}
    moving: list[tuple[str]] = []
    for holder, key in holders:
        claimer = claims[key]
        if holder == claimer:
            continue
        update = batch.get(holder)
        if update is not None and update.file is not None:
            moving.append((holder,))  # it gets another path in this very batch
        else:
            displaced[holder] = claimer
    # "missing" only for the moment: the batch's upsert sets the state that goes with the new path.
    conn.executemany(
        "UPDATE assets SET path = NULL, path_key = NULL, state = 'missing' WHERE asset_id = ?",
        moving,
    )
    conn.executemany(
        "UPDATE assets SET path = NULL, path_key = NULL, state = 'missing', error = ?"
        " WHERE asset_id = ?",
        [(f"its file now holds asset {claimer}", holder) for holder, claimer in displaced.items()],
    )
    return displaced


def apply_batch(
    conn: sqlite3.Connection,
    lists: InLists,
    updates: Sequence[AssetUpdate],
    run_id: int,
    now: float,
) -> ApplyResult:
    """Write ``updates`` (the caller holds a write transaction). The last update of an id wins."""
    batch: dict[str, AssetUpdate] = {}
    for update in updates:
        batch.pop(update.asset_id, None)
        batch[update.asset_id] = update
    if not batch:
        return ApplyResult(0)
    stored = _stored_digests(conn, lists, list(batch))

    claims: dict[str, str] = {}  # path key -> the asset whose file is there after this batch
    for update in batch.values():
        if update.file is not None:
            claims[path_key(update.file.path)] = update.asset_id
    displaced = _free_claimed_paths(conn, lists, claims, batch) if claims else {}

    with_file: list[tuple[Any, ...]] = []
    metadata_only: list[tuple[Any, ...]] = []
    clear_tags: list[tuple[str]] = []
    tag_rows: list[tuple[str, str, str]] = []
    clear_annotations: list[tuple[str]] = []
    annotation_rows: list[tuple[str, int, Any, Any, str]] = []
    shape_rows: list[tuple[str, int, str, int, str | None, str | None, str | None]] = []

    for asset_id, u in batch.items():
        old_tags, old_annotations = stored.get(asset_id, (None, None))
        exists = asset_id in stored

        new_tags: str | None = None
        if u.tags is not None and u.data_tags is not None:
            new_tags = tags_digest(u.tags, u.data_tags)
            if new_tags != old_tags:
                if exists:
                    clear_tags.append((asset_id,))
                tag_rows.extend((asset_id, "asset", name) for name in set(u.tags))
                tag_rows.extend((asset_id, "data", name) for name in set(u.data_tags))

        new_annotations: str | None = None
        if u.annotations is not None:
            new_annotations = annotations_digest(u.annotations)
            if new_annotations != old_annotations:
                if exists:
                    clear_annotations.append((asset_id,))
                for ann_ord, ann in enumerate(u.annotations):
                    annotation_rows.append(
                        (
                            asset_id,
                            ann_ord,
                            _text(ann.get("id")),
                            _text(ann.get("status")),
                            dump_json(ann),
                        )
                    )
                    shape_rows.extend((asset_id, ann_ord, *shape) for shape in shapes_of(ann))

        state, error = u.state, u.error
        file = u.file
        if file is not None and claims[path_key(file.path)] != asset_id:
            # Two files of this batch went to one path: the later rename won on disk.
            state, error = "missing", f"its file now holds asset {claims[path_key(file.path)]}"
            file = None
            if exists:  # whatever it had before is not known to be its file any more
                conn.execute(
                    "UPDATE assets SET path = NULL, path_key = NULL, state = 'missing'"
                    " WHERE asset_id = ?",
                    (asset_id,),
                )
        elif file is None and asset_id in displaced:
            state, error = "missing", f"its file now holds asset {displaced[asset_id]}"

        described = (u.data_id, u.object_name, u.filename)
        common = (u.content_type, u.width, u.height, dump_json(dict(u.metadata)))
        tail = (state, error, new_tags, new_annotations, run_id)
        if file is not None:
            fetched_at = file.fetched_at if file.fetched_at is not None else now
            with_file.append(
                (
                    asset_id,
                    *described,
                    file.path,
                    path_key(file.path),
                    file.size,
                    file.sha256,
                    file.etag,
                    *common,
                    fetched_at,
                    *tail,
                )
            )
        else:
            inserted = (
                "missing" if state == "ok" else state,
                error,
                new_tags,
                new_annotations,
                run_id,
            )
            metadata_only.append(
                (
                    asset_id,
                    *described,
                    None,
                    None,
                    None,
                    None,
                    None,
                    *common,
                    None,
                    *inserted,
                    state,
                )
            )

    conn.executemany(UPSERT_WITH_FILE, with_file)
    conn.executemany(UPSERT_METADATA, metadata_only)
    conn.executemany("DELETE FROM tags WHERE asset_id = ?", clear_tags)
    conn.executemany("INSERT INTO tags (asset_id, kind, name) VALUES (?, ?, ?)", tag_rows)
    # Deleting an annotation cascades to its shapes (foreign key ON DELETE CASCADE).
    conn.executemany("DELETE FROM annotations WHERE asset_id = ?", clear_annotations)
    conn.executemany(
        "INSERT INTO annotations (asset_id, ord, annotation_id, status, body)"
        " VALUES (?, ?, ?, ?, ?)",
        annotation_rows,
    )
    conn.executemany(
        "INSERT INTO shapes (asset_id, ann_ord, kind, idx, label, text, geometry)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        shape_rows,
    )
    return ApplyResult(len(batch), tuple(displaced))
