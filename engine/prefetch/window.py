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

Disk budget (``max_bytes``). The budget's books are shared by every prefetcher of DEST and kept
in the manifest (:mod:`engine.manifest.budget`); what the window owns is this process's side of
them, :class:`Pins`: an item is *protected* from registration until it is taken, and the last
``hold`` items taken stay protected (the consumer is reading them). A download the window offers
(:meth:`Window.next_download`) starts only once the books admit it, evicting unprotected files
first; ``Start.must`` marks the one the consumer waits for, which the books let go over the
budget when nothing else can make room, so an epoch never deadlocks.
"""

from __future__ import annotations

import enum
import heapq
from collections import deque
from dataclasses import dataclass

__all__ = ["Pins", "Slot", "SlotState", "Start", "Window"]

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
    downloaded: bool = False  # DONE through a download (counts as look-ahead bytes)
    meta: bool = False  # tags and annotations are in

    @property
    def resolved(self) -> bool:
        return (self.state is SlotState.DONE and self.meta) or self.state is SlotState.FAILED


@dataclass(frozen=True, slots=True)
class Start:
    """A download the window allows (a disk budget may still make it wait): ``reserve`` bytes
    to set aside for it; ``must``: the consumer cannot go on without it."""

    position: int
    reserve: int
    must: bool = False


class Window:
    def __init__(
        self,
        *,
        items: int,
        bytes_ahead: int | None = None,
        pins: Pins | None = None,
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
        # The pins outlive the epoch (files stay on disk from one epoch to the next).
        self.pins = pins
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
        if self.pins is not None:
            self.pins.protect(key)

    def on_disk(self, position: int, size: int) -> None:
        """The file is already on disk (mirrored earlier, or kept from an earlier epoch)."""
        slot = self._planning(position)
        slot.state = SlotState.DONE
        slot.size = size
        self._maybe_resolve(position, slot)

    def queue(self, position: int, *, hint: int | None = None) -> None:
        """The file must be downloaded. ``hint``: its size if known."""
        slot = self._planning(position)
        slot.state = SlotState.QUEUED
        slot.hint = hint
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
        # Over a budget, only the item the consumer waits for may go past it (ordered: the
        # downloads in flight are of later items, which the consumer cannot take before it).
        return Start(position, reserve, must=must and (self.ordered or self._active == 0))

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

    def size_known(self, position: int, total: int) -> int:
        """The server told the size of a download in flight (before any byte is written).
        Returns how many bytes it needs beyond its reservation (to reserve at once)."""
        slot = self._slots.get(position)
        if slot is None or slot.state is not SlotState.ACTIVE or total <= slot.size:
            return 0
        grow = total - slot.size
        slot.size = total
        self._ahead += grow
        return grow

    def finished(self, position: int, size: int) -> None:
        """The download is complete and its file in place."""
        slot = self._slots[position]
        self._end_download(slot)
        slot.state = SlotState.DONE
        slot.size = size
        slot.downloaded = True
        self._ahead += size
        self._finished_ahead += 1
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
        """The epoch is over (finished or cut short, its downloads ended): the items it did not
        hand out are no longer protected. The last ``hold`` handed out stay protected, handed
        to the pins (:meth:`Pins.bequeath`): the consumer may still be reading them after the
        epoch ended (a DataLoader's main process reads what a worker yielded later)."""
        for slot in self._slots.values():
            if slot.state is SlotState.ACTIVE:
                self._end_download(slot)
            if slot.state is not SlotState.FAILED:
                self._unprotect(slot.key)
        self._slots.clear()
        self._queued.clear()
        self._n_queued = 0
        if self.pins is not None:
            self.pins.bequeath(list(self._held))
        self._held.clear()

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

    def _unprotect(self, key: str) -> None:
        if self.pins is not None:
            self.pins.unprotect(key)


class Pins:
    """The files this process must keep on disk, and what changed since :meth:`drain`.

    A key is protected while some epoch position or held item refers to it (counted: the same
    asset can be in two epochs' windows). The shared books learn only the transitions: a key
    protected and let go between two drains never reaches them.
    """

    def __init__(self) -> None:
        self._count: dict[str, int] = {}
        self._bequest: list[str] = []  # the items a closed epoch handed out last
        # Ordered sets (dicts): let-go keys keep the order they were passed in, the order in
        # which the books will evict them.
        self._added: dict[str, None] = {}
        self._removed: dict[str, None] = {}

    def protected(self, key: str) -> bool:
        return key in self._count

    def __len__(self) -> int:
        return len(self._count)

    def protect(self, key: str) -> None:
        count = self._count.get(key, 0)
        self._count[key] = count + 1
        if count == 0:
            if key in self._removed:
                del self._removed[key]
            else:
                self._added[key] = None

    def unprotect(self, key: str) -> None:
        count = self._count.get(key, 0) - 1
        if count > 0:
            self._count[key] = count
            return
        if count < 0:
            return  # never protected: nothing to let go
        del self._count[key]
        if key in self._added:
            del self._added[key]
        else:
            self._removed[key] = None

    @property
    def bequest(self) -> list[str]:
        return list(self._bequest)

    def bequeath(self, keys: list[str]) -> None:
        """A closed epoch's last items handed out stay protected (their counts come with them)
        until the next epoch closes and bequeaths its own."""
        old, self._bequest = self._bequest, keys
        for key in old:
            self.unprotect(key)

    @property
    def pending(self) -> bool:
        return bool(self._added or self._removed)

    def drain(self) -> tuple[list[str], list[str]]:
        """(newly protected, let go in the order they were let go) since the last drain."""
        added, removed = list(self._added), list(self._removed)
        self._added.clear()
        self._removed.clear()
        return added, removed
