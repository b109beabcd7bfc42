"""Pure planning: what to do with each listed asset, and whether a run may delete.

No I/O and no async here. The pipeline's planner (:mod:`engine.pipeline.planning`) gathers the
facts (the listed asset, its manifest row, what ``lstat`` said about the local file, digests of
the tags and annotations it fetched) and asks :func:`decide`: once when the page is listed (no
metadata yet: download or not), and again for the files it keeps once their tags and
annotations are in (update the metadata or skip). The prefetcher asks it too, of a file another
process may have put in place. After a complete listing the mirror asks
:func:`deletion_verdict`. Keeping the decisions pure lets them be tested exhaustively (see
``tests/test_plan.py``), the way rclone keeps ``NeedTransfer`` apart from the transfer
machinery.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "Action",
    "Decision",
    "DeletionVerdict",
    "LocalFile",
    "StoredAsset",
    "decide",
    "deletion_verdict",
]


class Action(enum.Enum):
    DOWNLOAD = "download"
    UPDATE_METADATA = "update"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class StoredAsset:
    """What the manifest remembers of an asset (the subset the decision needs)."""

    data_id: str
    object_name: str
    path: str | None
    size: int | None
    state: str
    tags_digest: str | None
    annotations_digest: str | None


@dataclass(frozen=True, slots=True)
class LocalFile:
    """What ``lstat`` said about the recorded path: ``None`` for the whole object if absent."""

    size: int
    is_regular: bool


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str
    metadata_changed: bool


def _content_reason(
    *, data_id: str, object_name: str, stored: StoredAsset | None, local: LocalFile | None
) -> str | None:
    """Why this asset's file must be downloaded, or ``None`` when the file on disk is current.

    Content is judged only by identity, as the platform contract allows: ``data`` is immutable,
    so an unchanged ``data.id`` and ``object_name`` mean unchanged bytes, and a file that is
    present at the recorded size needs no storage request at all.
    """
    if stored is None:
        return "new"
    if stored.data_id != data_id or stored.object_name != object_name:
        return "content changed"
    if stored.state != "ok":
        return f"previously {stored.state}"
    if stored.path is None or local is None:
        return "file missing"
    if not local.is_regular:
        return "not a regular file"
    if stored.size is None or local.size != stored.size:
        return "size differs"
    return None


def _metadata_changed(
    stored: StoredAsset | None, tags_digest: str | None, annotations_digest: str | None
) -> bool:
    """Whether the tags or annotations differ from what the manifest holds (a ``None`` digest:
    that kind was not fetched, or could not be read, so it is not compared)."""
    if stored is None:
        return True
    return (tags_digest is not None and stored.tags_digest != tags_digest) or (
        annotations_digest is not None and stored.annotations_digest != annotations_digest
    )


def decide(
    *,
    data_id: str,
    object_name: str,
    stored: StoredAsset | None,
    local: LocalFile | None,
    tags_digest: str | None,
    annotations_digest: str | None,
) -> Decision:
    """Decide one asset: download its file (``reason`` says why), else update its metadata if a
    digest given differs from the stored one, else skip it. A ``None`` digest: not known (yet),
    not compared; with both ``None`` the answer is only whether the file must be downloaded."""
    changed = _metadata_changed(stored, tags_digest, annotations_digest)
    reason = _content_reason(data_id=data_id, object_name=object_name, stored=stored, local=local)
    if reason is not None:
        return Decision(Action.DOWNLOAD, reason, changed)
    if changed:
        return Decision(Action.UPDATE_METADATA, "metadata changed", changed)
    return Decision(Action.SKIP, "up to date", changed)


@dataclass(frozen=True, slots=True)
class DeletionVerdict:
    allowed: bool
    reason: str


def deletion_verdict(
    *,
    candidates: int,
    total: int,
    listing_complete: bool,
    max_delete_percent: float,
    force: bool,
    because: str = "are no longer in the version",
) -> DeletionVerdict:
    """May this run delete ``candidates`` of the ``total`` assets the manifest holds?

    ``because`` says why the candidates are candidates, for the verdict's reason.

    Never after an incomplete listing (an asset missing from a broken listing is not gone), and
    not more than ``max_delete_percent`` of the mirror without ``force``: a wrong filter or an
    emptied version should not wipe a mirror overnight.
    """
    if candidates == 0:
        return DeletionVerdict(True, "nothing to delete")
    if not listing_complete:
        return DeletionVerdict(False, "the listing did not complete without errors")
    share = 100.0 * candidates / total if total else 100.0
    if share > max_delete_percent and not force:
        return DeletionVerdict(
            False,
            f"{candidates} of {total} files ({share:.0f}%) would be deleted, more than "
            f"--max-delete {max_delete_percent:g}%; use --force to allow it",
        )
    return DeletionVerdict(True, f"{candidates} files {because}")
