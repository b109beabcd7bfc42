"""Property tests of the pure look-ahead / priority / pins bookkeeping (engine.prefetch.window).

A simulation drives a :class:`Window` (and its :class:`Pins`) the way the async side does, with
random interleavings of planning, downloads, sizes discovered late and a consumer, over two
epochs sharing the pins. After every step:

* look-ahead: an ordered download never starts ``items`` or more places past the consumer; in
  as_completed mode, never more than ``items`` downloads are in flight or waiting;
* priority: the download offered is always the lowest queued position, and only the item the
  consumer waits for is marked ``must`` (the one a disk budget lets through when full);
* pins: exactly the items registered and not taken, and the last ``hold`` taken, are protected
  (what the shared books must never evict), and what :meth:`Pins.drain` reports adds up to that;
  a closed epoch leaves its last ``hold`` protected, until the next epoch closes;
* the consumer gets every item once, in order when ordered; the epoch always finishes.

The budget's arithmetic over those pins is tested in tests/prefetch/test_budget_books.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.prefetch.window import Pins, SlotState, Window

UNKNOWN = 100


@dataclass
class Books:
    """What the shared books know of this process's pins: the drained transitions, applied."""

    pinned: set[str] = field(default_factory=set)

    def drain(self, pins: Pins) -> None:
        added, removed = pins.drain()
        assert not set(added) & set(removed)
        for key in added:
            assert key not in self.pinned, "pinned twice"
            self.pinned.add(key)
        for key in removed:
            assert key in self.pinned, "let go of a pin never written"
            self.pinned.remove(key)


class Epoch:
    def __init__(self, pins: Pins, *, items: int, hold: int, ordered: bool):
        self.pins = pins
        self.hold = hold
        self.window = Window(
            items=items, pins=pins, hold=hold, ordered=ordered, unknown_size=UNKNOWN
        )
        self.keys: dict[int, str] = {}
        self.state: dict[int, str] = {}
        self.taken: list[int] = []
        self.held: list[str] = []
        self.meta: set[int] = set()
        self.sizes: dict[int, int] = {}  # queued position: its size
        self.inflight: dict[int, int] = {}  # position: size

    def protected(self) -> set[str]:
        live = {
            self.keys[p] for p, s in self.state.items() if s not in ("taken", "skipped", "failed")
        }
        return live | set(self.held[-self.hold :] if self.hold else [])


def _step(epoch: Epoch, data: st.DataObject, total: int, pool: list[str]) -> bool:
    """One random action; False when nothing could be done."""
    w = epoch.window
    actions = []
    if w.planned < total:
        actions.append("plan")
    planning = [p for p, s in epoch.state.items() if s == "planning"]
    if planning:
        actions.append("resolve")
    no_meta = [
        p
        for p, s in epoch.state.items()
        if s in ("done", "queued", "active", "downloaded") and p not in epoch.meta
    ]
    if no_meta:
        actions.append("meta")
    if w.next_download() is not None:
        actions.append("start")
    if epoch.inflight:
        actions += ["finish", "size"]
    if w.next_yield() is not None:
        actions.append("take")
    if not actions:
        return False
    action = data.draw(st.sampled_from(actions))

    if action == "plan":
        position = w.planned
        used = set(epoch.keys.values())
        choices = [k for k in pool if k not in used]
        key = data.draw(st.sampled_from(choices)) if choices else f"x{position}-{len(pool)}"
        epoch.keys[position] = key
        epoch.state[position] = "planning"
        w.plan(position, key)
    elif action == "resolve":
        position = data.draw(st.sampled_from(planning))
        choice = data.draw(st.sampled_from(["disk", "queue", "queue", "fail", "skip"]))
        if choice == "disk":
            epoch.state[position] = "done"
            w.on_disk(position, data.draw(st.integers(1, 3 * UNKNOWN)))
        elif choice == "queue":
            epoch.state[position] = "queued"
            hinted = data.draw(st.booleans())
            size = data.draw(st.integers(1, 3 * UNKNOWN))
            epoch.sizes[position] = size
            w.queue(position, hint=size if hinted else None)
        elif choice == "fail":
            epoch.state[position] = "failed"
            w.fail(position)
        else:
            epoch.state[position] = "skipped"
            w.skip(position)
    elif action == "meta":
        position = data.draw(st.sampled_from(no_meta))
        epoch.meta.add(position)
        w.meta_done(position)
    elif action == "start":
        start = w.next_download()
        assert start is not None
        queued = [p for p, s in epoch.state.items() if s == "queued"]
        assert start.position == min(queued), "priority: the lowest queued position first"
        if w.ordered:
            assert start.position < w.head + w.items
        if start.must:
            assert start.position == w.head, "only the item the consumer waits for is a must"
        if data.draw(st.integers(0, 3)) == 0:
            return True  # a disk budget refused it for now: the async side asks again later
        w.start(start)
        epoch.state[start.position] = "active"
        epoch.inflight[start.position] = epoch.sizes[start.position]
        if not w.ordered:
            waiting = sum(1 for p, s in epoch.state.items() if s == "downloaded")
            assert w.active + waiting <= w.items
    elif action == "size":
        position = data.draw(st.sampled_from(sorted(epoch.inflight)))
        slot = w.slot(position)
        assert slot is not None
        before = slot.size
        grow = w.size_known(position, epoch.inflight[position])
        assert grow == max(0, epoch.inflight[position] - before)
    elif action == "finish":
        position = data.draw(st.sampled_from(sorted(epoch.inflight)))
        size = epoch.inflight.pop(position)
        if data.draw(st.integers(0, 9)) == 0:
            epoch.state[position] = "failed"
            w.fail(position)
        else:
            epoch.state[position] = "downloaded"
            w.finished(position, size)
    elif action == "take":
        position = w.next_yield()
        assert position is not None
        if w.ordered:
            expected = min(p for p, s in epoch.state.items() if s not in ("taken", "skipped"))
            assert position == expected, "ordered: the next position in order"
        slot = w.take(position)
        if slot.state is SlotState.DONE:
            epoch.held.append(epoch.keys[position])
        epoch.state[position] = "taken"
        epoch.taken.append(position)
    return True


def _check_pins(epoch: Epoch, books: Books, data: st.DataObject) -> None:
    # The epoch's items, and those the epoch before it handed out last (its bequest).
    protected = epoch.protected() | set(epoch.pins.bequest)
    for key in protected:
        assert epoch.pins.protected(key), f"{key} must be protected"
    assert len(epoch.pins) == len(protected), "a key protected that nothing refers to"
    if data.draw(st.booleans()):
        books.drain(epoch.pins)
        assert books.pinned == protected, "the books' pins drift from the window's"


def _drain(epoch: Epoch, books: Books, data: st.DataObject, total: int, pool: list[str]) -> None:
    """Keep going until the epoch is over: it must never get stuck."""
    w = epoch.window
    steps = 0
    while not (w.planned == total and w.done()):
        steps += 1
        assert steps < 40 * total + 100, "the epoch made no progress"
        assert _step(epoch, data, total, pool), "deadlock: nothing to plan, start, finish or take"
        _check_pins(epoch, books, data)
        if w.planned == total:
            w.source_done = True


@settings(max_examples=150)
@given(
    data=st.data(),
    total=st.integers(1, 20),
    items=st.integers(1, 6),
    hold=st.integers(0, 3),
    ordered=st.booleans(),
)
def test_window_keeps_its_promises(data, total, items, hold, ordered):
    pins = Pins()
    books = Books()
    pool = [f"k{i}" for i in range(total)]
    for _epoch in range(2):
        epoch = Epoch(pins, items=items, hold=hold, ordered=ordered)
        _drain(epoch, books, data, total, pool)
        not_skipped = [p for p, s in epoch.state.items() if s != "skipped"]
        assert sorted(epoch.taken) == sorted(not_skipped), "every item handed out once"
        if ordered:
            assert epoch.taken == sorted(epoch.taken)
        epoch.window.close()
        # A closed epoch protects only the items it handed out last (the consumer may still
        # read them), and no longer those the epoch before it handed out last.
        last = set(epoch.held[-hold:]) if hold else set()
        assert set(pins.bequest) == last and len(pins) == len(last)
        books.drain(pins)
        assert books.pinned == last


def test_window_rejects_out_of_order_registration_and_takes():
    w = Window(items=2)
    w.plan(0, "a")
    with pytest.raises(ValueError, match="in order"):
        w.plan(2, "c")
    w.plan(1, "b")
    w.on_disk(1, 10)
    w.meta_done(1)
    with pytest.raises(ValueError, match="not ready"):
        w.take(0)
    assert w.next_yield() is None  # ordered: position 1 waits for position 0
    w.fail(0)
    assert w.next_yield() == 0
    w.take(0)
    assert w.next_yield() == 1


def test_as_completed_hands_out_in_completion_order():
    w = Window(items=3, ordered=False)
    for position in range(3):
        w.plan(position, f"k{position}")
        w.queue(position)
    starts = [w.next_download() for _ in range(1)]
    assert starts[0] is not None and starts[0].position == 0
    for _ in range(3):
        start = w.next_download()
        assert start is not None
        w.start(start)
    assert w.next_download() is None
    w.finished(2, 5)
    w.meta_done(2)
    w.finished(0, 5)
    w.meta_done(0)
    assert w.next_yield() == 2
    w.take(2)
    assert w.next_yield() == 0


def test_bytes_ahead_holds_back_all_but_the_head():
    w = Window(items=10, bytes_ahead=100, unknown_size=80)
    for position in range(3):
        w.plan(position, f"k{position}")
        w.queue(position)
    first = w.next_download()
    assert first is not None and first.position == 0
    w.start(first)
    second = w.next_download()
    assert second is not None  # 80 < 100: room for one more
    w.start(second)
    assert w.next_download() is None  # 160 >= 100: later items wait
    w.finished(0, 80)
    w.meta_done(0)
    assert w.next_download() is None  # 160 still ahead: finished but not taken counts
    w.take(0)
    third = w.next_download()  # 80 in flight < 100
    assert third is not None and third.position == 2


def test_pins_report_transitions_only_in_the_order_keys_were_let_go():
    pins = Pins()
    for key in "abcd":
        pins.protect(key)
    pins.protect("a")  # the same asset in a second window
    assert pins.drain() == (["a", "b", "c", "d"], [])
    for key in "cadb":
        pins.unprotect(key)
    assert pins.protected("a") and not pins.protected("c")
    pins.protect("d")  # needed again before the books heard it went: no transition at all
    pins.protect("e")
    pins.unprotect("e")  # protected and let go between two drains: the books never hear of it
    assert pins.drain() == ([], ["c", "b"])
    pins.unprotect("zz")  # never protected: nothing to let go
    assert not pins.pending
