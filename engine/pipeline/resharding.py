"""A change of the shard count N in one DEST: refused unless ``--reshard``, then adopted.

A shard's manifest records the assets its K/N owned. Run with another N, the same DEST would
hold manifests of two partitions: an asset recorded under the old N that the new shard owns
would be fetched again (its row is elsewhere), and its file, still listed by the old manifest,
would be counted twice by ``status``. So a run whose N differs from the manifests with assets in
DEST (the whole version's ``manifest.sqlite`` counts as N=1) stops with exit 2, naming the N it
found, unless given ``--reshard``.

With ``--reshard`` the shard *adopts* its assets' rows from each old manifest
(:mod:`engine.manifest.adoption`), under that manifest's lock (waiting a bounded time for the
other new shards adopting from the same file): its files are in place, nothing is fetched again.
An old manifest left without rows is deleted. Jump consistent hashing keeps that small when N
grows (assets move only to the new shards). In a shared DEST, once every new shard has run, no
old manifest is left. In a DEST per node, the old manifest keeps the rows of the assets that now
belong to other nodes (their files stay, and ``status`` counts them), and later runs need
``--reshard`` as long as it has rows: delete it and those files by hand to retire it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

from engine.errors import LockHeldError, ManifestError, UsageError
from engine.manifest import Manifest
from engine.pipeline.lock import DestLock
from engine.sharding import AssetShard
from engine.state_folder import ShardFiles, StateFolder

__all__ = ["ADOPT_LOCK_WAIT", "adopt_old_shards", "old_shards", "refuse_change"]

log = logging.getLogger("engine.pipeline")

# How long a new shard waits for an old manifest's lock (other new shards adopt from it for a
# few seconds each). An old-N run holding it longer is a real conflict, reported.
ADOPT_LOCK_WAIT = 120.0


def _has_assets(state: StateFolder, files: ShardFiles) -> bool:
    try:
        with Manifest.open(state.dest, path=files.manifest, create=False, read_only=True) as m:
            return m.count_assets() > 0
    except UsageError:
        return False  # gone meanwhile
    except ManifestError:
        return True  # unreadable (or an old schema): not ours to judge, so not ignored


def old_shards(state: StateFolder, shard: AssetShard) -> list[ShardFiles]:
    """The manifests in DEST of another N that still record assets."""
    return [
        files
        for files in state.manifests()
        if files.shard.count != shard.count and _has_assets(state, files)
    ]


def _describe(counts: list[int]) -> str:
    names = [("N=1 (a run without --shard)" if n == 1 else f"N={n}") for n in counts]
    return " and ".join(names)


def refuse_change(dest: Path, shard: AssetShard, old: list[ShardFiles]) -> UsageError:
    counts = sorted({files.shard.count for files in old})
    found = _describe(counts)
    keep = "no --shard" if counts[0] == 1 else f"--shard K/{counts[0]}"
    now = "N=1 (no --shard)" if shard.is_whole else f"N={shard.count} (--shard {shard})"
    return UsageError(
        f"{dest} was mirrored in shards of {found}, this run is {now}: run with {keep}, "
        "or pass --reshard to move the recorded assets to the new shards"
    )


def _locked(dest: Path, files: ShardFiles, stale_after: float, wait: float) -> DestLock:
    deadline = time.monotonic() + wait
    pause = 0.05
    while True:
        lock = DestLock(dest, stale_after=stale_after, create=False, path=files.lock)
        try:
            lock.acquire()
            return lock
        except LockHeldError as exc:
            if time.monotonic() + pause > deadline:
                raise LockHeldError(
                    f"cannot reshard: shard {files.shard} of the old count is busy ({exc})"
                ) from None
        time.sleep(pause)
        pause = min(pause * 2, 1.0)


def adopt_old_shards(
    manifest: Manifest,
    state: StateFolder,
    shard: AssetShard,
    old: list[ShardFiles],
    *,
    stale_after: float,
    wait: float = ADOPT_LOCK_WAIT,
) -> int:
    """Move this shard's rows out of the ``old`` manifests into ``manifest``; how many.
    Blocking: call it off the event loop."""
    adopted = 0
    for files in old:
        lock = _locked(state.dest, files, stale_after, wait)
        try:
            if not files.manifest.exists():
                continue  # another new shard emptied and deleted it
            # Opening it as a manifest migrates it to this schema, as adoption needs.
            Manifest.open(state.dest, path=files.manifest, create=False).close()
            moved, left = manifest.adopt(files.manifest, shard.holds)
            adopted += moved
            log.info("adopted %d asset(s) from shard %s's manifest", moved, files.shard)
            if left == 0:
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        files.manifest.with_name(files.manifest.name + suffix).unlink()
        finally:
            lock.release()
    return adopted
