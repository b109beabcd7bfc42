"""One download of an object at a time across processes sharing a DEST.

One object is downloaded by one process at a time: the transfer core's partial files (keyed by
asset and data) assume a single writer, and a second process reopening a partial that the first
has just renamed into place would write into the placed file. So a download holds an exclusive
lock on one byte of ``.assetsync/fetching.lock`` (the byte is chosen by a hash of the asset id,
:data:`FETCH_RANGE` of them: two assets rarely share one); a prefetcher that had to wait for it
first checks whether the other one has put the file in place already. For that check to see
the file, a download keeps its lock until the file's manifest row is committed (group commit
holds rows back for up to a commit's spacing and barrier), not only until the file is renamed
into place: :meth:`HeldLock.keep`. Whether another prefetcher could have placed it is asked of
one more byte, :data:`PRESENCE`, which every open ``FetchLocks`` read-locks: a download made while
another is present looks for the other's row first, whether or not it had to wait for the lock
(the other may have fetched the object and let go before this one came to it, after this one
had planned it from the manifest). Alone, no download pays for that look. The locks are Linux's
open-file-description locks (``F_OFD_SETLK``): like ``flock`` they belong to the open file, so
two prefetchers in one process exclude each other too, and one descriptor serves every object
(the per-object lock files this replaces cost a file creation per object on a fresh DEST, a
fifth of the prefetcher's event-loop time in ``benchmarks/prefetch_bench.py``). Where they do
not exist, POSIX record locks (``lockf``) take their place, which hold between processes only.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from engine.errors import UsageError
from engine.pipeline.sharing import NO_FLOCK, open_lock_file
from engine.state_folder import StateFolder

__all__ = ["FETCH_RANGE", "FetchLocks", "HeldLock", "others_hold", "range_lock"]

log = logging.getLogger("engine.prefetch")

FETCH_RANGE = 1 << 30
# The byte past the stripes: read-locked by every open FetchLocks, to tell whether it is alone.
PRESENCE = FETCH_RANGE


# struct flock: l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks), padding.
_FLOCK = "hhqqixxxx"


def range_lock(fd: int, op: int, offset: int) -> None:
    """Lock (``F_WRLCK``, or shared: ``F_RDLCK``) or unlock (``F_UNLCK``) one byte of ``fd``,
    without waiting."""
    ofd = getattr(fcntl, "F_OFD_SETLK", None)
    if ofd is None:  # no open-file-description locks here: POSIX record locks
        if op == fcntl.F_UNLCK:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)
        else:
            shared = op == fcntl.F_RDLCK
            fcntl.lockf(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB, 1, offset)
        return
    fcntl.fcntl(fd, ofd, struct.pack(_FLOCK, op, os.SEEK_SET, offset, 1, 0))


def others_hold(fd: int, offset: int) -> bool | None:
    """Whether another open file description holds a lock on the byte (``F_OFD_GETLK``: asked,
    not taken); None when it cannot be told (no OFD locks here, or no locks on this file
    system)."""
    ofd = getattr(fcntl, "F_OFD_GETLK", None)
    if ofd is None:
        return None
    probe = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0)
    try:
        answer = fcntl.fcntl(fd, ofd, probe)
    except OSError as exc:
        if exc.errno in NO_FLOCK:
            return None
        raise
    return bool(struct.unpack(_FLOCK, answer)[0] != fcntl.F_UNLCK)


@dataclass(slots=True)
class _Stripe:
    holders: int = 0
    locked: bool = False
    acquiring: anyio.Event | None = None


@dataclass(slots=True)
class HeldLock:
    """An object's fetch lock while :meth:`FetchLocks.hold` holds it."""

    _release: Callable[[], None] = field(repr=False)
    waited: bool = False  # another process had it: look for the file it placed
    kept: bool = False

    def keep(self) -> Callable[[], None]:
        """Keep the lock past the ``hold`` block; the call returned releases it (the caller
        must make sure it is called, at the latest when the locks are closed)."""
        self.kept = True
        return self._release


class FetchLocks:
    """One download of an object at a time across processes (see the module docstring).

    Within this process a byte's lock is shared by its downloads (different assets: an asset
    is fetched once per epoch here); the lock is taken by the first and dropped by the last.
    """

    def __init__(self, dest: Path) -> None:
        self.path = StateFolder(dest).fetch_lock
        self._fd = open_lock_file(self.path)
        self._stripes: dict[int, _Stripe] = {}
        self._working = True
        try:
            self._try_lock(PRESENCE, fcntl.F_RDLCK)  # nobody write-locks it: never refused
        except UsageError:
            os.close(self._fd)
            raise
        self._met_another = False
        self.alone()  # whoever is here already

    def alone(self) -> bool:
        """Whether no other prefetcher has had this DEST's fetch locks open since these were
        opened (asked at the opening and at each call: one that came and went between two calls
        goes unseen), so none can have placed a file planned here from an older manifest."""
        if not self._met_another:
            # Cannot tell: as if another were here (the look costs time, never a download).
            self._met_another = not self._working or others_hold(self._fd, PRESENCE) is not False
        return not self._met_another

    @staticmethod
    def stripe_of(asset_id: str) -> int:
        digest = hashlib.blake2b(asset_id.encode("utf-8", "surrogatepass"), digest_size=8)
        return int.from_bytes(digest.digest(), "big") % FETCH_RANGE

    def _try_lock(self, index: int, op: int = fcntl.F_WRLCK) -> bool:
        """One attempt at the byte's lock, without waiting: True once it is ours (or when this
        file system has no locks: the claims still keep paths apart)."""
        if not self._working:
            return True
        try:
            range_lock(self._fd, op, index)
            return True
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            if exc.errno in NO_FLOCK:
                log.warning("no file locks on %s: downloads are not serialised", self.path)
                self._working = False
                return True
            raise UsageError(f"cannot lock {self.path}: {exc.strerror}") from None

    async def _lock(self, index: int) -> None:
        """Take the byte's lock, which another process held a moment ago: poll until it lets
        go."""
        delay = 0.01
        while True:
            await anyio.sleep(delay)
            if self._try_lock(index):
                return
            delay = min(delay * 2, 0.2)

    @contextlib.asynccontextmanager
    async def hold(self, asset_id: str) -> AsyncIterator[HeldLock]:
        """Hold the lock of ``asset_id``'s byte until the block ends (or, once kept, until
        the release it returned is called)."""
        index = self.stripe_of(asset_id)
        stripe = self._stripes.get(index)
        if stripe is None:
            stripe = self._stripes[index] = _Stripe()
        stripe.holders += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._let_go(index, stripe)

        held = HeldLock(release)
        try:
            waited = False
            while not stripe.locked:
                if stripe.acquiring is not None:
                    await stripe.acquiring.wait()
                    waited = True
                    continue
                if self._try_lock(index):
                    # Nobody had it: the usual case, with no event and no wait to pay for.
                    stripe.locked = True
                    break
                stripe.acquiring = anyio.Event()
                try:
                    await self._lock(index)
                    waited = True
                    stripe.locked = True
                finally:
                    stripe.acquiring.set()
                    stripe.acquiring = None
            held.waited = waited
            yield held
        finally:
            if not held.kept:
                release()

    def _let_go(self, index: int, stripe: _Stripe) -> None:
        stripe.holders -= 1
        if stripe.holders > 0:
            return
        if self._stripes.get(index) is stripe:
            del self._stripes[index]
        if stripe.locked and self._working and self._fd >= 0:
            with contextlib.suppress(OSError):
                range_lock(self._fd, fcntl.F_UNLCK, index)

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)  # drops every lock this descriptor holds
        self._stripes.clear()
