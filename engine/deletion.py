"""``--delete``: remove the files of assets that left the version, safely.

Only after a listing that completed without errors, never more than ``--max-delete`` percent
without ``--force`` (both decided by :func:`engine.plan.deletion_verdict`), and never through a
symlink: the walk to the file's folder opens each component relative to its parent with
``O_NOFOLLOW``, so a link planted inside DEST cannot make a deletion land outside it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path, PurePosixPath

import anyio.to_thread

from engine.errors import LocalStorageError
from engine.manifest import Manifest
from engine.manifest_access import ManifestAccess
from engine.plan import deletion_verdict
from engine.summary import Failure, LiveCounters

__all__ = ["delete_unseen", "remove_file"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_BATCH = 500


def remove_file(dest: Path, rel_path: PurePosixPath) -> bool:
    """Unlink ``dest/rel_path`` without following any symlink on the way; ``False`` if it was
    not there. A symlink at the final name is removed itself (unlink works on names)."""
    parts = rel_path.parts
    if not parts or rel_path.is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise LocalStorageError(f"refusing to delete an unsafe path: {str(rel_path)!r}")
    fd = os.open(dest, _DIR_FLAGS & ~os.O_NOFOLLOW)
    try:
        for name in parts[:-1]:
            try:
                next_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    return False  # the folder is gone or is not ours to walk through
                raise
            os.close(fd)
            fd = next_fd
        try:
            os.unlink(parts[-1], dir_fd=fd)
        except FileNotFoundError:
            return False
        except IsADirectoryError:
            return False  # a folder now sits where our file was: not ours to remove
        return True
    finally:
        os.close(fd)


def _unseen_batch(manifest: Manifest, run_id: int) -> list[tuple[str, str | None, str]]:
    batch: list[tuple[str, str | None, str]] = []
    for row in manifest.unseen(run_id, page_size=_BATCH):
        batch.append((row.asset_id, row.path, row.filename))
        if len(batch) >= _BATCH:
            break
    return batch


def _remove_batch(dest: Path, batch: list[tuple[str, str | None, str]]) -> list[Failure]:
    failures = []
    for asset_id, path, filename in batch:
        if path is None:
            continue
        try:
            remove_file(dest, PurePosixPath(path))
        except OSError as exc:
            failures.append(Failure(asset_id, filename, f"could not delete {path}: {exc.strerror}"))
    return failures


async def delete_unseen(
    *,
    dest: Path,
    db: ManifestAccess,
    run_id: int,
    listing_complete: bool,
    max_delete_percent: float,
    force: bool,
    dry_run: bool,
    counters: LiveCounters,
) -> tuple[int, str]:
    """Delete what this run's listing did not contain. Returns (candidates, explanation)."""
    manifest = db.manifest
    if manifest is None:
        return 0, "nothing mirrored yet"
    candidates = await db.call(manifest.count_unseen, run_id)
    total = await db.call(manifest.count_assets)
    verdict = deletion_verdict(
        candidates=candidates,
        total=total,
        listing_complete=listing_complete,
        max_delete_percent=max_delete_percent,
        force=force,
    )
    if not verdict.allowed or dry_run or candidates == 0:
        return candidates, verdict.reason
    while True:
        batch = await db.call(_unseen_batch, manifest, run_id)
        if not batch:
            break
        failures = await anyio.to_thread.run_sync(_remove_batch, dest, batch)
        failed_ids = {f.asset_id for f in failures}
        for failure in failures:
            counters.add_failure(failure)
        removed = [asset_id for asset_id, _, _ in batch if asset_id not in failed_ids]
        await db.call(manifest.remove, removed)
        counters.deleted += len(removed)
        if failures:
            # A file we cannot delete (permissions, a read-only mount) will not go on the next
            # try either; stop instead of looping over the same rows.
            return candidates, f"stopped after a deletion failed: {failures[0].error}"
    return candidates, verdict.reason
