"""This prefetcher's seat in DEST's shared disk budget (the books: :mod:`engine.manifest.budget`).

Every prefetcher of a DEST takes a seat when its session opens, with or without a budget: the
prefetchers of one DEST must agree on ``max_bytes`` (a prefetcher without one would fill the
disk behind the others' backs; two budgets cannot both hold), and a seat says which one is in
force. The seat is alive while this process holds a lock on its byte of
``<manifest>.holders.lock`` (Linux open-file-description locks, as for the fetch locks): a killed
prefetcher's pins and reservations are cleared by the next one that looks, and never block the
others for longer.

With a budget, the seat carries what the books must learn from this process, in order:

* pins (:class:`~engine.prefetch.window.Pins`): the items of its epochs not passed yet. New pins
  are written (:meth:`BudgetSeat.flush`) before the planner looks at the disk, so a file the
  planner finds in place cannot be evicted by another process before the consumer has it;
* files placed: a download's file joins the books once its manifest row is committed (an
  ``After`` item of the manifest writer), so an eviction never marks evicted a row whose commit
  is still to come; until then the download's reservation counts its bytes;
* reservations given back (failed or cut downloads), and files found in place that the books did
  not count yet.

A seat outlives its session while its process lives, if the session's last epoch handed items
out (``hold``): its consumer may read them after the session closed (a DataLoader worker ends
its iteration while the main process still has the items it yielded last in its queue). Such a
seat keeps the pins of those items and its liveness lock until the process's next seat on the
same manifest replaces it, or the process ends.

A download starts after :meth:`BudgetSeat.admit` reserved its bytes, evicting unpinned files in
the books' order (most recently used first: :mod:`engine.manifest.budget` says why). Evictions
delete the file without following links (:func:`engine.pipeline.dest_files.remove_file`) and
mark the asset ``evicted`` in the same transaction.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

import anyio

from engine.errors import EngineError, LocalStorageError, UsageError
from engine.host import pid_alive
from engine.manifest import Manifest
from engine.manifest import budget as books
from engine.pipeline.dest_files import remove_file
from engine.pipeline.sharing import NO_FLOCK, open_lock_file
from engine.pipeline.writer import ManifestAccess
from engine.prefetch.items import PrefetchStats
from engine.prefetch.locking import others_hold, range_lock
from engine.prefetch.window import Pins
from engine.state_folder import StateFolder

__all__ = ["BudgetSeat"]

log = logging.getLogger("engine.prefetch")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _LeftBehind:
    holder: int
    fd: int
    pid: int  # a forked child inherits the table: only its own process may retire the seat


# Per holders lock (one per manifest): the seat this process's last session left behind.
_LEFT_BEHIND: dict[Path, _LeftBehind] = {}


def _take_left_behind(path: Path) -> _LeftBehind | None:
    left = _LEFT_BEHIND.pop(path, None)
    if left is not None and left.pid != os.getpid():
        os.close(left.fd)  # our copy of the parent's descriptor: its seat is not ours
        return None
    return left


class BudgetSeat:
    """``await seat.join()`` … ``await seat.leave()``; see the module docstring."""

    def __init__(
        self,
        manifest: Manifest,
        db: ManifestAccess,
        dest: Path,
        budget: int | None,
        stats: PrefetchStats,
    ) -> None:
        self.manifest = manifest
        self.db = db
        self.dest = dest
        self.budget = budget
        self.stats = stats
        self.pins = Pins()
        self.changes = books.Changes()
        self.holder: int | None = None
        self._path = Path()
        # One transaction at a time from this seat, in the order they were asked: the pins and
        # releases each carries must reach the books in order.
        self._lock = anyio.Lock()
        self._fd = -1
        self._locks = True

    # -- liveness ------------------------------------------------------------------------------

    def _hold(self, holder: int) -> None:
        if not self._locks:
            return
        try:
            range_lock(self._fd, fcntl.F_WRLCK, holder)
        except OSError as exc:
            if exc.errno not in NO_FLOCK:
                raise UsageError(f"cannot lock {self.dest}: {exc.strerror}") from None
            log.warning("no file locks on %s: prefetchers are known alive by their pid", self.dest)
            self._locks = False

    def _alive(self, holder: int, pid: int) -> bool:
        held = others_hold(self._fd, holder) if self._locks else None
        if held is not None:
            return held
        # No locks here: a process of that pid on this machine stands for the holder.
        return pid_alive(pid)

    # -- joining and leaving --------------------------------------------------------------------

    async def join(self) -> bool:
        """Take a seat; True if this is the only prefetcher of DEST now."""
        self._path = StateFolder(self.dest).holders_lock(self.manifest.path)
        self._fd = open_lock_file(self._path)
        left = _take_left_behind(self._path)
        joined = functools.partial(
            books.join,
            budget=self.budget,
            pid=os.getpid(),
            now=time.time(),
            alive=self._alive,
            hold=self._hold,
            retire=left.holder if left is not None else None,
        )
        try:
            self.holder, first = await self._books("join the prefetchers of DEST", joined)
        except BaseException:
            self._close_fd()
            if left is not None:
                _LEFT_BEHIND[self._path] = left  # not retired: it still stands
            raise
        if left is not None:
            os.close(left.fd)
        return first

    async def leave(self) -> None:
        stay = False
        try:
            async with self._lock:
                holder, self.holder = self.holder, None
                if holder is None:
                    return
                # The items handed out last stay pinned while this process lives (see above).
                stay = bool(self.pins.bequest)
                older = _take_left_behind(self._path) if stay else None
                left = functools.partial(
                    books.leave,
                    holder=holder,
                    changes=self._take(),
                    stay=stay,
                    retire=older.holder if older is not None else None,
                    now=time.time(),
                )
                try:
                    await self._books("leave the prefetchers of DEST", left)
                except BaseException:
                    stay = False
                    if older is not None:
                        _LEFT_BEHIND[self._path] = older
                    raise
                if older is not None:
                    os.close(older.fd)
                if stay:
                    _LEFT_BEHIND[self._path] = _LeftBehind(holder, self._fd, os.getpid())
        finally:
            if not stay:
                self._close_fd()

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)  # drops the liveness lock: a seat left behind is cleared by the next

    # -- what the books learn -------------------------------------------------------------------

    def known(self, asset_id: str, path: str, size: int) -> None:
        """A file the planner found in place (the books count it if they did not yet)."""
        self.changes.known.append((asset_id, path, size))

    def placed(self, asset_id: str, path: str, size: int, reserved: int) -> None:
        """A download's file is in place and its row committed: it replaces its reservation."""
        self.changes.placed.append((asset_id, path, size))
        self.changes.released += reserved

    def released(self, reserved: int) -> None:
        """A download that placed nothing gives its reservation back."""
        self.changes.released += reserved

    def _take(self) -> books.Changes:
        """Everything the books have not heard yet (the pins included), handed over."""
        added, removed = self.pins.drain()
        self.changes.pinned += added
        self.changes.unpinned += removed
        changes, self.changes = self.changes, books.Changes()
        return changes

    @property
    def pending(self) -> bool:
        return self.pins.pending or bool(self.changes)

    async def flush(self) -> None:
        """Write what the books must know now (new pins: before the planner looks at the disk)."""
        async with self._lock:
            if self.holder is None or not self.pending:
                return
            step = functools.partial(books.apply_changes, holder=self.holder, changes=self._take())
            await self._books("record the prefetcher's pins", step)

    # -- room -----------------------------------------------------------------------------------

    async def admit(self, asset_id: str, path: str, reserve: int, *, must: bool) -> books.Admission:
        """Reserve room for a download (evicting as needed); not granted: wait and ask again."""
        assert self.holder is not None and self.budget is not None
        async with self._lock:
            holder, budget = self.holder, self.budget
            changes = self._take()

            def step(conn: sqlite3.Connection) -> books.Admission:
                books.apply_changes(conn, holder, changes)
                return books.admit(
                    conn,
                    holder,
                    budget,
                    asset_id=asset_id,
                    path=path,
                    reserve=reserve,
                    must=must,
                    unlink=self._unlink,
                    alive=self._alive,
                )

            admission = await self._books("reserve disk room", step)
        self._account(admission)
        if admission.forced:
            self.stats.over_budget_starts += 1
            log.warning(
                "disk budget too small for the look-ahead: fetching the next item over it "
                "(%d bytes on the books, budget %d)",
                admission.usage,
                budget,
            )
        return admission

    def grow(self, extra: int) -> None:
        """A download in flight is ``extra`` bytes larger than its reservation, and writes its
        first byte when this returns: reserve and evict now, on the caller's thread (the
        transfer core's progress callback cannot wait). Only the reservation and evictions are
        written here, never the pins and releases in waiting, which must reach the books in
        order; the pins the evictions respect are all written (they are before the planner
        looks at the disk)."""
        if self.holder is None or self.budget is None:
            return
        step = functools.partial(
            books.grow, holder=self.holder, budget=self.budget, extra=extra, unlink=self._unlink
        )
        try:
            admission = self.manifest.budget_books("reserve disk room", step)
        except EngineError as exc:
            log.warning("could not reserve disk room for a larger download: %s", exc)
            self.changes.released -= extra  # counted when its release comes: keep it balanced
            return
        self._account(admission)
        if admission.forced:
            self.stats.over_budget_starts += 1
            log.warning("disk budget exceeded by a download larger than its reservation")

    def _account(self, admission: books.Admission) -> None:
        stats = self.stats
        stats.peak_usage = max(stats.peak_usage, admission.usage)
        for _, _, size in admission.evicted:
            stats.evicted += 1
            stats.evicted_bytes += size

    def _unlink(self, path: str) -> bool:
        """Delete an evicted file; False if it must stay on the books (it could not go)."""
        try:
            remove_file(self.dest, PurePosixPath(path))
        except (OSError, LocalStorageError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else str(exc)
            log.warning("could not evict %s: %s", path, why)
            return False
        return True

    async def _books(self, doing: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        # Shielded: the changes ``fn`` carries were taken from the seat, and a cancel while it
        # waits for the manifest's thread would lose them (a file placed and never counted,
        # found by sampling DEST with the workers stopped: 500 KB over a 5 MiB budget).
        with anyio.CancelScope(shield=True):
            result = await self.db.call(self.manifest.budget_books, doing, fn)
        return result
