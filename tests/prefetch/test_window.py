"""Property tests of the pure look-ahead / priority / budget bookkeeping (engine.prefetch.window).

A simulation drives a :class:`Window` (and its :class:`DiskBooks`) the way the async side does,
with random interleavings of planning, downloads, sizes discovered late, evictions and a
consumer, over two epochs sharing the books. A model of the disk (which files exist, and their
sizes) is kept beside it, and after every step:

* look-ahead: an ordered download never starts ``items`` or more places past the consumer; in
  as_completed mode, never more than ``items`` downloads are in flight or waiting;
* priority: the download started is always the lowest queued position;
* the books never count less than the model's disk holds (and exactly as much, in-flight
  reservations aside), so holding the books within the budget holds the disk within it;
* the disk stays within the budget unless the window had to force the head through;
* eviction never takes a protected file (an item not handed out yet, or one of the last
  ``hold`` handed out), and takes passed files in the order they were passed;
* the consumer gets every item once, in order when ordered; the epoch always finishes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from engine.prefetch.window import DiskBooks, SlotState, Window

UNKNOWN = 100


@dataclass
class Model:
    budget: int | None
    hold: int
    known: dict[str, int] = field(default_factory=dict)  # files on disk the books track
    cold: dict[str, int] = field(default_factory=dict)  # untouched files
    inflight: dict[int, tuple[str, int, bool]] = field(default_factory=dict)  # pos: key, size, big
    passed: list[str] = field(default_factory=list)  # keys in the order they became evictable
    forced: bool = False
    overflow: bool = False

    def on_disk(self) -> int:
        written = sum(size for _, size, big in self.inflight.values() if big)
        return sum(self.known.values()) + sum(self.cold.values()) + written


class Epoch:
    """One epoch of the simulation: registered positions and what the model knows of them."""

    def __init__(self, model: Model, books: DiskBooks | None, *, items: int, ordered: bool):
        self.model = model
        self.books = books
        self.window = Window(
            items=items,
            books=books,
            hold=model.hold,
            ordered=ordered,
            unknown_size=UNKNOWN,
            bytes_ahead=None,
        )
        self.keys: dict[int, str] = {}
        self.state: dict[int, str] = {}
        self.sizes: dict[int, int] = {}
        self.taken: list[int] = []
        self.held: list[str] = []
        self.meta: set[int] = set()

    def protected(self) -> set[str]:
        live = {self.keys[p] for p, s in self.state.items() if s not in ("taken", "skipped")}
        failed = {self.keys[p] for p, s in self.state.items() if s == "failed"}
        return (live - failed) | set(self.held[-self.model.hold :] if self.model.hold else [])


def _unprotected_now(epoch: Epoch, before: set[str]) -> None:
    after = epoch.protected()
    for key in sorted(before - after):
        if key in epoch.model.known and key not in after:
            epoch.model.passed.append(key)


def _check(epoch: Epoch) -> None:
    model, books = epoch.model, epoch.books
    if books is None:
        return
    settled = sum(model.known.values()) + sum(model.cold.values())
    assert books.usage - books.reserved == settled
    assert books.usage >= model.on_disk()
    if model.budget is not None and not model.forced and not model.overflow:
        assert model.on_disk() <= model.budget


def _evict(epoch: Epoch, need: int) -> None:
    """What the async side does: cold files first (manifest order), then passed ones."""
    model, books = epoch.model, epoch.books
    assert books is not None
    protected = epoch.protected()
    freed = 0
    for key in sorted(model.cold):
        if freed >= need:
            break
        if key in protected:
            continue
        size = model.cold.pop(key)
        event("evicted cold files")
        books.cold_evicted(size)
        freed += size
    if not [k for k in model.cold if k not in protected]:
        books.cold = min(books.cold, sum(model.cold.values()))
    if freed < need:
        victims = books.victims(need - freed)
        if victims:
            event("evicted passed files")
        for key, size in victims:
            assert key not in protected, "evicted a protected file"
            assert model.known.pop(key) == size
            assert model.passed[0] == key, "not least recently passed first"
            model.passed.pop(0)


def _step(epoch: Epoch, data: st.DataObject, total: int, pool: list[str]) -> bool:
    """One random action; False when nothing could be done."""
    w, model = epoch.window, epoch.model
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
    if model.inflight:
        actions += ["finish", "size"]
    if w.next_yield() is not None:
        actions.append("take")
    if not actions:
        return False
    action = data.draw(st.sampled_from(actions))
    before = epoch.protected()

    if action == "plan":
        position = w.planned
        used = set(epoch.keys.values())
        choices = [k for k in pool if k not in used]
        key = data.draw(st.sampled_from(choices)) if choices else f"x{position}-{len(pool)}"
        epoch.keys[position] = key
        epoch.state[position] = "planning"
        if key in model.passed:
            model.passed.remove(key)  # needed again: protected, out of the LRU
        w.plan(position, key)
    elif action == "resolve":
        position = data.draw(st.sampled_from(planning))
        key = epoch.keys[position]
        if key in model.cold or key in model.known:
            if key in model.cold:
                model.known[key] = model.cold.pop(key)
            epoch.state[position] = "done"
            epoch.sizes[position] = model.known[key]
            w.on_disk(position, model.known[key])
        else:
            choice = data.draw(st.sampled_from(["queue", "queue", "queue", "fail", "skip"]))
            if choice == "queue":
                epoch.state[position] = "queued"
                epoch.sizes[position] = data.draw(st.integers(1, 3 * UNKNOWN))
                hinted = data.draw(st.booleans())
                w.queue(position, hint=epoch.sizes[position] if hinted else None)
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
        if start.free:
            _evict(epoch, start.free)
        books = epoch.books
        if books is not None and not start.forced and books.usage + start.reserve > books.budget:
            return True  # the room was held by items being planned: the async side waits
        if start.forced:
            event("forced the head over budget")
            assert start.position == w.head
            model.forced = True
        w.start(start)
        epoch.state[start.position] = "active"
        key = epoch.keys[start.position]
        model.inflight[start.position] = (key, epoch.sizes[start.position], False)
        if not w.ordered:
            waiting = sum(1 for p, s in epoch.state.items() if s == "downloaded")
            assert w.active + waiting <= w.items
    elif action == "size":
        position = data.draw(st.sampled_from(sorted(model.inflight)))
        key, size, _ = model.inflight[position]
        over = w.size_known(position, size)
        if over:
            _evict(epoch, over)
            if epoch.books is not None and epoch.books.usage > epoch.books.budget:
                model.overflow = True  # the async side warns: nothing left to evict
        model.inflight[position] = (key, size, True)
    elif action == "finish":
        position = data.draw(st.sampled_from(sorted(model.inflight)))
        key, size, big = model.inflight[position]
        slot = w.slot(position)
        assert slot is not None
        # Larger than its reservation: the transfer core announces the size (its "start"
        # event) before the first byte is written.
        if size > slot.size and not big and w.size_known(position, size):
            _evict(epoch, epoch.books.usage - epoch.books.budget)  # type: ignore[union-attr]
            if epoch.books is not None and epoch.books.usage > epoch.books.budget:
                model.overflow = True
        del model.inflight[position]
        if data.draw(st.integers(0, 9)) == 0:
            epoch.state[position] = "failed"
            w.fail(position)
        else:
            epoch.state[position] = "downloaded"
            model.known[key] = size
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
    _unprotected_now(epoch, before)
    _check(epoch)
    return True


def _drain(epoch: Epoch, data: st.DataObject, total: int, pool: list[str]) -> None:
    """Keep going until the epoch is over: it must never get stuck."""
    w = epoch.window
    w_steps = 0
    while not (w.planned == total and w.done()):
        w_steps += 1
        assert w_steps < 20 * total + 100, "the epoch made no progress"
        if not _step(epoch, data, total, pool):
            # Nothing possible: the only legitimate reason is a start waiting on room that
            # planning holds; resolve and meta everything to let it go.
            stuck = [p for p, s in epoch.state.items() if s in ("planning",)]
            assert stuck or w.next_download() is not None or epoch.model.inflight, (
                "deadlock: nothing to plan, start, finish or take"
            )
        if w.planned == total:
            w.source_done = True


@settings(max_examples=120)
@given(
    data=st.data(),
    total=st.integers(1, 20),
    items=st.integers(1, 6),
    hold=st.integers(0, 3),
    ordered=st.booleans(),
    budget=st.one_of(st.none(), st.integers(3 * UNKNOWN, 20 * UNKNOWN)),
    cold=st.lists(st.integers(1, 2 * UNKNOWN), max_size=8),
)
def test_window_keeps_its_promises(data, total, items, hold, ordered, budget, cold):
    model = Model(budget=budget, hold=hold)
    model.cold = {f"c{i}": size for i, size in enumerate(cold)}
    if budget is not None and sum(cold) > budget:
        model.forced = True  # the disk starts over budget: nothing to promise until it drains
    books = DiskBooks(budget, cold=sum(cold)) if budget is not None else None
    if books is None:
        model.cold = {}
    pool = [*model.cold, *(f"k{i}" for i in range(total))]
    for _epoch in range(2):
        epoch = Epoch(model, books, items=items, ordered=ordered)
        _drain(epoch, data, total, pool)
        not_skipped = [p for p, s in epoch.state.items() if s != "skipped"]
        assert sorted(epoch.taken) == sorted(not_skipped), "every item handed out once"
        if ordered:
            assert epoch.taken == sorted(epoch.taken)
        # Closing lets go of what is left: slots in position order, then the held items.
        order = [epoch.keys[p] for p in sorted(epoch.state) if epoch.state[p] == "done"]
        order += epoch.held[-hold:] if hold else []
        epoch.window.close()
        for key in order:
            if key in model.known and key not in model.passed:
                model.passed.append(key)


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


def test_books_evict_passed_files_least_recently_used_first():
    books = DiskBooks(1000)
    for key in "abcd":
        books.protect(key)
        books.add_resident(key, 100, from_cold=0)
    for key in "cadb":
        books.unprotect(key)
    books.protect("d")  # needed again: not evictable
    assert [k for k, _ in books.victims(250)] == ["c", "a", "b"]
    assert books.usage == 100
