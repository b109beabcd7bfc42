"""What travels between the stages: an asset's download job, and how it becomes a manifest update.

Shared by the mirror (:mod:`engine.mirroring`) and the prefetcher, so both record exactly the
same thing for the same asset. (The transfer core's own ``Job`` is one download attempt of one
object; an :class:`AssetJob` is the asset it is for.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from engine.errors import AuthError, DiskFullError, EngineError, NotFoundError
from engine.manifest import AssetState, AssetUpdate, FileInfo
from engine.pipeline.summary import Failure, LiveCounters
from engine.platform import PlatformClient, models
from engine.signed_urls import SignedUrl
from engine.transfer import ObjectRef, Transferer, TransferResult

__all__ = [
    "AssetJob",
    "Outcome",
    "PlannedAction",
    "transfer_job",
    "update_for",
    "update_for_outcome",
]


@dataclass(slots=True)
class AssetJob:
    """One asset to download, with what the manifest must record once the file is in place."""

    asset: models.Asset
    rel_path: PurePosixPath
    url: SignedUrl | None
    # None: not known this run (the manifest keeps what it has).
    tags: tuple[str, ...] | None
    data_tags: tuple[str, ...] | None
    annotations: list[dict[str, Any]] | None
    reason: str


@dataclass(frozen=True, slots=True)
class PlannedAction:
    """One line of a run's plan (printed by a dry run)."""

    action: str
    asset_id: str
    path: str | None
    reason: str


def update_for(
    asset: models.Asset,
    tags: Sequence[str] | None,
    data_tags: Sequence[str] | None,
    annotations: list[dict[str, Any]] | None,
    *,
    file: FileInfo | None,
    state: AssetState = "ok",
    error: str | None = None,
    content_type: str | None = None,
) -> AssetUpdate:
    """The manifest update for an asset as listed (``file=None``: metadata only)."""
    data = asset.data
    metadata: dict[str, Any] = {}
    if data.metadata:
        metadata["metadata"] = data.metadata
    if data.custom_metadata:
        metadata["custom_metadata"] = data.custom_metadata
    return AssetUpdate(
        asset_id=asset.id,
        data_id=data.id,
        object_name=data.object_name,
        filename=data.filename,
        content_type=data.content_type or content_type,
        width=data.width,
        height=data.height,
        metadata=metadata,
        tags=None if tags is None else tuple(tags),
        data_tags=None if data_tags is None else tuple(data_tags),
        annotations=annotations,
        file=file,
        state=state,
        error=error,
    )


@dataclass(slots=True)
class Outcome:
    """How one job ended: a file in place (``result``) or a failure (``error``)."""

    job: AssetJob
    result: TransferResult | None
    error: str | None


async def transfer_job(
    job: AssetJob,
    *,
    transferer: Transferer,
    client: PlatformClient,
    dest: Path,
    counters: LiveCounters,
) -> Outcome:
    """Download one job. A failure of this asset is an outcome (the run goes on); errors that
    concern the whole run (the token was revoked, the disk is full) propagate."""
    asset = job.asset
    data_id = asset.data.id

    async def refresh() -> str:
        return await client.presigned_url(data_id)

    try:
        result = await transferer.fetch(
            ObjectRef(asset.id, data_id), job.url, refresh, dest, job.rel_path
        )
    except (AuthError, DiskFullError):
        raise
    except EngineError as exc:
        message = str(exc)
        if isinstance(exc, NotFoundError):
            message = f"gone from the platform during the run: {message}"
        counters.add_failure(Failure(asset.id, asset.data.filename, message))
        return Outcome(job, None, message)
    counters.downloaded += 1
    counters.bytes_resumed += result.bytes_resumed
    return Outcome(job, result, None)


def update_for_outcome(outcome: Outcome, *, metadata: bool = True) -> AssetUpdate:
    """The manifest update for a finished job, with the metadata the job carries now
    (``metadata=False``: it never came; the stored tags and annotations are left as they are)."""
    job, result = outcome.job, outcome.result
    tags = job.tags if metadata else None
    data_tags = job.data_tags if metadata else None
    annotations = job.annotations if metadata else None
    if result is None:
        return update_for(
            job.asset,
            tags,
            data_tags,
            annotations,
            file=None,
            state="failed",
            error=outcome.error,
        )
    file = FileInfo(
        path=result.rel_path.as_posix(), size=result.size, sha256=result.sha256, etag=result.etag
    )
    return update_for(
        job.asset, tags, data_tags, annotations, file=file, content_type=result.content_type
    )
