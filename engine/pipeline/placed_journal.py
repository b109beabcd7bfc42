"""Files put in place but not yet recorded: a journal the next run adopts them from.

A file is renamed into place, then its row reaches the manifest a little later (the writer
commits in batches, after a durability barrier when files are synced as a group). A SIGKILL in
between leaves a complete, verified file that the manifest does not know, and the next run
fetched it again: in the kill soak the same 4 MiB object was fetched four times, each time
killed just after its rename, because every rerun starts with the same unfinished work.

So each file in place is first written to the journal beside the run's manifest
(``DEST/.assetsync/manifest.placed.jsonl``, ``shard-K-of-N.placed.jsonl``: one line, one
``write`` on an ``O_APPEND`` descriptor: cheap, and kept by the page cache through a kill), and the
journal is emptied whenever the writer has committed everything put to it. A run that opens a
DEST adopts what the journal names and the manifest does not hold: a file at that path, a regular
file (no symlink followed), of that size and whose SHA-256 is the one the transfer computed, is
recorded as the journal says (without tags and annotations, which the run then adds as for any
kept file). Anything else in the journal is ignored: it is a hint, never trusted without the
hash, so a torn line, a file changed since or a hand-edited journal cost at most a download.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from engine.manifest import AssetUpdate, FileInfo, Manifest
from engine.pipeline.dest_files import folder_fd

__all__ = ["MAX_LINES", "PlacedJournal", "adopt_placed"]

# Lines kept at most between two empty points (a writer that never catches up stops journaling;
# a rerun then downloads what it would otherwise adopt, nothing worse).
MAX_LINES = 100_000
# A line longer than this is not one of ours (an asset's metadata is bounded by the API's).
_MAX_LINE = 1 << 20
_APPLY_CHUNK = 500


class PlacedJournal:
    """The journal of one run (opened by the run, used from the event loop)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._lines = 0
        # Since the last clear: a file recorded at once, then again with its metadata, is one
        # line (the same file either way).
        self._ids: set[str] = set()

    def open(self) -> None:
        self._fd = os.open(
            self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
        )

    def record(self, update: AssetUpdate) -> None:
        """``update``'s file is in place; its row is about to be put to the writer."""
        if self._fd is None or update.file is None or self._lines >= MAX_LINES:
            return
        if update.asset_id in self._ids:
            return
        line = _encode(update)
        if len(line) > _MAX_LINE:
            return
        try:
            os.write(self._fd, line)
        except OSError:
            return  # a journal that cannot be written costs a download on a rerun, no more
        self._lines += 1
        self._ids.add(update.asset_id)

    def clear(self) -> None:
        """Everything recorded so far is committed to the manifest."""
        if self._fd is None or self._lines == 0:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        self._lines = 0
        self._ids.clear()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _encode(update: AssetUpdate) -> bytes:
    file = update.file
    assert file is not None
    entry = {
        "asset_id": update.asset_id,
        "data_id": update.data_id,
        "object_name": update.object_name,
        "filename": update.filename,
        "content_type": update.content_type,
        "width": update.width,
        "height": update.height,
        "metadata": update.metadata,
        "path": file.path,
        "size": file.size,
        "sha256": file.sha256,
        "etag": file.etag,
    }
    return json.dumps(entry, separators=(",", ":"), default=str).encode() + b"\n"


def _decode(line: bytes) -> AssetUpdate | None:
    try:
        entry = json.loads(line)
        if not isinstance(entry, dict):
            return None
        text = ("asset_id", "data_id", "object_name", "filename", "path", "sha256")
        if not all(isinstance(entry.get(k), str) for k in text):
            return None
        size = entry.get("size")
        if not isinstance(size, int) or isinstance(size, bool):
            return None
        metadata = entry.get("metadata")
        return AssetUpdate(
            asset_id=entry["asset_id"],
            data_id=entry["data_id"],
            object_name=entry["object_name"],
            filename=entry["filename"],
            content_type=_opt(entry.get("content_type"), str),
            width=_opt(entry.get("width"), int),
            height=_opt(entry.get("height"), int),
            metadata=metadata if isinstance(metadata, dict) else {},
            tags=None,
            data_tags=None,
            annotations=None,
            file=FileInfo(
                path=entry["path"],
                size=size,
                sha256=entry["sha256"],
                etag=_opt(entry.get("etag"), str),
            ),
        )
    except (ValueError, TypeError, RecursionError):
        return None


def _opt(value: Any, kind: type) -> Any:
    return value if isinstance(value, kind) and not isinstance(value, bool) else None


def _lines(path: Path) -> Iterator[bytes]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return  # none (or a symlink planted at its name: not ours)
    with open(fd, "rb") as fh:
        for count, line in enumerate(iter(lambda: fh.readline(_MAX_LINE + 1), b"")):
            if count >= MAX_LINES:
                return
            if line.endswith(b"\n"):  # a torn last line is not a record
                yield line


def _holds(dest: Path, rel_path: str, size: int, sha256: str) -> bool:
    """Whether ``dest/rel_path`` is a regular file of ``size`` bytes and this SHA-256, reached
    without following a symlink anywhere below DEST; if so it is synced, with its folder."""
    parts = PurePosixPath(rel_path).parts  # relative, no "..": FileInfo checked it
    try:
        fd = folder_fd(dest, parts[:-1])
    except OSError:
        return False
    try:
        file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    except OSError:
        os.close(fd)
        return False
    try:
        with open(file_fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_size != size:
                return False
            if hashlib.file_digest(fh, "sha256").hexdigest() != sha256:
                return False
            # Recorded now, so durable now: the killed run's barrier may never have come.
            os.fsync(fh.fileno())
        os.fsync(fd)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def adopt_placed(journal: Path, dest: Path, manifest: Manifest, run_id: int) -> int:
    """Record the journal's files the manifest does not hold (see the module docstring), then
    empty the journal. Returns how many were adopted. Runs under DEST's lock."""
    adopted: list[AssetUpdate] = []  # a chunk at a time: the journal may hold MAX_LINES
    count = 0
    seen: set[str] = set()
    for line in _lines(journal):
        update = _decode(line)
        if update is None or update.file is None or update.asset_id in seen:
            continue
        seen.add(update.asset_id)
        row = manifest.row(update.asset_id)
        file = update.file
        if (
            row is not None
            and row.state == "ok"
            and (row.data_id, row.path, row.sha256) == (update.data_id, file.path, file.sha256)
        ):
            continue  # recorded after all
        if not _holds(dest, file.path, file.size, file.sha256):
            continue
        adopted.append(update)
        if len(adopted) >= _APPLY_CHUNK:
            manifest.apply(adopted, run_id)
            count += len(adopted)
            adopted.clear()
    if adopted:
        manifest.apply(adopted, run_id)
        count += len(adopted)
    with contextlib.suppress(OSError):
        fd = os.open(journal, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)
    return count
