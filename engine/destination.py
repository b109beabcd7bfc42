"""Whether DEST can be used, found out without creating anything.

A run checks DEST before it asks the platform anything, and creates it (with its lock and
manifest) only once the platform has accepted the token and knows the version: a refused run
leaves the file system exactly as it found it. This module is the check; it only looks
(``lstat``, ``access``), never writes.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.errors import UsageError

__all__ = ["check_destination"]

_WRITE = os.W_OK | os.X_OK


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def check_destination(dest: Path, *, writable: bool) -> Path:
    """DEST as an absolute path, or :class:`~engine.errors.UsageError` saying why it cannot be
    used: a regular file (or anything but a directory), a symlink, a path under a regular file,
    or (``writable``) a folder this process may not write into or create DEST in."""
    given = Path(dest).expanduser()
    absolute = given.absolute()
    if given.is_symlink():
        raise UsageError(f"destination {given} is a symlink; give the real directory")
    if os.path.lexists(absolute):
        if not absolute.is_dir():
            raise UsageError(f"destination {given} exists and is not a directory")
        if writable and not os.access(absolute, _WRITE):
            raise UsageError(f"destination {given} is not writable")
        return absolute
    parent = _nearest_existing(absolute.parent)
    if not parent.is_dir():
        raise UsageError(f"cannot create destination {given}: {parent} is not a directory")
    if writable and not os.access(parent, _WRITE):
        # access() also answers EROFS for a read-only file system.
        raise UsageError(f"cannot create destination {given}: {parent} is not writable")
    return absolute
