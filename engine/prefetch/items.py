"""What the prefetcher hands out: items, the error for a failed one, and its counters."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import EngineError

__all__ = ["AssetUnavailable", "PrefetchItem", "PrefetchStats"]


@dataclass(frozen=True, slots=True)
class PrefetchItem:
    """One asset of the epoch, its file complete and verified on disk at ``path``.

    ``path`` is absolute; ``rel_path`` is relative to DEST (as in the manifest). ``tags`` and
    ``data_tags`` are names, sorted; ``annotations`` are the platform's BulkAnnotation objects
    as it sent them, newest first. ``index`` is the item's position in the epoch's order (the
    listing's, the given ids', or the shuffled one), ``cached`` says the file was on disk
    already (no storage request was made for it).

    With ``on_failure="yield"`` an asset that could not be fetched comes as an item with
    ``error`` set and ``path`` None (``ok`` is False); the other fields say what is known.
    Items pickle (a DataLoader worker sends them to the main process).
    """

    asset_id: str
    data_id: str | None
    filename: str
    path: Path | None
    rel_path: str | None
    size: int | None
    sha256: str | None
    content_type: str | None
    width: int | None
    height: int | None
    tags: tuple[str, ...]
    data_tags: tuple[str, ...]
    annotations: list[dict[str, Any]]
    object_name: str | None
    index: int
    epoch: int
    cached: bool
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def read_bytes(self) -> bytes:
        """The file's content (raises :class:`AssetUnavailable` for a failed item)."""
        if self.path is None:
            raise AssetUnavailable(self.asset_id, self.filename, self.error or "no file")
        return self.path.read_bytes()


class AssetUnavailable(EngineError):
    """An asset could not be fetched after the transfer core's retries (``on_failure="raise"``),
    or is no longer in the dataset version."""

    def __init__(self, asset_id: str, filename: str, reason: str) -> None:
        super().__init__(f"asset {asset_id} ({filename!r}): {reason}")
        self.asset_id = asset_id
        self.filename = filename
        self.reason = reason


@dataclass(slots=True)
class PrefetchStats:
    """Counters over the prefetcher's session (all its epochs)."""

    epochs: int = 0
    yielded: int = 0
    cached: int = 0  # yielded from files already on disk
    downloaded: int = 0
    failed: int = 0
    skipped_not_ready: int = 0  # listed with an upload that is not finished
    evicted: int = 0
    evicted_bytes: int = 0
    bytes_downloaded: int = 0
    retries: int = 0
    url_refreshes: int = 0
    peak_usage: int = 0  # the disk budget's books at their highest (max_bytes only)
    over_budget_starts: int = 0  # downloads that went over the budget (see the README)
    failures: list[str] = field(default_factory=list)  # the first few, one line each

    def snapshot(self) -> dict[str, Any]:
        return asdict(self)
