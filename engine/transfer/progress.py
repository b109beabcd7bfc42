"""What a transfer tells the outside world while it runs, and the counters it keeps."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

__all__ = ["EventKind", "ProgressEvent", "TransferStats"]

EventKind = Literal["start", "bytes", "retry", "refresh", "restart", "done", "failed"]


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """One step of one transfer, for the scheduler and the progress bar.

    ``kind``:
      ``start``   the size is known (``total``) and ``done`` bytes were already on disk;
      ``bytes``   ``delta`` new bytes landed (``done`` of ``total`` now);
      ``retry``   an attempt failed and will be retried (``delta`` = 0);
      ``refresh`` the signed URL was refreshed;
      ``restart`` the object changed: ``done`` went back to 0 (``delta`` is negative);
      ``done``    the file is in place; ``failed`` the transfer gave up.
    ``total`` is None while the size is unknown.
    """

    asset_id: str
    data_id: str
    kind: EventKind
    delta: int
    done: int
    total: int | None


@dataclass(slots=True)
class TransferStats:
    """Totals over every fetch of one :class:`~engine.transfer.Transferer`."""

    files: int = 0
    bytes: int = 0
    retries: int = 0
    refreshes: int = 0
    resumes: int = 0
    restarts: int = 0
    failures: int = 0
    pumped: int = 0  # bodies read by a pump thread straight from the socket

    def snapshot(self) -> dict[str, int]:
        return asdict(self)
