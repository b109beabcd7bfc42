"""Room on the disk for what servers send: a reserve that downloads never eat into.

A body of unannounced length, or an object as large as a server claims, could fill the disk
(19 GB in 60 s, measured, from a server sending for ever). :class:`DiskGuard` keeps
``transfer.disk_reserve`` bytes free on the file system of the partial files: every writer
charges its bytes before writing them, and the free space is looked at (one ``fstatvfs``) only
when the bytes written since the last look could have used up half the room that look found,
and at most every :data:`CHECK_EVERY` bytes. Far from the reserve that is one system call per
64 MiB written by the whole run; near it, ever more often, so that the run stops with
:class:`~engine.errors.DiskFullError` (partial files kept for a later resume) before the disk
is actually full.

Writers on pump threads charge too. The counter is updated without a lock: a lost update
delays a look by a few chunks, nothing worse, and the hot path stays an addition.
"""

from __future__ import annotations

import os

from engine.errors import DiskFullError, LocalStorageError
from engine.transfer.partial import PartialDir

__all__ = ["CHECK_EVERY", "DiskGuard"]

CHECK_EVERY = 64 * 1024 * 1024


class DiskGuard:
    """The reserve of one run's partial folder (one per :class:`~engine.transfer.Transferer`)."""

    def __init__(self, folder: PartialDir, reserve: int, *, every: int = CHECK_EVERY) -> None:
        self._folder = folder
        self.reserve = reserve
        self._every = every
        # Bytes charged since the last look, and when the next look is due: the run's first
        # write looks at once.
        self._since = 0
        self._due = 0 if reserve > 0 else 1 << 62
        self._room = 0  # free bytes above the reserve at the last look

    def charge(self, n: int) -> None:
        """``n`` bytes are about to be written (from any thread). Raises DiskFullError when
        the free space has fallen below the reserve."""
        self._since += n
        if self._since >= self._due:
            self._look()

    def room_for(self, n: int, what: str) -> None:
        """A download of ``n`` more bytes is about to start: raise LocalStorageError (that
        object fails, the run goes on) if they cannot fit above the reserve."""
        if self.reserve <= 0 or n <= self._room - self._since:
            return  # fits by the last look: no system call
        room = self._free() - self.reserve
        if n > room:
            raise LocalStorageError(
                f"{what}: {n} bytes do not fit on {self._folder.path}'s disk, which has "
                f"{max(room, 0)} bytes free above transfer.disk_reserve ({self.reserve})"
            )

    def _look(self) -> None:
        free = self._free()
        self._since = 0
        self._room = free - self.reserve
        # Look again once half the room could be gone (CHECK_EVERY at most, every byte when
        # there is no room at all), so the reserve is never crossed by more than one chunk
        # per writer.
        self._due = min(self._every, max(self._room // 2, 0))
        if free < self.reserve:
            raise DiskFullError(
                f"{self._folder.path}: {free} bytes free, below transfer.disk_reserve "
                f"({self.reserve}); stopping before the disk is full (partial files kept for "
                "resume)"
            )

    def _free(self) -> int:
        try:
            stats = os.fstatvfs(self._folder.fd)
        except OSError:
            return 1 << 62  # a file system that cannot say: writes will say it instead
        return stats.f_bavail * stats.f_frsize
