"""``--delete``: remove the files of assets that left the version, safely.

What goes:

- ``--delete`` without a filter: the files of assets the run's listing did not contain;
- ``--delete`` with ``--tag`` / ``--data-tag``: only the files of assets no longer in the version.
  The filtered listing cannot tell, so the version's unfiltered id listing is staged into the
  manifest's scratch table page by page (:func:`stage_version_ids`, never held in memory), and
  an asset found there stays;
- ``--delete-excluded`` (rclone's name): also the files of assets the filter leaves out.

Only after listings that completed without errors, never more than ``--max-delete`` percent
without ``--force`` (both decided by :func:`engine.plan.deletion_verdict`), and never through a
symlink: the walk to the file's folder opens each component relative to its parent with
``O_NOFOLLOW``, so a link planted inside DEST cannot make a deletion land outside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import anyio.to_thread

from engine.errors import AuthError, EngineError
from engine.manifest import Manifest
from engine.pipeline.dest_files import remove_file
from engine.pipeline.summary import Failure, LiveCounters
from engine.pipeline.writer import ManifestAccess
from engine.plan import deletion_verdict
from engine.platform import PlatformClient

__all__ = ["DeletionReport", "delete_unseen", "stage_version_ids"]

_BATCH = 500


def _unseen_batch(
    manifest: Manifest, run_id: int, keep_in_version: bool
) -> list[tuple[str, str | None, str]]:
    batch: list[tuple[str, str | None, str]] = []
    for row in manifest.unseen(run_id, page_size=_BATCH, keep_in_version=keep_in_version):
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


async def stage_version_ids(
    client: PlatformClient, dataset_version: str, db: ManifestAccess, run_id: int, page_size: int
) -> str | None:
    """Stage every id of the version (unfiltered) for this run; the listing's error, if any
    (a refused token is raised: it ends the run)."""
    manifest = db.manifest
    if manifest is None:
        return None
    try:
        async for ids in client.asset_id_pages(dataset_version, limit=page_size):
            if ids:
                await db.call(manifest.stage_in_version, run_id, ids)
    except AuthError:
        raise
    except EngineError as exc:
        return f"the version's id listing failed: {exc}"
    return None


@dataclass(frozen=True, slots=True)
class DeletionReport:
    """``candidates``: files chosen for deletion (deleted, unless refused: ``note`` says);
    ``kept``: files of assets still in the version that the filter left out, kept."""

    candidates: int
    kept: int
    note: str


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
    filtered: bool = False,
    delete_excluded: bool = False,
) -> DeletionReport:
    """Delete what this run may delete (see the module docstring).

    ``filtered``: the listing was filtered; unless ``delete_excluded``, the version's ids must
    have been staged (:func:`stage_version_ids`) and ``listing_complete`` covers that listing
    too."""
    manifest = db.manifest
    if manifest is None:
        return DeletionReport(0, 0, "nothing mirrored yet")
    keep_in_version = filtered and not delete_excluded
    candidates = await db.call(manifest.count_unseen, run_id, keep_in_version=keep_in_version)
    unseen = await db.call(manifest.count_unseen, run_id) if keep_in_version else candidates
    # Without complete listings nothing is deleted, and what "kept" would count is unknown.
    kept = unseen - candidates if listing_complete else 0
    total = await db.call(manifest.count_assets)
    because = (
        "are no longer in the version or are left out by the filter (--delete-excluded)"
        if filtered and delete_excluded
        else "are no longer in the version"
    )
    verdict = deletion_verdict(
        candidates=candidates,
        total=total,
        listing_complete=listing_complete,
        max_delete_percent=max_delete_percent,
        force=force,
        because=because,
    )
    reason = verdict.reason
    if kept:
        reason += (
            f"; {kept} files of assets the filter leaves out are still in the version and were "
            "kept (--delete-excluded removes them)"
        )
    if not verdict.allowed or dry_run or candidates == 0:
        return DeletionReport(candidates, kept, reason)
    while True:
        batch = await db.call(_unseen_batch, manifest, run_id, keep_in_version)
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
            note = f"stopped after a deletion failed: {failures[0].error}"
            return DeletionReport(candidates, kept, note)
    return DeletionReport(candidates, kept, reason)
