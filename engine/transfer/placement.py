"""Put a finished partial file at its final path, atomically, never through a symlink.

The walk from ``dest_root`` to the file's folder uses directory file descriptors: each component
is opened relative to its parent with ``O_NOFOLLOW | O_DIRECTORY`` (created with ``mkdir`` at the
parent's descriptor if missing), and the file arrives with ``rename(src, name, src_dir_fd,
dst_dir_fd)``. No path string is resolved twice, so a symlink planted inside ``dest_root`` (by a
user, another program, or a malicious dataset) cannot redirect a write outside it, not even by
swapping a folder for a link between a check and a use. A symlink *at* the final name is replaced,
not followed: rename works on names.

:class:`DestDirs` keeps those descriptors open for the run (one ``openat`` and one ``close`` less
per file for DEST itself, two more per subfolder component). A descriptor names a folder, not a
path, so each use of a kept subfolder first checks, with one ``fstatat(parent, name,
AT_SYMLINK_NOFOLLOW)`` per component from DEST down, that the name still leads to that very
folder (same device and inode, still a folder, not a link); if not — replaced by a symlink, moved,
deleted — the descriptor is retired and the component is opened afresh, which refuses a
symlink. That is the same guarantee the walk per file gave (a folder is trusted as of the moment
it was checked), at one syscall per component instead of two. ``dest_root`` itself is opened once
per run, normally (and created if missing): if the user points DEST at a symlink, that is their
choice; a DEST renamed or replaced mid-run keeps receiving the run's files where it began, like
the manifest and the partial folder, which are held open the same way.

Durability (``fsync=True``) syncs the file before the rename, and after it the folder and every
folder in which a subfolder was created, so a crash leaves either the old state or the whole new
file. Group commit (:mod:`engine.transfer.durability`) moves those syncs to a barrier instead.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath

from engine.errors import LocalStorageError, TransientTransferError, UsageError
from engine.state_folder import SIDECAR_SUFFIX
from engine.transfer.partial import storage_error

__all__ = [
    "DestDirs",
    "Folder",
    "check_rel_path",
    "create_small",
    "place",
    "sha256_of",
    "write_all",
    "write_and_place",
]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NAME_MAX = 255
# Folders whose descriptors a run keeps (beyond them a folder is opened per use, as before),
# and descriptors retired after their folder was replaced (kept open until the run ends: a
# worker thread may still be renaming into one; past the bound, nothing more is kept).
_MAX_KEPT = 256
_MAX_RETIRED = 256


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
        if len(part) > _NAME_MAX // 4 and len(part.encode("utf-8", "surrogateescape")) > _NAME_MAX:
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


class Folder:
    """An open folder of DEST: its descriptor, and what it was when opened (device, inode)."""

    __slots__ = ("dev", "fd", "gone", "ino")

    def __init__(self, fd: int, dev: int, ino: int) -> None:
        self.fd = fd
        self.dev = dev
        self.ino = ino
        self.gone = False  # a rename found it removed (set by whichever thread renamed)


@dataclass(slots=True)
class Walk:
    """The folder a file goes to, as :meth:`DestDirs.walk` found it.

    ``created_in``: folders in which a subfolder was created on the way (their entries must be
    synced for the new folder to survive a crash). ``owned``: descriptors opened for this walk
    only (the kept ones were full), which the caller closes once done with ``folder``."""

    folder: Folder
    created_in: list[Folder] = field(default_factory=list)
    owned: list[int] = field(default_factory=list)

    def close_owned(self) -> None:
        owned, self.owned = self.owned, []
        for fd in owned:
            with contextlib.suppress(OSError):
                os.close(fd)


class DestDirs:
    """``dest_root`` and its subfolders, held open for a run (see the module's docstring).

    Not thread-safe: walk on the event loop. A kept descriptor is closed only by :meth:`close`,
    so a worker thread may use a folder's descriptor after a walk handed it out, even if a later
    walk retired it. ``keep=False``: nothing is kept, each walk opens its own descriptors (all
    of them then in :attr:`Walk.owned`)."""

    def __init__(self, root: Path, *, keep: bool = True) -> None:
        self.path = root
        self.keeps = keep
        self._root: Folder | None = None
        self._kept: dict[tuple[str, ...], Folder] = {}
        self._retired: list[int] = []
        self._keep = keep

    def _open_root(self) -> Folder:
        try:
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                os.makedirs(self.path, exist_ok=True)
                fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                st = os.fstat(fd)
            except OSError:
                os.close(fd)
                raise
        except OSError as exc:
            raise storage_error(exc, f"cannot open destination {self.path}") from None
        return Folder(fd, st.st_dev, st.st_ino)

    def walk(self, parts: tuple[str, ...]) -> Walk:
        """The folder of ``dest_root/parts[0]/…/parts[-2]`` (``parts`` ends with the file's
        name), each component created if missing; a symlink or non-folder on the way is a
        :class:`LocalStorageError`."""
        folder = self._root
        if folder is None:
            folder = self._open_root()
            if self.keeps:
                self._root = folder
            else:
                walk = Walk(folder, owned=[folder.fd])
                try:
                    return self._down(walk, parts)
                except BaseException:
                    walk.close_owned()
                    raise
        if len(parts) == 1:  # the usual layout: files right in DEST
            return Walk(folder)
        walk = Walk(folder)
        try:
            return self._down(walk, parts)
        except BaseException:
            walk.close_owned()
            raise

    def _down(self, walk: Walk, parts: tuple[str, ...]) -> Walk:
        folder = walk.folder
        kept = self._kept
        for depth in range(1, len(parts)):
            key = parts[:depth]
            name = parts[depth - 1]
            known = kept.get(key)
            if known is not None:
                if not known.gone and self._still(folder, name, known):
                    folder = known
                    continue
                self._retire(key)
            fd, created = _open_dir(name, folder.fd, partial(_join, self.path, key))
            try:
                st = os.fstat(fd)
            except OSError as exc:
                os.close(fd)
                raise storage_error(exc, f"cannot open folder {_join(self.path, key)}") from None
            if created:
                walk.created_in.append(folder)
            folder = Folder(fd, st.st_dev, st.st_ino)
            if self._keep and len(kept) < _MAX_KEPT:
                kept[key] = folder
            else:
                walk.owned.append(fd)
        walk.folder = folder
        return walk

    @staticmethod
    def _still(parent: Folder, name: str, known: Folder) -> bool:
        """Whether ``name`` under ``parent`` is still the folder ``known`` (not a link)."""
        try:
            st = os.stat(name, dir_fd=parent.fd, follow_symlinks=False)
        except OSError:
            return False
        return stat.S_ISDIR(st.st_mode) and st.st_ino == known.ino and st.st_dev == known.dev

    def _retire(self, key: tuple[str, ...]) -> None:
        folder = self._kept.pop(key)
        self._retired.append(folder.fd)
        if len(self._retired) >= _MAX_RETIRED:
            # Someone keeps replacing folders under us: stop keeping any (each walk then opens
            # and closes its own, as it did before descriptors were kept).
            self._keep = False

    def close(self) -> None:
        """Close every descriptor (once no thread uses them any more)."""
        fds = [f.fd for f in self._kept.values()] + self._retired
        if self._root is not None:
            fds.append(self._root.fd)
        self._kept.clear()
        self._retired = []
        self._root = None
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def place(
    src_dir_fd: int,
    src_name: str,
    dirs: DestDirs,
    parts: tuple[str, ...],
    *,
    fsync: bool,
    walk: Walk | None = None,
) -> Walk:
    """Move ``src_name`` (in the folder ``src_dir_fd``) to ``dest_root/parts``; returns the
    walk to its folder (the caller closes its owned descriptors).

    Blocking (a few syscalls; more with ``fsync``). ``walk``: the folder, if already walked to
    on the event loop (then this may run on a worker thread; a walk happens on the event loop
    only). Raises :class:`LocalStorageError` when the file system refuses.
    """
    if walk is None:
        walk = dirs.walk(parts)
    name = parts[-1]
    folder = walk.folder
    try:
        try:
            _rename(src_dir_fd, src_name, folder.fd, name, lambda: _where(dirs, parts))
        except FileNotFoundError:
            if _exists(src_dir_fd, src_name):
                # The folder was removed after the walk checked it: this object fails (it is
                # fetched again next run), later walks open the folder afresh.
                folder.gone = True
                raise LocalStorageError(
                    f"cannot place {_where(dirs, parts)}: its folder was removed meanwhile"
                ) from None
            raise
        if fsync:
            for folder in [*walk.created_in, walk.folder]:
                os.fsync(folder.fd)
    except OSError as exc:
        raise storage_error(exc, f"cannot place {_where(dirs, parts)}") from None
    return walk


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return True


def _where(dirs: DestDirs, parts: tuple[str, ...]) -> Path:
    return dirs.path.joinpath(*parts)


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


def create_small(dir_fd: int, name: str, *, lock: bool) -> int:
    """A new partial file for a small object.

    If the name is taken, it is either a leftover of a dead process (reused, emptied) or another
    process's download in progress (refused: its lock). A freshly created file is locked only
    when ``lock`` is true, i.e. when it will be written off the event loop: written, placed and
    closed by the event loop in one go (no ``await`` in between), nobody in this process can see
    it half-written, and no other process downloads this object meanwhile: a mirror holds DEST's
    lock exclusively, and prefetchers sharing DEST hold the object's fetch lock
    (:mod:`engine.prefetch.locking`) for the whole download. ``O_EXCL`` still refuses a name
    that exists, so a leftover is always locked before it is reused.
    """
    flags = os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        try:
            fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dir_fd)
            leftover = False
        except FileExistsError:
            fd = os.open(name, flags, dir_fd=dir_fd)
            leftover = True
    except OSError as exc:
        raise storage_error(exc, f"cannot create partial file {name}") from None
    if leftover or lock:
        try:
            # Held until the file is renamed away and closed, like every partial file's lock.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise TransientTransferError(
                f"another process is downloading this object ({name})"
            ) from None
    if leftover:
        try:
            os.ftruncate(fd, 0)
        except OSError as exc:
            os.close(fd)
            raise storage_error(exc, f"cannot empty partial file {name}") from None
        with contextlib.suppress(OSError):
            os.unlink(name + SIDECAR_SUFFIX, dir_fd=dir_fd)  # a dead download's sidecar
    return fd


def sha256_of(chunks: list[bytes]) -> str:
    """The SHA-256 of a body received whole."""
    if len(chunks) == 1:
        return hashlib.sha256(chunks[0]).hexdigest()
    sha = hashlib.sha256()
    for chunk in chunks:
        sha.update(chunk)
    return sha.hexdigest()


def write_all(fd: int, chunks: list[bytes], total: int) -> None:
    """Write ``chunks`` (``total`` bytes) from offset 0, looping on short writes."""
    if not chunks:
        return
    written = os.write(fd, chunks[0]) if len(chunks) == 1 else os.writev(fd, chunks)
    if written != total:
        rest = memoryview(b"".join(chunks))[written:]
        while rest:
            n = os.write(fd, rest)
            rest = rest[n:]


def write_and_place(
    src_dir_fd: int,
    src_name: str,
    chunks: list[bytes],
    total: int,
    dirs: DestDirs,
    parts: tuple[str, ...],
    walk: Walk,
) -> str:
    """A small object received whole: hash it, write it as ``src_name``, fsync it, place it
    and sync its folder; returns the SHA-256. Blocking, for one worker-thread call per object
    when each file must be durable on its own (no group commit): fsync on the event loop would
    hold up every other transfer. ``walk``: the file's folder, walked to on the event loop."""
    digest = sha256_of(chunks)
    fd = create_small(src_dir_fd, src_name, lock=True)
    try:
        try:
            write_all(fd, chunks, total)
            os.fsync(fd)
            # Still open, still locked: nobody can take the name over before it is renamed.
            place(src_dir_fd, src_name, dirs, parts, fsync=True, walk=walk)
        finally:
            os.close(fd)
    except BaseException as exc:
        # Nothing here is worth resuming: a few hundred KiB come again faster than a sidecar.
        with contextlib.suppress(OSError):
            os.unlink(src_name, dir_fd=src_dir_fd)
        if isinstance(exc, OSError):
            raise storage_error(exc, f"cannot write {src_name}") from None
        raise
    return digest
