"""SQLite plumbing: opening the file safely, pragmas, error translation, IN-list chunking."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Literal, TypeVar

from engine.errors import DiskFullError, EngineError, ManifestError, UsageError

__all__ = ["InLists", "connect", "set_pragmas", "translate"]

T = TypeVar("T")
_SQLITE_MAGIC = b"SQLite format 3\x00"
_JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024  # truncate the WAL back to this after checkpoints
_CACHE_KIB = 16 * 1024  # page cache per connection: bounded memory, whatever the manifest's size


def translate(exc: sqlite3.Error, where: Path | str, doing: str) -> EngineError:
    """The engine error for an sqlite3 exception, with a one-line message."""
    name = getattr(exc, "sqlite_errorname", None) or ""
    if name.startswith("SQLITE_FULL"):
        return DiskFullError(f"no space left on the device holding the manifest {where}")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return ManifestError(f"the manifest {where} is locked by another process ({doing})")
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return ManifestError(
            f"the manifest {where} is damaged ({exc}); it was left as it is: "
            "move it aside to start a fresh one"
        )
    return ManifestError(f"manifest {where}: cannot {doing}: {exc}")


def _check_header(path: Path) -> None:
    # sqlite3 would only notice on the first query, after connect() created -wal/-shm files
    # next to somebody else's file; read the 16-byte magic first instead.
    try:
        with path.open("rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ManifestError(f"cannot read the manifest {path}: {exc.strerror}") from None
    if head and head != _SQLITE_MAGIC:
        raise ManifestError(f"{path} is not an SQLite database; it was left as it is")


def connect(
    dest: Path, path: Path, *, mode: Literal["rwc", "rw", "ro"], busy_timeout: float
) -> sqlite3.Connection:
    """Open the manifest file (``rwc``: create it if needed); nothing is written to it yet."""
    create = mode == "rwc"
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"destination {dest} exists and is not a directory")
    if not path.exists():
        if not create:
            raise UsageError(f"no manifest in {dest}: nothing has been mirrored there yet")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ManifestError(f"cannot create {path.parent}: {exc.strerror}") from None
    elif not path.is_file():
        raise ManifestError(f"the manifest {path} is not a regular file")
    _check_header(path)
    try:
        # isolation_level=None: the store issues BEGIN/COMMIT itself, so a transaction is
        # exactly as wide as a method says. check_same_thread=False: the scheduler calls from
        # one worker thread at a time, not always the same one.
        return sqlite3.connect(
            f"{path.resolve().as_uri()}?mode={mode}",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=busy_timeout,
            cached_statements=256,
        )
    except sqlite3.Error as exc:
        raise translate(exc, path, "open it") from None


def set_pragmas(
    conn: sqlite3.Connection, where: Path, busy_timeout: float, *, read_only: bool = False
) -> None:
    """Connection settings; WAL is switched on only once the file is known to be a manifest."""
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000):d}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA cache_size = -{_CACHE_KIB:d}")
    if read_only:
        return  # a reader follows whatever journal mode the writers chose
    mode = _switch_to_wal(conn, busy_timeout)
    if str(mode).lower() != "wal":
        raise ManifestError(
            f"the manifest {where} cannot use write-ahead logging (journal mode {mode}); "
            "is DEST on a network file system?"
        )
    # synchronous=NORMAL in WAL mode: a commit is appended to the WAL without an fsync; the WAL
    # is synced at checkpoints. A killed *process* loses nothing that was committed (the bytes
    # are in the OS page cache) and an OS crash or power loss can lose only the last commits,
    # never corrupt the file. Losing the last commits is safe here: a file without its row is
    # fetched again by the next run. FULL would add an fsync per batch for no extra safety the
    # engine needs.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT:d}")


def _switch_to_wal(conn: sqlite3.Connection, busy_timeout: float) -> str:
    # Switching a rollback-journal database to WAL needs an exclusive lock, and SQLite answers
    # SQLITE_BUSY at once instead of calling the busy handler when it cannot get it: processes
    # opening one fresh DEST together (prefetch DataLoader workers) would fail. Wait as the busy
    # handler would, up to busy_timeout.
    deadline = time.monotonic() + busy_timeout
    pause = 0.001
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            name = getattr(exc, "sqlite_errorname", None) or ""
            if not name.startswith("SQLITE_BUSY") or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


@cache
def marks(count: int) -> str:
    """``?,?,...`` with ``count`` placeholders."""
    return ",".join("?" * count)


class InLists:
    """Split values for ``col IN (?, ...)`` into chunks of a few fixed sizes.

    SQLite caps the number of bound variables per statement. Chunks are padded with NULL (which
    matches nothing) up to one of a handful of sizes, so each query has only a few distinct SQL
    texts and stays in the prepared-statement cache instead of being compiled per call.
    """

    def __init__(self, conn: sqlite3.Connection, *, reserve: int = 8, largest: int = 1000) -> None:
        limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) - reserve
        self.largest = max(1, min(largest, limit))
        self.sizes = sorted({min(s, self.largest) for s in (1, 4, 16, 64, 250, 500, 1000)})

    def chunks(self, template: str, values: Sequence[T]) -> Iterator[tuple[str, list[T | None]]]:
        """``(sql, params)`` per chunk of ``values`` (which should hold no duplicates).

        ``template`` is constant SQL with ``{marks}`` where the placeholders go (``?,?,…``) or
        ``{rows}`` for a VALUES list (``(?),(?),…``); nothing else is ever interpolated into SQL.
        """
        for start in range(0, len(values), self.largest):
            chunk: list[T | None] = list(values[start : start + self.largest])
            size = next(s for s in self.sizes if s >= len(chunk))
            chunk.extend([None] * (size - len(chunk)))
            yield _sql(template, size), chunk


@cache
def _sql(template: str, size: int) -> str:
    return template.format(marks=marks(size), rows=",".join(["(?)"] * size))
