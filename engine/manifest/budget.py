"""The books of a disk budget shared by the prefetchers of one DEST (schema v2's budget tables).

Every statement here runs inside one write transaction of the manifest (``BEGIN IMMEDIATE``):
SQLite's write lock is what makes the books consistent between processes, the way
:mod:`engine.pipeline.sharing` makes path claims consistent.

* ``budget_holders``: the live prefetchers of DEST, each with its budget (all must agree) and the
  bytes of its downloads in flight (``reserved``). A holder is alive while it holds a lock on its
  byte of a lock file (the caller's ``alive``): a killed prefetcher's row, pins and reservations
  are cleared by the next holder that looks.
* ``budget_files``: the files on disk the budget counts, with their eviction order (``seq``:
  when last used; the highest goes first, see below). A file enters once its manifest row is
  committed (so an eviction, which marks the row ``evicted``, never races the row's own
  commit); until then its download's reservation counts its bytes.
* ``budget_pins``: the files a holder must keep (items it registered and has not passed).

Eviction order: most recently used first. A training epoch reads each item once, so the files
passed last are the ones the next epoch (in the same order) needs last; least-recently-used would
evict exactly the files the next epoch starts with (its worst case, a cyclic scan), so a budget
half the version's size would serve nothing from disk. With shuffled epochs every order is worth
the same. Files found from before the first prefetcher are ordered by when they were fetched.

``usage`` = the files' bytes + every live holder's reservations. A download is admitted when it
fits, after evicting unpinned files in order; when even evicting every unpinned file would not
make room, it waits (the caller retries), except the item a consumer waits for (``must``), which
goes over the budget so that no epoch can deadlock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from engine.errors import UsageError

__all__ = ["Admission", "Changes", "Victim", "admit", "grow", "join", "leave", "usage"]

Victim = tuple[str, str, int]  # asset id, path, size

_FETCH = 256


@dataclass(slots=True)
class Changes:
    """What a holder learnt since its last transaction (applied first in the next one)."""

    pinned: list[str] = field(default_factory=list)
    unpinned: list[str] = field(default_factory=list)
    placed: list[Victim] = field(default_factory=list)  # downloads whose rows are committed
    known: list[Victim] = field(default_factory=list)  # files found in place (counted if new)
    released: int = 0  # reservation bytes given back

    def __bool__(self) -> bool:
        return bool(self.pinned or self.unpinned or self.placed or self.known or self.released)


@dataclass(frozen=True, slots=True)
class Admission:
    granted: bool
    reserved: int = 0  # bytes now reserved for the download (with a file it replaces)
    forced: bool = False  # granted over the budget: nothing else could make room
    evicted: tuple[Victim, ...] = ()
    usage: int = 0


def _total(conn: sqlite3.Connection, key: str) -> int:
    row = conn.execute("SELECT value FROM budget_totals WHERE key = ?", (key,)).fetchone()
    return int(row[0]) if row is not None else 0


def _add_total(conn: sqlite3.Connection, key: str, delta: int) -> None:
    conn.execute("UPDATE budget_totals SET value = value + ? WHERE key = ?", (delta, key))


def _next_seq(conn: sqlite3.Connection, count: int = 1) -> int:
    _add_total(conn, "seq", count)
    return _total(conn, "seq") - count + 1


def usage(conn: sqlite3.Connection) -> int:
    reserved = conn.execute("SELECT coalesce(sum(reserved), 0) FROM budget_holders").fetchone()
    return _total(conn, "files") + int(reserved[0])


def _clear_dead(
    conn: sqlite3.Connection, me: int | None, alive: Callable[[int, int], bool]
) -> tuple[int, int]:
    """Forget holders that are gone (their pins go with them): (how many live, how many gone)."""
    live = gone = 0
    for holder, pid in conn.execute("SELECT holder, pid FROM budget_holders").fetchall():
        if holder == me or alive(holder, pid):
            live += 1
        else:
            conn.execute("DELETE FROM budget_holders WHERE holder = ?", (holder,))
            gone += 1
    return live, gone


def join(
    conn: sqlite3.Connection,
    budget: int | None,
    pid: int,
    now: float,
    *,
    alive: Callable[[int, int], bool],
    hold: Callable[[int], None],
    retire: int | None = None,
) -> tuple[int, bool]:
    """Register a prefetcher; returns its holder id and whether no other one is open.

    With no other prefetcher open, nothing held DEST's lock shared, so a mirror may have changed
    the files since: a holder with a budget then counts them again from the manifest.
    ``hold(holder)`` takes the holder's liveness lock before the registration is committed, so
    nobody can see it registered and not alive. ``retire``: a seat this process left behind
    (:func:`leave` with ``stay``), replaced now. Seats left behind by other processes with
    another budget are retired too: their sessions are over, and only open ones must agree.
    """
    if retire is not None:
        conn.execute("DELETE FROM budget_holders WHERE holder = ?", (retire,))
    _clear_dead(conn, None, alive)
    conn.execute(
        "DELETE FROM budget_holders WHERE closed IS NOT NULL AND budget IS NOT ?", (budget,)
    )
    (live,) = conn.execute("SELECT count(*) FROM budget_holders WHERE closed IS NULL").fetchone()
    if live:
        others = {
            b
            for (b,) in conn.execute(
                "SELECT DISTINCT budget FROM budget_holders WHERE closed IS NULL"
            )
        }
        if others != {budget}:
            theirs = ", ".join(
                "none" if b is None else f"{b} bytes" for b in sorted(others, key=str)
            )
            mine = "none" if budget is None else f"{budget} bytes"
            raise UsageError(
                f"DEST is in use by prefetchers with another disk budget (theirs: {theirs}; "
                f"this one: {mine}): the prefetchers of one DEST share one max_bytes"
            )
    elif budget is not None:
        _recount(conn)
    cur = conn.execute(
        "INSERT INTO budget_holders (budget, pid, joined) VALUES (?, ?, ?)", (budget, pid, now)
    )
    holder = cur.lastrowid
    assert holder is not None
    hold(holder)
    return holder, live == 0


def _recount(conn: sqlite3.Connection) -> None:
    """The files on record, in the order they were fetched (the last fetched go first). The
    pins stay: they are those of seats left behind, whose items are still being read."""
    conn.execute("DELETE FROM budget_files")
    conn.execute("UPDATE budget_totals SET value = 0 WHERE key IN ('files', 'seq')")
    _count_unbooked(conn)


def _count_unbooked(conn: sqlite3.Connection) -> None:
    """Count every file on record that the books lack, after the files they have, in the order
    they were fetched. When a holder died: files it placed whose rows it committed may never
    have reached the books (its last changes died with it); a live holder's file caught this
    way is counted twice until its own record replaces the entry (too much, never too little)."""
    seq = _total(conn, "seq")
    added = conn.execute(
        "INSERT INTO budget_files (asset_id, path, size, seq)"
        " SELECT a.asset_id, a.path, coalesce(a.size, 0),"
        " ? + row_number() OVER (ORDER BY coalesce(a.fetched_at, 0), a.asset_id)"
        " FROM assets AS a WHERE a.state = 'ok' AND a.path IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM budget_files AS f WHERE f.asset_id = a.asset_id)",
        (seq,),
    ).rowcount
    if added:
        total = conn.execute("SELECT coalesce(sum(size), 0) FROM budget_files").fetchone()[0]
        conn.execute("UPDATE budget_totals SET value = ? WHERE key = 'files'", (int(total),))
        _add_total(conn, "seq", added)


def leave(
    conn: sqlite3.Connection,
    holder: int,
    changes: Changes,
    *,
    stay: bool = False,
    retire: int | None = None,
    now: float = 0.0,
) -> None:
    """A holder leaves: what it learnt last is recorded; its pins and reservations go. With
    ``stay`` its seat and remaining pins stay (its process is alive and its consumer may still
    read the items handed out last), its reservations go. ``retire``: an older seat this
    process left behind, gone now."""
    apply_changes(conn, holder, changes)
    if retire is not None:
        conn.execute("DELETE FROM budget_holders WHERE holder = ?", (retire,))
    if stay:
        conn.execute(
            "UPDATE budget_holders SET reserved = 0, closed = ? WHERE holder = ?", (now, holder)
        )
    else:
        conn.execute("DELETE FROM budget_holders WHERE holder = ?", (holder,))


def apply_changes(conn: sqlite3.Connection, holder: int, changes: Changes) -> None:
    if changes.unpinned:
        # Passed files are the most recently used: the first to go (module docstring).
        first = _next_seq(conn, len(changes.unpinned))
        conn.executemany(
            "DELETE FROM budget_pins WHERE asset_id = ? AND holder = ?",
            [(asset_id, holder) for asset_id in changes.unpinned],
        )
        conn.executemany(
            "UPDATE budget_files SET seq = ? WHERE asset_id = ?",
            [(first + i, asset_id) for i, asset_id in enumerate(changes.unpinned)],
        )
    if changes.pinned:
        conn.executemany(
            "INSERT OR IGNORE INTO budget_pins (asset_id, holder) VALUES (?, ?)",
            [(asset_id, holder) for asset_id in changes.pinned],
        )
    for asset_id, path, size in changes.known:
        if conn.execute(
            "INSERT OR IGNORE INTO budget_files (asset_id, path, size, seq) VALUES (?, ?, ?, ?)",
            (asset_id, path, size, _total(conn, "seq") + 1),
        ).rowcount:
            _add_total(conn, "seq", 1)
            _add_total(conn, "files", size)
    for asset_id, path, size in changes.placed:
        old = conn.execute(
            "SELECT size FROM budget_files WHERE asset_id = ?", (asset_id,)
        ).fetchone()
        conn.execute(
            "INSERT OR REPLACE INTO budget_files (asset_id, path, size, seq) VALUES (?, ?, ?, ?)",
            (asset_id, path, size, _next_seq(conn)),
        )
        _add_total(conn, "files", size - (int(old[0]) if old is not None else 0))
    if changes.released:
        conn.execute(
            "UPDATE budget_holders SET reserved = max(0, reserved - ?) WHERE holder = ?",
            (changes.released, holder),
        )


def _candidates(conn: sqlite3.Connection, need: int) -> tuple[list[Victim], int]:
    """Unpinned files in eviction order until ``need`` bytes (all of them if fewer)."""
    out: list[Victim] = []
    freed = 0
    cur = conn.execute(
        "SELECT f.asset_id, f.path, f.size FROM budget_files AS f"
        " WHERE NOT EXISTS (SELECT 1 FROM budget_pins AS p WHERE p.asset_id = f.asset_id)"
        " ORDER BY f.seq DESC"
    )
    while freed < need:
        rows = cur.fetchmany(_FETCH)
        if not rows:
            break
        for asset_id, path, size in rows:
            out.append((asset_id, path, int(size)))
            freed += int(size)
            if freed >= need:
                break
    cur.close()
    return out, freed


def _evict(
    conn: sqlite3.Connection, victims: Sequence[Victim], unlink: Callable[[str], bool]
) -> list[Victim]:
    gone: list[Victim] = []
    for victim in victims:
        asset_id, path, size = victim
        if not unlink(path):
            continue  # could not delete it: it stays on the books
        conn.execute("DELETE FROM budget_files WHERE asset_id = ?", (asset_id,))
        conn.execute(
            "UPDATE assets SET state = 'evicted', error = NULL"
            " WHERE asset_id = ? AND path = ? AND state = 'ok'",
            (asset_id, path),
        )
        _add_total(conn, "files", -size)
        gone.append(victim)
    return gone


def admit(
    conn: sqlite3.Connection,
    holder: int,
    budget: int,
    *,
    asset_id: str,
    path: str,
    reserve: int,
    must: bool,
    unlink: Callable[[str], bool],
    alive: Callable[[int, int], bool],
) -> Admission:
    """Reserve ``reserve`` bytes for downloading ``asset_id`` to ``path``, evicting as needed.

    The file the download replaces at its path (this asset's, on the books) leaves the files and
    joins the reservation: its bytes stay counted until the new file is recorded.
    """
    replaced = conn.execute(
        "SELECT size FROM budget_files WHERE asset_id = ? AND path = ?", (asset_id, path)
    ).fetchone()
    total = usage(conn)
    need = total + reserve - budget
    victims: list[Victim] = []
    forced = False
    if need > 0:
        victims, freed = _candidates(conn, need)
        if freed < need:
            # Dead holders may keep pins and reservations: clear them, and look again.
            if _clear_dead(conn, holder, alive)[1]:
                _count_unbooked(conn)
                total = usage(conn)
                need = total + reserve - budget
                victims, freed = _candidates(conn, need)
            if freed < need and not must:
                return Admission(False, usage=total)
            forced = freed < need
    gone = _evict(conn, victims, unlink)
    held = reserve
    if replaced is not None:
        size = int(replaced[0])
        conn.execute("DELETE FROM budget_files WHERE asset_id = ?", (asset_id,))
        _add_total(conn, "files", -size)
        held += size
    conn.execute(
        "UPDATE budget_holders SET reserved = reserved + ? WHERE holder = ?", (held, holder)
    )
    return Admission(True, reserved=held, forced=forced, evicted=tuple(gone), usage=usage(conn))


def grow(
    conn: sqlite3.Connection,
    holder: int,
    budget: int,
    extra: int,
    *,
    unlink: Callable[[str], bool],
) -> Admission:
    """A download in flight turned out ``extra`` bytes larger than reserved: reserve them,
    evicting what is needed now (``forced``: it goes over the budget, nothing else could go)."""
    conn.execute(
        "UPDATE budget_holders SET reserved = reserved + ? WHERE holder = ?", (extra, holder)
    )
    need = usage(conn) - budget
    gone: list[Victim] = []
    if need > 0:
        victims, _ = _candidates(conn, need)
        gone = _evict(conn, victims, unlink)
        need -= sum(size for _, _, size in gone)
    return Admission(True, reserved=extra, forced=need > 0, evicted=tuple(gone), usage=usage(conn))
