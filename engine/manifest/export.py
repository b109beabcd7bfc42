"""``assetsync manifest export``: one JSON object per asset, streamed.

Three ordered scans (assets, tags, annotations, all by asset id) are merged in step, so memory
holds one page of each whatever the manifest's size, and no per-asset query is made. The whole
export reads one snapshot (one read transaction): a mirror committing meanwhile in another
process cannot make an asset's row and its tags disagree.

Stored annotation bodies are spliced into the output as the stored text, so each annotation is
written exactly as it was recorded, without a decode and re-encode.
"""

from __future__ import annotations

import heapq
import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, Literal, Protocol

__all__ = ["EXPORT_FIELDS", "TextSink", "export", "export_many"]

_PAGE = 500
_FLUSH_CHARS = 64 * 1024  # write in slabs: fewer calls into the file object

EXPORT_FIELDS = (
    "asset_id",
    "data_id",
    "object_name",
    "filename",
    "path",
    "size",
    "sha256",
    "etag",
    "content_type",
    "width",
    "height",
    "state",
    "error",
    "fetched_at",
    "tags",
    "data_tags",
    "metadata",
    "annotations",
)
_ASSETS = (
    "SELECT asset_id, data_id, object_name, filename, path, size, sha256, etag, content_type,"
    " width, height, state, error, fetched_at, metadata, annotations_digest"
    " FROM assets ORDER BY asset_id"
)
_TAGS = "SELECT asset_id, kind, name FROM tags ORDER BY asset_id, kind, name"
_ANNOTATIONS = "SELECT asset_id, body FROM annotations ORDER BY asset_id, ord"


# Line separators to str.splitlines() and to JavaScript, though JSON allows them raw in strings:
# escaped, a JSON Lines file splits into lines the same way with every reader.
_LINE_BREAKS = (("\x85", "\\u0085"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


class TextSink(Protocol):
    def write(self, text: str, /) -> Any: ...


def _stream(cursor: sqlite3.Cursor) -> Iterator[Any]:
    while page := cursor.fetchmany(_PAGE):
        yield from page


class _Groups:
    """Rows of a scan ordered by asset id, handed out one asset at a time."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._rows = _stream(cursor)
        self._head: Any = next(self._rows, None)

    def take(self, asset_id: str) -> list[Any]:
        # SQLite orders TEXT by its UTF-8 bytes, which is code point order, as Python compares.
        while self._head is not None and self._head[0] < asset_id:
            self._head = next(self._rows, None)  # orphan (impossible with foreign keys on)
        group = []
        while self._head is not None and self._head[0] == asset_id:
            group.append(self._head)
            self._head = next(self._rows, None)
        return group


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _objects(
    assets: sqlite3.Cursor, tag_scan: sqlite3.Cursor, annotation_scan: sqlite3.Cursor
) -> Iterator[tuple[str, str]]:
    tags = _Groups(tag_scan)
    annotations = _Groups(annotation_scan)
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    for row in _stream(assets):
        (asset_id, data_id, object_name, filename, path, size, sha256, etag, content_type,
         width, height, state, error, fetched_at, metadata, digest) = row  # fmt: skip
        names = tags.take(asset_id)
        head = dumps(
            {
                "asset_id": asset_id,
                "data_id": data_id,
                "object_name": object_name,
                "filename": filename,
                "path": path,
                "size": size,
                "sha256": sha256,
                "etag": etag,
                "content_type": content_type,
                "width": width,
                "height": height,
                "state": state,
                "error": error,
                "fetched_at": _iso(fetched_at),
                "tags": [name for _, kind, name in names if kind == "asset"],
                "data_tags": [name for _, kind, name in names if kind == "data"],
            }
        )
        bodies = annotations.take(asset_id)
        # None: annotations were never fetched for this asset, which is not the same as none.
        listed = "null" if digest is None else "[" + ",".join(body for _, body in bodies) + "]"
        line = f'{head[:-1]},"metadata":{metadata},"annotations":{listed}}}'
        if not line.isascii():
            for raw, escaped in _LINE_BREAKS:
                if raw in line:  # rare; str.translate would cost more than the whole line
                    line = line.replace(raw, escaped)
        yield asset_id, line


@contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[Iterator[tuple[str, str]]]:
    """One manifest's objects by asset id, read in one snapshot (one read transaction)."""
    conn.execute("BEGIN")  # deferred: a read transaction, one snapshot for the three scans
    scans = [conn.cursor() for _ in range(3)]
    try:
        assets, tags, annotations = (
            scan.execute(sql)
            for scan, sql in zip(scans, (_ASSETS, _TAGS, _ANNOTATIONS), strict=True)
        )
        yield _objects(assets, tags, annotations)
    finally:
        for scan in scans:
            scan.close()
        conn.execute("COMMIT")


def export(conn: sqlite3.Connection, fh: TextSink, fmt: Literal["jsonl", "json"]) -> int:
    """Write every asset to ``fh`` as JSON Lines or as one JSON array; return the count."""
    return export_many([conn], fh, fmt)


def export_many(
    conns: Sequence[sqlite3.Connection], fh: TextSink, fmt: Literal["jsonl", "json"]
) -> int:
    """:func:`export` of several manifests (the shards of one DEST) as one, merged in asset id
    order: one page of each in memory."""
    if fmt not in ("jsonl", "json"):
        raise ValueError(f"export format must be 'jsonl' or 'json', not {fmt!r}")
    count = 0
    buffer: list[str] = []
    size = 0
    with ExitStack() as stack:
        streams = [stack.enter_context(_snapshot(conn)) for conn in conns]
        merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=itemgetter(0))
        if fmt == "json":
            buffer.append("[")
        for _, text in merged:
            if fmt == "json":
                text = ("\n" if count == 0 else ",\n") + text
            else:
                text += "\n"
            buffer.append(text)
            size += len(text)
            count += 1
            if size >= _FLUSH_CHARS:
                fh.write("".join(buffer))
                buffer.clear()
                size = 0
        if fmt == "json":
            buffer.append("\n]\n" if count else "]\n")
        fh.write("".join(buffer))
    return count
