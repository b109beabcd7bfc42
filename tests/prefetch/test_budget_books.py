"""Property tests of the shared disk budget's books (engine.manifest.budget) on a real manifest.

Two holders (as two DataLoader workers would) pin, unpin, ask for room, finish and fail
downloads in random interleavings, over files already on disk when the first one joined. A model
of the disk (which files exist) and of each holder's pins and reservations is kept beside the
books, and after every step:

* the books count exactly the model's files plus the reservations of downloads in flight;
* the files on disk plus what is in flight stay within the budget unless a ``must`` download
  was let through over it (then: only when even evicting every unpinned file could not make room);
* a refused download evicts nothing, and is refused only when room cannot be made;
* no file pinned by either holder is ever evicted, and evictions take unpinned files most
  recently used first (a prefix of that order);
* an evicted file's manifest row says ``evicted``;
* a holder found dead loses its pins and reservations.
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.manifest import AssetUpdate, FileInfo, Manifest
from engine.manifest import budget as books
from tests.manifest.helpers import update


@dataclass
class Holder:
    id: int
    pins: set[str] = field(default_factory=set)
    inflight: dict[str, int] = field(default_factory=dict)  # key: bytes reserved


@dataclass
class Model:
    budget: int
    files: dict[str, int] = field(default_factory=dict)  # key: size (path: f"f/{key}")
    used: dict[str, int] = field(default_factory=dict)  # key: when last used
    clock: int = 0
    over: bool = False  # a must download went over the budget: no promise until it drains

    def touch(self, key: str) -> None:
        self.clock += 1
        self.used[key] = self.clock


def _path(key: str) -> str:
    return f"f/{key}"


def _key(path: str) -> str:
    return path.removeprefix("f/")


def _pinned(holders: list[Holder]) -> set[str]:
    return set().union(*(h.pins for h in holders))


def _check(m: Manifest, model: Model, holders: list[Holder]) -> None:
    usage = m.budget_books("read", books.usage)
    reserved = sum(r for h in holders for r in h.inflight.values())
    assert usage == sum(model.files.values()) + reserved, "the books drift from the disk"
    if usage <= model.budget:
        model.over = False
    # What is on disk and in flight (written up to its reservation at most) stays within the
    # budget, unless a must download or a grown one had to go over it.
    assert model.over or usage <= model.budget


def _evicted(
    m: Manifest, model: Model, holders: list[Holder], victims: tuple[books.Victim, ...]
) -> None:
    pinned = _pinned(holders)
    order = sorted(
        (k for k in model.files if k not in pinned), key=lambda k: model.used[k], reverse=True
    )
    keys = [asset_id for asset_id, _, _ in victims]
    assert keys == order[: len(keys)], "not the most recently used unpinned files first"
    rows = m.rows(keys) if keys else {}
    for asset_id, path, size in victims:
        assert asset_id not in pinned, "evicted a pinned file"
        assert _path(asset_id) == path and model.files.pop(asset_id) == size
        if asset_id in rows:
            assert rows[asset_id].state == "evicted"


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    cold=st.lists(st.integers(1, 300), max_size=8),
    budget=st.integers(300, 1500),
)
def test_the_books_keep_their_promises(data, cold, budget):
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp)
        with Manifest.open(dest) as m:
            run = m.begin_run("dv", "http://x", {})
            # Files from before any prefetcher (a mirror's), fetched in this order.
            m.apply([_cold(i, size) for i, size in enumerate(cold)], run)
            _play(m, data, cold, budget)


def _cold(i: int, size: int) -> AssetUpdate:
    return _row(f"c{i}", size, fetched_at=1.0e9 + i)  # fetched in this order


def _row(key: str, size: int, fetched_at: float | None = None) -> AssetUpdate:
    file = FileInfo(_path(key), size, "0" * 64, None, fetched_at)
    return dataclasses.replace(update(key), file=file)


def _join(m: Manifest, budget: int, alive: Callable[[int, int], bool]) -> int:
    step = functools.partial(
        books.join, budget=budget, pid=1, now=0.0, alive=alive, hold=lambda holder: None
    )
    holder, _ = m.budget_books("join", step)
    return holder


def _play(m: Manifest, data: st.DataObject, cold: list[int], budget: int) -> None:
    model = Model(budget)
    for i, size in enumerate(cold):
        model.files[f"c{i}"] = size
        model.touch(f"c{i}")
    dead: set[int] = set()

    def alive(holder: int, pid: int) -> bool:
        return holder not in dead

    holders = [Holder(_join(m, budget, alive)), Holder(_join(m, budget, alive))]
    model.over = sum(cold) > budget
    _check(m, model, holders)
    unlinked: list[str] = []

    def unlink(path: str) -> bool:
        unlinked.append(path)
        return True

    pool = [f"c{i}" for i in range(len(cold))] + [f"n{i}" for i in range(12)]
    for _ in range(data.draw(st.integers(1, 60))):
        h = data.draw(st.sampled_from(holders))
        busy = {k for x in holders for k in x.inflight}
        actions = ["pin", "admit"]
        if h.pins:
            actions.append("unpin")
        if h.inflight:
            actions += ["finish", "fail", "grow"]
        action = data.draw(st.sampled_from(actions))
        changes = books.Changes()
        if action == "pin":
            key = data.draw(st.sampled_from(pool))
            if key in h.pins:
                continue
            h.pins.add(key)
            changes.pinned.append(key)
            if key in model.files and data.draw(st.booleans()):
                changes.known.append((key, _path(key), model.files[key]))  # already counted
            m.budget_books(
                "pin", functools.partial(books.apply_changes, holder=h.id, changes=changes)
            )
        elif action == "unpin":
            key = data.draw(st.sampled_from(sorted(h.pins)))
            h.pins.remove(key)
            if key in model.files:
                model.touch(key)
            changes.unpinned.append(key)
            m.budget_books(
                "unpin", functools.partial(books.apply_changes, holder=h.id, changes=changes)
            )
        elif action == "admit":
            candidates = [k for k in pool if k not in busy and k not in model.files]
            if not candidates:
                continue
            key = data.draw(st.sampled_from(candidates))
            reserve = data.draw(st.integers(1, 400))
            must = data.draw(st.booleans())
            h.pins.add(key)  # the epoch pins what it registers, before asking for room
            changes.pinned.append(key)
            unlinked.clear()
            pinned_before = _pinned(holders)
            free = sum(size for k, size in model.files.items() if k not in pinned_before)
            usage = m.budget_books("read", books.usage)

            def step(conn, h=h, key=key, reserve=reserve, must=must, changes=changes):
                books.apply_changes(conn, h.id, changes)
                return books.admit(
                    conn,
                    h.id,
                    budget,
                    asset_id=key,
                    path=_path(key),
                    reserve=reserve,
                    must=must,
                    unlink=unlink,
                    alive=alive,
                )

            admission = m.budget_books("admit", step)
            assert [a for a, _, _ in admission.evicted] == [_key(p) for p in unlinked]
            fits = usage + reserve - free <= budget
            if not admission.granted:
                assert not fits and not must, "refused though room could be made"
                assert not admission.evicted, "a refused download evicted files"
                continue
            assert admission.forced == (not fits)
            if admission.forced:
                model.over = True
            _evicted(m, model, holders, admission.evicted)
            h.inflight[key] = admission.reserved
        elif action == "grow":
            key = data.draw(st.sampled_from(sorted(h.inflight)))
            reserved = h.inflight[key]
            extra = data.draw(st.integers(1, 200))
            step = functools.partial(
                books.grow, holder=h.id, budget=budget, extra=extra, unlink=unlink
            )
            unlinked.clear()
            admission = m.budget_books("grow", step)
            if admission.forced:
                model.over = True
            _evicted(m, model, holders, admission.evicted)
            h.inflight[key] = reserved + extra
        elif action in ("finish", "fail"):
            key = data.draw(st.sampled_from(sorted(h.inflight)))
            reserved = h.inflight.pop(key)
            changes.released = reserved
            if action == "finish":
                size = data.draw(st.integers(1, reserved))
                changes.placed.append((key, _path(key), size))
                model.files[key] = size
                model.touch(key)
            m.budget_books(
                action, functools.partial(books.apply_changes, holder=h.id, changes=changes)
            )
        _check(m, model, holders)

    # A holder found dead (killed): its pins and reservations go when room is asked for.
    gone = holders.pop(0)
    dead.add(gone.id)
    for key in list(gone.inflight):
        gone.inflight.pop(key)  # its partial files: not in the model's disk
    admission = m.budget_books(
        "admit",
        functools.partial(
            books.admit,
            holder=holders[0].id,
            budget=budget,
            asset_id="late",
            path=_path("late"),
            reserve=budget * 10,  # cannot fit: every check for room runs, dead holders cleared
            must=False,
            unlink=unlink,
            alive=alive,
        ),
    )
    assert not admission.granted
    left = {
        holder
        for (holder,) in m.budget_books(
            "read", lambda c: c.execute("SELECT holder FROM budget_holders").fetchall()
        )
    }
    assert left == {holders[0].id}
    pins = m.budget_books(
        "read", lambda c: c.execute("SELECT asset_id, holder FROM budget_pins").fetchall()
    )
    assert {holder for _, holder in pins} <= {holders[0].id}
    _check(m, model, holders)


def test_files_a_dead_holder_placed_are_counted_when_it_is_cleared(tmp_path: Path):
    """A worker killed after committing a file's row, before its books heard of the file: once
    it is found dead, the file is counted (and can be evicted), never left on disk unseen."""
    dead: set[int] = set()

    def alive(holder: int, pid: int) -> bool:
        return holder not in dead

    def admit(m: Manifest, holder: int, key: str, reserve: int) -> books.Admission:
        step = functools.partial(
            books.admit,
            holder=holder,
            budget=1000,
            asset_id=key,
            path=_path(key),
            reserve=reserve,
            must=False,
            unlink=lambda path: True,
            alive=alive,
        )
        return m.budget_books("admit", step)

    with Manifest.open(tmp_path) as m:
        run = m.begin_run("dv", "http://x", {})
        a, b = _join(m, 1000, alive), _join(m, 1000, alive)
        assert admit(m, b, "x", 300).granted
        m.apply([_row("x", 300)], run)  # b placed x and committed its row, then was killed
        dead.add(b)
        admission = admit(m, a, "y", 800)  # room for y means x must go
        assert admission.granted and not admission.forced
        assert [asset_id for asset_id, _, _ in admission.evicted] == ["x"]
        assert m.row("x").state == "evicted"
        assert m.budget_books("read", books.usage) == 800


def test_a_seat_left_behind_keeps_its_pins_but_binds_no_one_to_its_budget(tmp_path: Path):
    """A session that ended while its process lives leaves its seat, pinning the items it
    handed out last. A prefetcher with the same budget keeps those pins (and, as no other one
    is open, counts the files again: a mirror may have run meanwhile); one with another budget
    is not refused for it: the seat is retired."""

    def alive(holder: int, pid: int) -> bool:
        return True

    with Manifest.open(tmp_path) as m:
        run = m.begin_run("dv", "http://x", {})
        old = _join(m, 1000, alive)
        pin = books.Changes(pinned=["x"])
        m.budget_books("pin", functools.partial(books.apply_changes, holder=old, changes=pin))
        left = functools.partial(
            books.leave, holder=old, changes=books.Changes(), stay=True, now=1.0
        )
        m.budget_books("leave", left)
        m.apply([_row("x", 300), _row("y", 200)], run)  # a mirror ran meanwhile

        step = functools.partial(
            books.join, budget=1000, pid=1, now=0.0, alive=alive, hold=lambda holder: None
        )
        same, first = m.budget_books("join", step)
        assert first  # no other open: the files were counted again
        assert m.budget_books("read", books.usage) == 500
        pins = m.budget_books("pins", lambda c: c.execute("SELECT * FROM budget_pins").fetchall())
        assert pins == [("x", old)]
        m.budget_books(
            "leave", functools.partial(books.leave, holder=same, changes=books.Changes())
        )

        step = functools.partial(
            books.join, budget=2000, pid=1, now=0.0, alive=alive, hold=lambda holder: None
        )
        other, _ = m.budget_books("join", step)  # not refused
        holders = m.budget_books(
            "holders", lambda c: c.execute("SELECT holder FROM budget_holders").fetchall()
        )
        assert holders == [(other,)]
