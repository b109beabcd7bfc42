"""Pure bookkeeping of one prefetch epoch: look-ahead, priority, readiness and the disk budget.

No I/O and no async here (the async side, :mod:`engine.prefetch.epoch`, asks and obeys), so
every rule below is property-tested (``tests/prefetch/test_window.py``).

Positions are the epoch's items in order, ``0, 1, 2, ...`` (this worker's share of them). The
planner registers them in order (:meth:`Window.plan`) and resolves each to *on disk already*,
*to download*, *failed* or *skipped*; the fetchers start downloads when :meth:`next_download`
allows; the consumer takes items when :meth:`next_yield` offers one.

Look-ahead. ``items`` bounds how far downloads run ahead of the consumer:

* ordered: a download starts only for a position below ``head + items``, where ``head`` is the
  next position the consumer will take; so the storage never sees a request for an item more than
  ``items`` places ahead;
* as_completed: at most ``items`` downloads are in flight or finished and not yet taken.

``bytes_ahead`` bounds the bytes fetched ahead: a new download starts only while the bytes of
finished-but-not-taken downloads plus the reservations of those in flight are below it, so the
look-ahead exceeds it by at most the downloads in flight. Files already on disk cost nothing.

Priority. The next download is always the lowest queued position: the item the consumer needs
next is never behind the rest of the window. The head itself is exempt from ``bytes_ahead`` (a
file larger than the window still gets fetched).

Disk budget (:class:`DiskBooks`, with ``max_bytes``). ``usage`` counts the files on disk
(those the session tracks one by one, plus ``cold``: the bytes the manifest recorded at the start
that nothing touched since) and a reservation for each download in flight (its size when known,
else ``unknown_size``). A download starts only if ``usage + reservation`` fits once evictable
files are gone. An item is *protected* from registration until it is taken, and the last ``hold``
items taken stay protected (the consumer is reading them); every other file on disk is
evictable, least recently used first: ``cold`` files (not touched since the start) before files
the consumer passed, these in the order they were passed. When nothing can fit, only the head may
start (over budget), so the epoch never deadlocks; the budget should leave room for the window
and the held items.
"""

from __future__ import annotations

import enum
import heapq
from collections import OrderedDict, deque
from dataclasses import dataclass

__all__ = ["DiskBooks", "Slot", "SlotState", "Start", "Window"]

MiB = 1024 * 1024


class SlotState(enum.Enum):
    PLANNING = "planning"  # registered, not resolved yet (its chunk is being planned)
    QUEUED = "queued"  # needs a download that has not started
    ACTIVE = "active"  # downloading
    DONE = "done"  # the file is on disk
    FAILED = "failed"  # cannot be had; the consumer gets the failure


@dataclass(slots=True)
class Slot:
    key: str  # asset id
    state: SlotState = SlotState.PLANNING
    size: int = 0  # DONE: the file's size; ACTIVE: its reservation
    hint: int | None = None  # QUEUED: the size if known beforehand
    replaces: int = 0  # bytes of an untouched file at this path that the download replaces
    downloaded: bool = False  # DONE through a download (counts as look-ahead bytes)
    meta: bool = False  # tags and annotations are in

    @property
    def resolved(self) -> bool:
        return (self.state is SlotState.DONE and self.meta) or self.state is SlotState.FAILED


@dataclass(frozen=True, slots=True)
class Start:
    """A download allowed to start: evict ``free`` bytes first; ``forced``: over budget, it is
    the only way forward."""

    position: int
    reserve: int
    free: int = 0
    forced: bool = False


class Window:
    def __init__(
        self,
        *,
        items: int,
        bytes_ahead: int | None = None,
        books: DiskBooks | None = None,
        hold: int = 1,
        ordered: bool = True,
        unknown_size: int = MiB,
    ) -> None:
        if items < 1:
            raise ValueError("the window must hold at least one item")
        if hold < 0:
            raise ValueError("hold must be >= 0")
        if bytes_ahead is not None and bytes_ahead < 1:
            raise ValueError("bytes_ahead must be positive")
        self.items = items
        self.bytes_ahead = bytes_ahead
        self.hold = hold
        self.ordered = ordered
        self.unknown_size = max(1, unknown_size)
        self.source_done = False
        self._slots: dict[int, Slot] = {}
        self._planned = 0  # the next position to register
        self._head = 0  # the lowest position not taken
        self._queued: list[int] = []  # heap, lazily cleaned
        self._n_queued = 0
        self._resolved: deque[int] = deque()  # as_completed: in the order they resolved
        self._active = 0
        self._ahead = 0
        self._finished_ahead = 0  # downloads done and not taken (as_completed's count)
        # The budget's books outlive the epoch (files stay on disk from one epoch to the next).
        self.books = books
        self._held: deque[str] = deque()

    # -- what the async side reads ------------------------------------------------------------

    @property
    def head(self) -> int:
        """The lowest position not taken yet (ordered: the next one the consumer gets)."""
        self._advance()
        return self._head

    @property
    def planned(self) -> int:
        return self._planned

    @property
    def outstanding(self) -> int:
        """Registered positions not taken yet (what the planner's look-ahead is bounded by)."""
        return len(self._slots)

    @property
    def active(self) -> int:
        return self._active

    @property
    def queued(self) -> int:
        """Downloads waiting to start."""
        return self._n_queued

    @property
    def ahead_bytes(self) -> int:
        return self._ahead

    def slot(self, position: int) -> Slot | None:
        return self._slots.get(position)

    def done(self) -> bool:
        """Every position of the epoch was registered and taken (or skipped)."""
        return self.source_done and not self._slots

    # -- the planner -----------------------------------------------------------------------

    def plan(self, position: int, key: str) -> None:
        if position != self._planned:
            raise ValueError(f"positions are registered in order: {self._planned} expected")
        self._slots[position] = Slot(key)
        self._planned += 1
        if self.books is not None:
            self.books.protect(key)

    def on_disk(self, position: int, size: int) -> None:
        """The file is already on disk (mirrored earlier, or kept from an earlier epoch)."""
        slot = self._planning(position)
        slot.state = SlotState.DONE
        slot.size = size
        if self.books is not None:
            self.books.add_resident(slot.key, size, from_cold=size)
        self._maybe_resolve(position, slot)

    def queue(self, position: int, *, hint: int | None = None, replaces: int = 0) -> None:
        """The file must be downloaded. ``hint``: its size if known; ``replaces``: the size of a
        file at its path that the download will replace (counted as cold until then)."""
        slot = self._planning(position)
        slot.state = SlotState.QUEUED
        slot.hint = hint
        slot.replaces = replaces
        heapq.heappush(self._queued, position)
        self._n_queued += 1

    def fail(self, position: int) -> None:
        """The item cannot be had (for example: gone from the platform)."""
        slot = self._slots[position]
        if slot.state is SlotState.ACTIVE:
            self._end_download(slot)
        elif slot.state is SlotState.QUEUED:
            self._n_queued -= 1
        slot.state = SlotState.FAILED
        slot.meta = True
        self._unprotect(slot.key)
        self._maybe_resolve(position, slot)

    def skip(self, position: int) -> None:
        """The item is left out of the epoch without the consumer seeing it."""
        slot = self._planning(position)
        del self._slots[position]
        self._unprotect(slot.key)

    def meta_done(self, position: int) -> None:
        slot = self._slots.get(position)
        if slot is not None and not slot.meta:
            slot.meta = True
            self._maybe_resolve(position, slot)

    # -- the fetchers ----------------------------------------------------------------------

    def next_download(self) -> Start | None:
        """The download to start now, if any: always the lowest queued position."""
        while self._queued:
            top = self._slots.get(self._queued[0])
            if top is not None and top.state is SlotState.QUEUED:
                break
            heapq.heappop(self._queued)
        else:
            return None
        position = self._queued[0]
        slot = self._slots[position]
        must = position == self.head  # the consumer waits for this one
        if self.ordered:
            if position >= self._head + self.items:
                return None
        elif self._active + self._finished_ahead >= self.items:
            return None
        if self.bytes_ahead is not None and self._ahead >= self.bytes_ahead and not must:
            return None
        reserve = slot.hint if slot.hint is not None else self.unknown_size
        books = self.books
        if books is None:
            return Start(position, reserve)
        over = books.usage + reserve - books.budget
        if over <= 0:
            return Start(position, reserve)
        if over <= books.evictable:
            return Start(position, reserve, free=over)
        # Nothing else can make room: later items wait for the consumer to pass some; the one it
        # needs next goes over budget rather than stall everything (ordered: the downloads in
        # flight are of later items, which the consumer cannot take before this one).
        if must and (self.ordered or self._active == 0):
            return Start(position, reserve, free=books.evictable, forced=True)
        return None

    def start(self, start: Start) -> None:
        position = heapq.heappop(self._queued)
        if position != start.position:
            raise ValueError("start the download next_download() offered")
        slot = self._slots[position]
        slot.state = SlotState.ACTIVE
        slot.size = start.reserve
        self._n_queued -= 1
        self._active += 1
        self._ahead += start.reserve
        if self.books is not None:
            self.books.reserved += start.reserve

    def size_known(self, position: int, total: int) -> int:
        """The server told the size of a download in flight (before any byte is written).
        Returns how far over budget the books now are (to evict at once)."""
        slot = self._slots.get(position)
        if slot is None or slot.state is not SlotState.ACTIVE or total <= slot.size:
            return 0
        grow = total - slot.size
        slot.size = total
        self._ahead += grow
        if self.books is None:
            return 0
        self.books.reserved += grow
        return max(0, self.books.usage - self.books.budget)

    def finished(self, position: int, size: int) -> None:
        """The download is complete and its file in place."""
        slot = self._slots[position]
        self._end_download(slot)
        slot.state = SlotState.DONE
        slot.size = size
        slot.downloaded = True
        self._ahead += size
        self._finished_ahead += 1
        if self.books is not None:
            self.books.add_resident(slot.key, size, from_cold=slot.replaces)
        self._maybe_resolve(position, slot)

    # -- the consumer -----------------------------------------------------------------------

    def next_yield(self) -> int | None:
        """The position the consumer can take now, if any."""
        if self.ordered:
            slot = self._slots.get(self.head)
            return self._head if slot is not None and slot.resolved else None
        while self._resolved and self._resolved[0] not in self._slots:
            self._resolved.popleft()
        return self._resolved[0] if self._resolved else None

    def take(self, position: int) -> Slot:
        """The consumer takes ``position``; the item taken ``hold`` takes ago is passed."""
        slot = self._slots.get(position)
        if slot is None or not slot.resolved:
            raise ValueError(f"position {position} is not ready to be taken")
        if self.ordered and position != self.head:
            raise ValueError(f"ordered: position {self._head} comes first")
        del self._slots[position]
        if self._resolved and self._resolved[0] == position:
            self._resolved.popleft()
        if slot.downloaded:
            self._ahead -= slot.size
            self._finished_ahead -= 1
        if slot.state is SlotState.DONE:
            self._held.append(slot.key)
            while len(self._held) > self.hold:
                self._unprotect(self._held.popleft())
        return slot

    def close(self) -> None:
        """The epoch is over (finished or cut short, its downloads ended): nothing it still
        holds is protected any more."""
        for slot in self._slots.values():
            if slot.state is SlotState.ACTIVE:
                self._end_download(slot)
            if slot.state is not SlotState.FAILED:
                self._unprotect(slot.key)
        self._slots.clear()
        self._queued.clear()
        self._n_queued = 0
        while self._held:
            self._unprotect(self._held.popleft())

    # -- internals --------------------------------------------------------------------------

    def _planning(self, position: int) -> Slot:
        slot = self._slots[position]
        if slot.state is not SlotState.PLANNING:
            raise ValueError(f"position {position} is already resolved ({slot.state.value})")
        return slot

    def _advance(self) -> None:
        while self._head < self._planned and self._head not in self._slots:
            self._head += 1

    def _maybe_resolve(self, position: int, slot: Slot) -> None:
        if slot.resolved and not self.ordered:
            self._resolved.append(position)

    def _end_download(self, slot: Slot) -> None:
        self._active -= 1
        self._ahead -= slot.size
        if self.books is not None:
            self.books.reserved -= slot.size

    def _unprotect(self, key: str) -> None:
        if self.books is not None:
            self.books.unprotect(key)


class DiskBooks:
    """The disk budget's books for a prefetcher's session (its epochs share them).

    ``usage`` = files on disk known one by one (``resident``) + ``cold`` (bytes the manifest
    recorded at the start that nothing touched since) + ``reserved`` (downloads in flight). A
    file is *protected* while some epoch position or held item refers to it; the others are
    evictable: cold ones first (least recently used: before this session), then the passed ones
    in the order they were passed.
    """

    def __init__(self, budget: int, *, cold: int = 0) -> None:
        if budget < 1:
            raise ValueError("the disk budget must be positive")
        self.budget = budget
        self.cold = max(0, cold)
        self.reserved = 0
        self._resident: dict[str, int] = {}
        self._resident_total = 0
        self._protect: dict[str, int] = {}
        self._lru: OrderedDict[str, int] = OrderedDict()
        self._lru_total = 0

    @property
    def usage(self) -> int:
        return self._resident_total + self.cold + self.reserved

    @property
    def evictable(self) -> int:
        return self._lru_total + self.cold

    @property
    def passed(self) -> int:
        """Bytes of files that were passed and can go (not counting cold ones)."""
        return self._lru_total

    def protected(self, key: str) -> bool:
        """Whether ``key``'s file must stay: an item not taken yet, or one of the held ones."""
        return key in self._protect

    def known(self, key: str) -> bool:
        """Whether ``key`` is tracked one by one: its file, or an item registered for it."""
        return key in self._resident or key in self._protect

    def resident(self, key: str) -> bool:
        """Whether ``key``'s file is on the books as on disk (so it is not part of ``cold``)."""
        return key in self._resident

    def protect(self, key: str) -> None:
        self._protect[key] = self._protect.get(key, 0) + 1
        size = self._lru.pop(key, None)
        if size is not None:
            self._lru_total -= size

    def unprotect(self, key: str) -> None:
        left = self._protect.get(key, 0) - 1
        if left > 0:
            self._protect[key] = left
            return
        self._protect.pop(key, None)
        size = self._resident.get(key)
        if size is not None:
            self._lru[key] = size
            self._lru_total += size

    def add_resident(self, key: str, size: int, *, from_cold: int) -> None:
        """``key``'s file is on disk with ``size`` bytes; ``from_cold``: bytes of cold files
        this accounts for (the file itself when it was found on disk, or the file a download
        replaced at its path)."""
        old = self._resident.get(key)
        if old is None:
            self.cold -= min(self.cold, from_cold)
        else:
            self._resident_total -= old
            if key in self._lru:
                self._lru_total += size - old
                self._lru[key] = size
        self._resident[key] = size
        self._resident_total += size

    def victims(self, need: int) -> list[tuple[str, int]]:
        """Passed files to delete, least recently used first, until ``need`` bytes are freed
        (or none is left). They leave the books now: the caller deletes them."""
        out: list[tuple[str, int]] = []
        freed = 0
        while freed < need and self._lru:
            key, size = self._lru.popitem(last=False)
            self._lru_total -= size
            del self._resident[key]
            self._resident_total -= size
            out.append((key, size))
            freed += size
        return out

    def cold_evicted(self, size: int) -> None:
        """An untouched file (counted in ``cold``) was deleted, or found to be gone."""
        self.cold -= min(self.cold, size)
