"""``DEST/.assetsync``: the one place that knows what the engine keeps next to the files.

::

    DEST/.assetsync/
        manifest.sqlite (+ -wal, -shm)   what is mirrored (engine.manifest)
        lock                             DEST's lock and its holder (engine.pipeline.lock)
        shard-K-of-N.sqlite              shard K/N's manifest, when runs are sharded (--shard)
        shard-K-of-N.lock                shard K/N's lock: shards of one DEST run side by side
        <manifest>.placed.jsonl          files in place before their rows, adopted by the next run
                                         after a kill (engine.pipeline.placed_journal)
        claims.lock                      prefetchers sharing DEST claim paths under it
        <manifest>.holders.lock          a byte locked by each live prefetcher: its disk budget's
                                         pins and reservations die with it (engine.prefetch.budget)
        fetching.lock                    one download of an object at a time across processes
        partial/<name>.part              downloads in progress, resumable
        partial/<name>.part.state        their resume sidecars (SIDECAR_SUFFIX)

A run of shard ``K/N`` (:mod:`engine.sharding`) keeps its own manifest and lock, named by K and
N, so shards on several machines can share one DEST on a network file system (SQLite's WAL
cannot be shared between machines; a file per shard is never opened by two at once). The whole
version (``0/1``, no ``--shard``) is ``manifest.sqlite`` and ``lock``, as before sharding.
:meth:`StateFolder.manifests` finds them all, for the commands that read a DEST as one.

Importing this module loads no I/O library (the pure :mod:`engine.layout` needs the folder's
name, to never hand it out as an asset's path); :meth:`StateFolder.create` is the only method
that touches the disk.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from engine.errors import UsageError
from engine.sharding import MAX_SHARDS, AssetShard

__all__ = ["PARTIAL_DIR", "SIDECAR_SUFFIX", "STATE_DIR", "ShardFiles", "StateFolder"]

STATE_DIR = ".assetsync"
PARTIAL_DIR = "partial"
# A partial file's resume state sits beside it under this suffix.
SIDECAR_SUFFIX = ".state"

_SHARD_MANIFEST = re.compile(r"shard-([0-9]+)-of-([0-9]+)\.sqlite")


@dataclass(frozen=True, slots=True)
class ShardFiles:
    """One manifest of a DEST and the lock that guards it."""

    shard: AssetShard
    manifest: Path
    lock: Path


class StateFolder:
    """The state folder of one DEST (paths only, until :meth:`create`)."""

    __slots__ = ("dest", "path")

    def __init__(self, dest: Path) -> None:
        self.dest = Path(dest)
        self.path = self.dest / STATE_DIR

    @property
    def manifest(self) -> Path:
        return self.path / "manifest.sqlite"

    @property
    def lock(self) -> Path:
        return self.path / "lock"

    def shard_files(self, shard: AssetShard) -> ShardFiles:
        """Shard ``K/N``'s manifest and lock (the whole version's for ``0/1``)."""
        if shard.is_whole:
            return ShardFiles(shard, self.manifest, self.lock)
        stem = f"shard-{shard.index}-of-{shard.count}"
        return ShardFiles(shard, self.path / f"{stem}.sqlite", self.path / f"{stem}.lock")

    def placed_journal(self, files: ShardFiles) -> Path:
        """The journal of files in place before their rows, one per manifest
        (:mod:`engine.pipeline.placed_journal`)."""
        return files.manifest.with_name(files.manifest.stem + ".placed.jsonl")

    def holders_lock(self, manifest: Path) -> Path:
        """The liveness locks of the prefetchers using ``manifest``, a byte each
        (:mod:`engine.prefetch.budget`)."""
        return manifest.with_name(manifest.stem + ".holders.lock")

    def manifests(self) -> list[ShardFiles]:
        """Every manifest in the state folder, the whole version's first, then by N and K."""
        found: list[ShardFiles] = []
        if self.manifest.is_file():
            found.append(self.shard_files(AssetShard()))
        try:
            names = os.listdir(self.path)
        except OSError:
            return found
        shards = []
        for name in names:
            match = _SHARD_MANIFEST.fullmatch(name)
            if match is None:
                continue
            index, count = int(match.group(1)), int(match.group(2))
            if 0 <= index < count <= MAX_SHARDS and count > 1:
                shards.append(AssetShard(index, count))
        shards.sort(key=lambda shard: (shard.count, shard.index))
        found += [self.shard_files(shard) for shard in shards]
        return found

    @property
    def claims_lock(self) -> Path:
        return self.path / "claims.lock"

    @property
    def fetch_lock(self) -> Path:
        return self.path / "fetching.lock"

    @property
    def partial(self) -> Path:
        return self.path / PARTIAL_DIR

    def partial_files(self, part: Path) -> tuple[Path, Path]:
        """A partial file and its resume sidecar."""
        return part, part.with_name(part.name + SIDECAR_SUFFIX)

    def create(self, *, create_dest: bool = True) -> Path:
        """Make DEST (unless ``create_dest`` is False: it must exist) and its state folder.

        A symlink (or anything but a directory) at ``.assetsync`` is refused: writes through it
        could land outside DEST. DEST itself may be a symlink to a directory: that is the user's
        choice of where DEST is.
        """
        dest = self.dest
        try:
            mode = os.stat(dest).st_mode
        except FileNotFoundError:
            if not create_dest:
                raise UsageError(f"destination {dest} does not exist") from None
            try:
                dest.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"cannot create destination {dest}: {exc.strerror}") from None
            mode = os.stat(dest).st_mode
        except OSError as exc:
            raise UsageError(f"cannot use destination {dest}: {exc.strerror}") from None
        if not stat.S_ISDIR(mode):
            raise UsageError(f"destination {dest} is not a directory")
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.path, 0o755)
            is_dir = stat.S_ISDIR(os.lstat(self.path).st_mode)
        except OSError as exc:
            raise UsageError(f"cannot create {self.path}: {exc.strerror}") from None
        if not is_dir:
            raise UsageError(f"{self.path} is not a directory (a symlink is not accepted)")
        return self.path
