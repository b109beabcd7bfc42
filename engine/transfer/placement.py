"""Put a finished partial file at its final path, atomically, never through a symlink.

The walk from ``dest_root`` to the file's folder uses directory file descriptors: each component
is opened relative to its parent with ``O_NOFOLLOW | O_DIRECTORY`` (created with ``mkdir`` at the
parent's descriptor if missing), and the file arrives with ``rename(src, name, src_dir_fd,
dst_dir_fd)``. No path string is resolved twice, so a symlink planted inside ``dest_root`` (by a
user, another program, or a malicious dataset) cannot redirect a write outside it, not even by
swapping a folder for a link between a check and a use. A symlink *at* the final name is replaced,
not followed: rename works on names.

``dest_root`` itself is opened normally (and created if missing): if the user points DEST at
a symlink, that is their choice. Durability (``fsync=True``) syncs the folder after the rename
and every folder in which a subfolder was created, so a crash leaves either the old state or
the whole new file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
from collections.abc import Callable
from functools import partial
from pathlib import Path, PurePosixPath

from engine.errors import LocalStorageError, TransientTransferError, UsageError
from engine.state_folder import SIDECAR_SUFFIX
from engine.transfer.partial import storage_error

__all__ = ["check_rel_path", "place", "write_and_place"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NAME_MAX = 255


def check_rel_path(rel_path: PurePosixPath) -> tuple[str, ...]:
    """The components of a destination path, or :class:`UsageError` if it could escape
    ``dest_root`` or is not a valid file name (absolute, empty, ``.``/``..``, NUL, too long)."""
    text = str(rel_path)
    if rel_path.is_absolute() or text in ("", "."):
        raise UsageError(f"destination path must be relative and non-empty: {text!r}")
    parts = tuple(text.split("/"))
    for part in parts:
        if part in ("", ".", "..") or "\0" in part:
            raise UsageError(f"destination path has an unsafe component: {text!r}")
        if len(part.encode("utf-8", "surrogateescape")) > _NAME_MAX:
            raise UsageError(f"destination path component longer than {_NAME_MAX} bytes")
    return parts


def _join(root: Path, parts: tuple[str, ...]) -> str:
    return str(root.joinpath(*parts))


def _open_dir(name: str, parent_fd: int, where: Callable[[], str]) -> tuple[int, bool]:
    """Open (creating if missing) the folder ``name`` under ``parent_fd``; True if created.
    ``where`` names it for messages (built only when one is needed)."""
    created = False
    for _ in range(3):  # a concurrent mkdir/rmdir can race us; a few tries settle it
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent_fd), created
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise LocalStorageError(
                    f"{where()} is a symlink or not a folder; refusing to follow it"
                ) from None
            raise storage_error(exc, f"cannot open folder {where()}") from None
        try:
            os.mkdir(name, 0o755, dir_fd=parent_fd)
            created = True
        except FileExistsError:
            continue
        except OSError as exc:
            raise storage_error(exc, f"cannot create folder {where()}") from None
    raise LocalStorageError(f"folder {where()} keeps changing under us")


def place(
    src_dir_fd: int,
    src_name: str,
    dest_root: Path,
    rel_path: PurePosixPath,
    *,
    fsync: bool,
) -> None:
    """Move ``src_name`` (in the folder ``src_dir_fd``) to ``dest_root/rel_path``.

    Blocking (a few syscalls; more with ``fsync``). Raises :class:`UsageError` for a bad
    ``rel_path`` and :class:`LocalStorageError` when the file system refuses.
    """
    parts = check_rel_path(rel_path)
    try:
        try:
            root_fd = os.open(dest_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            os.makedirs(dest_root, exist_ok=True)
            root_fd = os.open(dest_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise storage_error(exc, f"cannot open destination {dest_root}") from None
    fds = [root_fd]
    try:
        to_sync: list[int] = []
        # Paths for messages are built only on failure: this runs once per small object.
        for depth, part in enumerate(parts[:-1], start=1):
            fd, created = _open_dir(part, fds[-1], partial(_join, dest_root, parts[:depth]))
            if created:
                to_sync.append(fds[-1])
            fds.append(fd)
        parent = fds[-1]
        _rename(src_dir_fd, src_name, parent, parts[-1], lambda: dest_root / str(rel_path))
        if fsync:
            to_sync.append(parent)
            for fd in to_sync:
                os.fsync(fd)
    except OSError as exc:
        raise storage_error(exc, f"cannot place {dest_root / str(rel_path)}") from None
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def _rename(
    src_dir_fd: int, src_name: str, dst_dir_fd: int, name: str, where: Callable[[], Path]
) -> None:
    try:
        os.rename(src_name, name, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
        return
    except OSError as exc:
        if exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
            raise LocalStorageError(f"a folder is in the way of {where()}") from None
        if exc.errno != errno.EXDEV:
            raise storage_error(exc, f"cannot rename into {where()}") from None
    # The state folder is on another file system: copy next to the target, then rename.
    tmp = f".{name[:200]}.{secrets.token_hex(6)}.assetsync-tmp"
    src = os.open(src_name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=src_dir_fd)
    try:
        dst = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o644,
            dir_fd=dst_dir_fd,
        )
        try:
            size = os.fstat(src).st_size
            copied = 0
            while copied < size:
                n = os.sendfile(dst, src, copied, size - copied)
                if n == 0:
                    break
                copied += n
            os.fsync(dst)  # a copy is slow anyway; make it whole before it gets its name
        finally:
            os.close(dst)
        os.rename(tmp, name, src_dir_fd=dst_dir_fd, dst_dir_fd=dst_dir_fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dst_dir_fd)
        raise storage_error(exc, f"cannot copy into {where()}") from None
    finally:
        os.close(src)
    os.unlink(src_name, dir_fd=src_dir_fd)


def _create_exclusive(dir_fd: int, name: str) -> int:
    """A new partial file for a small object. If the name is taken, it is either a leftover of
    a dead process (reused) or another process's download in progress (refused: its lock)."""
    flags = os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dir_fd)
        leftover = False
    except FileExistsError:
        fd = os.open(name, flags, dir_fd=dir_fd)
        leftover = True
    try:
        # Held until the file is renamed away and closed, like every partial file's lock.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise TransientTransferError(
            f"another process is downloading this object ({name})"
        ) from None
    if leftover:
        os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):
            os.unlink(name + SIDECAR_SUFFIX, dir_fd=dir_fd)  # a dead download's sidecar
    return fd


def write_and_place(
    src_dir_fd: int,
    src_name: str,
    chunks: list[bytes],
    dest_root: Path,
    rel_path: PurePosixPath,
    *,
    fsync: bool,
) -> str:
    """A small object received whole: hash it, write it as ``src_name``, place it; returns
    the SHA-256. Blocking, meant for one worker-thread call per object: creating a file is the
    slowest step of a small transfer on many file systems, and this keeps it, the write, the
    hash and the rename off the event loop in a single hop."""
    sha = hashlib.sha256()
    total = 0
    for chunk in chunks:
        sha.update(chunk)
        total += len(chunk)
    try:
        fd = _create_exclusive(src_dir_fd, src_name)
    except OSError as exc:
        raise storage_error(exc, f"cannot create partial file {src_name}") from None
    try:
        try:
            written = os.pwritev(fd, chunks, 0) if chunks else 0
            if written != total:
                rest = memoryview(b"".join(chunks))[written:]
                while rest:
                    n = os.pwrite(fd, rest, written)
                    written += n
                    rest = rest[n:]
            if fsync:
                os.fsync(fd)
            # Still open, still locked: nobody can take the name over before it is renamed.
            place(src_dir_fd, src_name, dest_root, rel_path, fsync=fsync)
        finally:
            os.close(fd)
    except BaseException as exc:
        # Nothing here is worth resuming: a few hundred KiB come again faster than a sidecar.
        with contextlib.suppress(OSError):
            os.unlink(src_name, dir_fd=src_dir_fd)
        if isinstance(exc, OSError):
            raise storage_error(exc, f"cannot write {src_name}") from None
        raise
    return sha.hexdigest()
