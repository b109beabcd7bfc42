"""What a run did: live counters while it runs, and the summary it returns.

The counters are plain integers that the pipeline increments and the progress display reads a
few times a second; nothing is pushed per byte or per file, so observing a run costs the hot path
nothing but an addition.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from engine.transfer import ProgressEvent

__all__ = ["MAX_REPORTED_FAILURES", "Failure", "LiveCounters", "MirrorSummary", "Outcome"]

Outcome = Literal["ok", "partial", "failed", "interrupted", "dry-run"]

# A run over a million assets with a broken bucket must not hold a million error strings.
MAX_REPORTED_FAILURES = 100


@dataclass(frozen=True, slots=True)
class Failure:
    asset_id: str
    filename: str
    error: str


@dataclass(slots=True)
class LiveCounters:
    """Incremented by the pipeline, read by the progress display."""

    started_at: float = field(default_factory=time.monotonic)
    total: int | None = None  # assets in the version (from the listing's count)
    listed: int = 0
    to_download: int = 0
    downloaded: int = 0
    skipped: int = 0
    not_ready: int = 0  # listed with an upload that is not DONE
    duplicates: int = 0  # listed again in the same run: skipped
    updated: int = 0
    deleted: int = 0
    failed: int = 0
    bytes_done: int = 0  # live, from the transfer core's progress events
    bytes_resumed: int = 0  # already on disk from an earlier attempt or process
    tag_changes: int = 0
    annotation_changes: int = 0
    failures: list[Failure] = field(default_factory=list)

    def add_failure(self, failure: Failure) -> None:
        self.failed += 1
        if len(self.failures) < MAX_REPORTED_FAILURES:
            self.failures.append(failure)

    def on_progress(self, event: ProgressEvent) -> None:
        if event.kind in ("bytes", "restart"):
            self.bytes_done += event.delta

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started_at


@dataclass(frozen=True, slots=True)
class MirrorSummary:
    """The result of one mirror run, as printed and as returned to library callers.

    ``bytes_downloaded`` is ``None`` for a dry run: it fetches nothing and the listing carries no
    sizes, so the bytes it would download are unknown (``downloaded`` counts the files it would
    download). ``planned_deletions`` counts the files ``--delete`` chose (deleted, or refused
    with the reason in ``deletion_note``); ``deletions_kept`` the files of assets still in the
    version that a filter left out and that were kept (``--delete-excluded`` removes them).
    """

    dataset_version: str
    dest: str
    outcome: Outcome
    listed: int
    downloaded: int
    skipped: int
    updated: int
    deleted: int
    failed: int
    bytes_downloaded: int | None
    bytes_resumed: int
    duration_seconds: float
    url_refreshes: int
    retries: int
    resumes: int
    tag_changes: int
    annotation_changes: int
    planned_deletions: int = 0
    deletions_kept: int = 0
    deletion_note: str | None = None
    failures: tuple[Failure, ...] = ()
    error: str | None = None
    # What the run could not do without failing an asset (tags left as stored, for instance).
    warnings: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        """0 everything mirrored; 1 some assets (or the run) failed. Others come from errors."""
        return 0 if self.outcome in ("ok", "dry-run") else 1

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["failures"] = [asdict(f) for f in self.failures]
        data["failures_truncated"] = self.failed > len(self.failures)
        data["exit_code"] = self.exit_code
        return data
