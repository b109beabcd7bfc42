"""Files under DEST as the pipeline sees them: what ``lstat`` says, and a removal that never
follows a symlink (the mirror's ``--delete`` and the prefetcher's evictions both use it)."""

from __future__ import annotations

import errno
import os
import stat as stat_module
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from engine.errors import LocalStorageError
from engine.plan import LocalFile

__all__ = ["descend", "folder_fd", "local_file", "remove_file"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# DEST itself may be a symlink to a folder: that is the user's choice of where DEST is.
_DEST_FLAGS = _DIR_FLAGS & ~os.O_NOFOLLOW


def local_file(dest: Path, rel_path: str) -> LocalFile | None:
    """What ``lstat`` says of a recorded file (lstat: a symlink planted there is not our file);
    ``None`` when nothing is there."""
    try:
        # os.path.join, not Path's "/": a third of this call's cost, once per listed asset.
        st = os.lstat(os.path.join(dest, rel_path))
    except OSError:
        return None
    return LocalFile(st.st_size, stat_module.S_ISREG(st.st_mode))


def descend(fd: int, names: Sequence[str]) -> int:
    """The folder ``names`` below the open folder ``fd``, opened without following a symlink
    on the way; ``fd`` is closed (also when this raises the OSError of a step)."""
    for name in names:
        try:
            next_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        fd = next_fd
    return fd


def folder_fd(dest: Path, names: Sequence[str]) -> int:
    """DEST's folder ``names``, opened without following a symlink below DEST."""
    return descend(os.open(dest, _DEST_FLAGS), names)


def remove_file(dest: Path, rel_path: PurePosixPath) -> bool:
    """Unlink ``dest/rel_path`` without following any symlink on the way; ``False`` if it was
    not there. A symlink at the final name is removed itself (unlink works on names)."""
    parts = rel_path.parts
    if not parts or rel_path.is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise LocalStorageError(f"refusing to delete an unsafe path: {str(rel_path)!r}")
    fd = os.open(dest, _DEST_FLAGS)
    try:
        fd = descend(fd, parts[:-1])
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return False  # the folder is gone or is not ours to walk through
        raise
    try:
        try:
            os.unlink(parts[-1], dir_fd=fd)
        except FileNotFoundError:
            return False
        except IsADirectoryError:
            return False  # a folder now sits where our file was: not ours to remove
        return True
    finally:
        os.close(fd)
