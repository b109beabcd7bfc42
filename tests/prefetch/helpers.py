"""Shared helpers for the prefetcher's tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from pathlib import Path

from engine.emulator import Emulator
from engine.settings import Settings
from tests.mirror.helpers import settings_for, sha256_of

__all__ = [
    "data_bytes_on_disk",
    "engine_tasks",
    "engine_threads",
    "listing",
    "settings_for",
    "sha256_of",
]


def listing(emu: Emulator) -> list[str]:
    """The version's asset ids in listing order."""
    return list(emu.dataset.asset_ids())


def data_bytes_on_disk(dest: Path) -> int:
    """What the disk budget bounds: every data file under DEST, complete or partial (the
    manifest, the lock files and the partial files' small resume sidecars excepted). A file is
    counted once even if it is renamed from the partial folder into place during the walk (its
    inode is the same)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(dest):
        rel = Path(root).relative_to(dest)
        in_state = rel.parts[:1] == (".assetsync",)
        for name in files:
            if in_state and not (rel.parts[1:2] == ("partial",) and name.endswith(".part")):
                continue
            with contextlib.suppress(FileNotFoundError):  # renamed or evicted meanwhile
                st = os.lstat(os.path.join(root, name))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
        dirs.sort()
    return total


def engine_tasks() -> list[asyncio.Task]:
    """Tasks running engine code other than the emulator's (which serves the test)."""
    found = []
    for task in asyncio.all_tasks():
        # anyio names its tasks after their function; plain asyncio tasks show their code.
        coro = task.get_coro()
        code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
        where = f"{task.get_name()} {code.co_filename if code is not None else ''}"
        if ("engine." in where or "/engine/" in where) and "emulator" not in where:
            found.append(task)
    return found


def engine_threads() -> set[str]:
    """Names of live threads the engine starts (transfer I/O, lock heartbeat, loop thread)."""
    return {
        t.name
        for t in threading.enumerate()
        if t.name.startswith("assetsync-") and t.name != "assetsync-emulator"
    }


def budget_version(seed: int, assets: int = 60) -> Emulator:
    """A version for disk-budget tests: small files and a few larger than the transfer's chunk
    size (these announce their size before any byte is written; the small ones are reserved a
    whole chunk until then)."""
    return Emulator(
        assets=assets,
        seed=seed,
        min_size=8 * 1024,
        max_size=48 * 1024,
        large_share=0.08,
        large_size=160 * 1024,
        empty_share=0.0,
        nasty_filenames=False,
    )


def budget_settings(emu: Emulator, dest: Path) -> Settings:
    return settings_for(emu, dest, transfer={"chunk_size": 64 * 1024}, limits={"concurrency": 4})
