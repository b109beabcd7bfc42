"""``assetsync verify``: re-hash every recorded file against the manifest.

A file whose size or SHA-256 differs is marked ``corrupt``, a missing one ``missing``; either is
fetched again by the next mirror (the planner downloads anything whose state is not ``ok``).
Rows are streamed from the manifest a page at a time and files hashed in chunks on a few worker
threads (hashlib releases the GIL), so memory stays flat whatever the mirror's size.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread

from engine.manifest import AssetRow, AssetState, Manifest
from engine.pipeline.lock import DestLock

__all__ = ["Problem", "VerifyReport", "verify"]

_CHUNK = 1024 * 1024
_MAX_LISTED = 1000


@dataclass(frozen=True, slots=True)
class Problem:
    asset_id: str
    path: str | None
    state: AssetState
    detail: str


@dataclass(slots=True)
class VerifyReport:
    checked: int = 0
    ok: int = 0
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0

    @property
    def exit_code(self) -> int:
        return 0 if self.problem_count == 0 else 1


def _hash_file(dest: Path, row: AssetRow) -> Problem | None:
    """``None`` if the file matches the row; else what is wrong with it."""
    assert row.path is not None
    path = dest / row.path
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return Problem(row.asset_id, row.path, "corrupt", "a symlink replaced the file")
        return Problem(row.asset_id, row.path, "missing", "file is missing")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return Problem(row.asset_id, row.path, "corrupt", "not a regular file")
        if row.size is not None and info.st_size != row.size:
            return Problem(
                row.asset_id, row.path, "corrupt", f"size {info.st_size}, expected {row.size}"
            )
        digest = hashlib.sha256()
        while chunk := os.read(fd, _CHUNK):
            digest.update(chunk)
    finally:
        os.close(fd)
    if row.sha256 is not None and digest.hexdigest() != row.sha256:
        return Problem(row.asset_id, row.path, "corrupt", "SHA-256 differs from the manifest")
    return None


def _take(rows: Iterator[AssetRow], size: int) -> list[AssetRow]:
    # The manifest pages by key with no statement open between pages, so marking states
    # while iterating is safe.
    return list(itertools.islice(rows, size))


async def _check_into(
    results: list[Problem | None],
    index: int,
    dest: Path,
    row: AssetRow,
    limiter: anyio.CapacityLimiter,
) -> None:
    results[index] = await anyio.to_thread.run_sync(_hash_file, dest, row, limiter=limiter)


async def verify(
    dest: Path,
    *,
    workers: int = 4,
    on_checked: Callable[[VerifyReport], None] | None = None,
    lock_stale_after: float = 6 * 3600.0,
) -> VerifyReport:
    """Check every ``ok`` file of DEST's manifest; mark the bad ones for the next mirror."""
    report = VerifyReport()
    with DestLock(dest, stale_after=lock_stale_after, create=False):
        manifest = await anyio.to_thread.run_sync(lambda: Manifest.open(dest, create=False))
        limiter = anyio.CapacityLimiter(workers)
        try:
            all_rows = manifest.iter_rows(page_size=500)
            while True:
                rows = await anyio.to_thread.run_sync(_take, all_rows, 500)
                if not rows:
                    break
                checked = [r for r in rows if r.state == "ok" and r.path is not None]
                results: list[Problem | None] = [None] * len(checked)

                async with anyio.create_task_group() as tg:
                    for index, row in enumerate(checked):
                        tg.start_soon(_check_into, results, index, dest, row, limiter)
                bad = [p for p in results if p is not None]
                report.checked += len(checked)
                report.ok += len(checked) - len(bad)
                report.bytes += sum(r.size or 0 for r in checked)
                report.problem_count += len(bad)
                room = _MAX_LISTED - len(report.problems)
                report.problems.extend(bad[: max(room, 0)])
                if bad:
                    changes = [(p.asset_id, p.state, p.detail) for p in bad]
                    await anyio.to_thread.run_sync(manifest.mark_states, changes)
                if on_checked is not None:
                    on_checked(report)
        finally:
            await anyio.to_thread.run_sync(manifest.close)
    return report
