"""The values that cross the manifest's boundary: plain frozen dataclasses, no SQL here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal, get_args

__all__ = [
    "STATES",
    "ApplyResult",
    "AssetRow",
    "AssetState",
    "AssetUpdate",
    "FileInfo",
    "ManifestStatus",
    "RunRecord",
]

AssetState = Literal["ok", "missing", "corrupt", "failed", "evicted"]
STATES: tuple[AssetState, ...] = get_args(AssetState)


@dataclass(frozen=True, slots=True)
class FileInfo:
    """The file a fetch placed under DEST.

    ``path`` is POSIX and relative to DEST (what the layout produced); it is checked here because
    a path that could escape DEST must never be recorded, whoever made the mistake.
    ``fetched_at`` (epoch seconds) defaults to the moment the batch is applied.
    """

    path: str
    size: int
    sha256: str
    etag: str | None = None
    fetched_at: float | None = None

    def __post_init__(self) -> None:
        path = str(self.path)
        pure = PurePosixPath(path)
        # Checked on the normalised form: ".//" is "." once PurePosixPath has read it.
        if not path or pure.is_absolute() or ".." in pure.parts or pure.as_posix() == ".":
            raise ValueError(f"not a relative path inside DEST: {path!r}")
        if self.size < 0:
            raise ValueError(f"negative size for {path!r}")
        object.__setattr__(self, "path", pure.as_posix())


@dataclass(frozen=True, slots=True)
class AssetUpdate:
    """One asset as this run saw it, to be written by :meth:`Manifest.apply`.

    ``tags`` / ``data_tags`` are names (order and duplicates do not matter); both ``None`` leaves
    the stored ones untouched. ``annotations`` are BulkAnnotation dicts as the API gave them (newest
    first); ``None`` leaves the stored ones untouched, ``[]`` records "no annotations".
    ``file`` is ``None`` for a metadata-only update: the recorded file columns are kept.
    """

    asset_id: str
    data_id: str
    object_name: str
    filename: str
    content_type: str | None = None
    width: int | None = None
    height: int | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    tags: Sequence[str] | None = ()
    data_tags: Sequence[str] | None = ()
    annotations: Sequence[Mapping[str, Any]] | None = None
    file: FileInfo | None = None
    state: AssetState = "ok"
    error: str | None = None

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"unknown asset state {self.state!r}")
        if isinstance(self.tags, str) or isinstance(self.data_tags, str):
            # A bare string is a Sequence[str] too, and would become one tag per character.
            raise TypeError("tags and data_tags are sequences of names, not a string")
        if (self.tags is None) != (self.data_tags is None):
            # One digest covers both kinds, so they are replaced (or kept) together.
            raise ValueError("give both tags and data_tags, or neither")


@dataclass(frozen=True, slots=True)
class AssetRow:
    """What the manifest remembers of one asset (the planner's and verify's input).

    ``tags_digest`` / ``annotations_digest`` are those of :mod:`engine.digests`, or
    ``None`` when never recorded. ``last_seen_run`` is the last run whose listing contained it.
    """

    asset_id: str
    data_id: str
    object_name: str
    filename: str
    path: str | None
    size: int | None
    sha256: str | None
    etag: str | None
    content_type: str | None
    width: int | None
    height: int | None
    state: AssetState
    tags_digest: str | None
    annotations_digest: str | None
    fetched_at: float | None
    error: str | None
    last_seen_run: int | None


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one :meth:`Manifest.apply` batch did.

    ``displaced`` names assets (outside the batch) whose recorded path a file of the batch now
    occupies: their rows lose the path and become ``missing``, because the file on disk is no
    longer theirs. The layout should make this impossible; it is recorded rather than refused so
    that a batch of files already renamed into place is never lost.
    """

    applied: int
    displaced: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run of the engine against this DEST. ``outcome`` is ``None`` while it runs."""

    run_id: int
    started_at: float
    finished_at: float | None
    outcome: str | None
    counts: dict[str, int | float]
    dataset_version: str
    api_url: str
    pid: int
    host: str
    options: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ManifestStatus:
    """``assetsync status``: what is there, from which version, and how the last run went."""

    path: str
    schema_version: int
    dataset_version: str | None
    assets: int
    states: dict[str, int]
    total_bytes: int
    last_run: RunRecord | None
    runs: int
