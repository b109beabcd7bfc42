"""``DEST/.assetsync``: the one place that knows what the engine keeps next to the files.

::

    DEST/.assetsync/
        manifest.sqlite (+ -wal, -shm)   what is mirrored (engine.manifest)
        lock                             DEST's lock and its holder (engine.pipeline.lock)
        claims.lock                      prefetchers sharing DEST claim paths under it
        fetching.lock                    one download of an object at a time across processes
        partial/<name>.part              downloads in progress, resumable
        partial/<name>.part.state        their resume sidecars (SIDECAR_SUFFIX)

Importing this module loads no I/O library (the pure :mod:`engine.layout` needs the folder's
name, to never hand it out as an asset's path); :meth:`StateFolder.create` is the only method
that touches the disk.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from engine.errors import UsageError

__all__ = ["PARTIAL_DIR", "SIDECAR_SUFFIX", "STATE_DIR", "StateFolder"]

STATE_DIR = ".assetsync"
PARTIAL_DIR = "partial"
# A partial file's resume state sits beside it under this suffix.
SIDECAR_SUFFIX = ".state"


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
