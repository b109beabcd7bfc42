"""A large body read straight from its socket by a worker thread, into one reused buffer.

Why: on the event loop every receive is a wake-up (selector, callback, future, task step) and a
fresh ``bytes`` object, ~20-40 µs of Python per 64-256 KiB; at line rate on loopback that was
most of the transfer core's CPU beyond SHA-256, on a 2-core machine shared with the server. A
thread blocked in ``recv_into`` pays the kernel's copy and almost nothing else, and releases the
GIL while it waits, copies, hashes and writes. Measured on the benchmark machine with
``benchmarks/transfer_bench.py``: see the README.

:func:`pump` runs on the worker thread. It never touches event-loop objects: it reports each
batch written through ``landed`` (which the caller forwards with ``call_soon_threadsafe``) and
watches ``stop`` so that a cancelled transfer's thread exits within :data:`_SLICE` seconds.
Whatever ends the body (its last byte, a reset, a stall, a drip below the minimum rate, a
cancellation), every byte received is written and reported before :func:`pump` returns or
raises, as on the event-loop path. The minimum rate is checked against ``time.monotonic`` as
bytes arrive, and the disk reserve is charged before each write, as on the event-loop path.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Protocol

from engine.transfer.http1 import BodyError, ReadTimeout
from engine.transfer.min_rate import RateFloor, rate_floor

__all__ = ["PumpStopped", "pump"]

# How long one poll() waits before looking at the stop flag and the stall clock.
_SLICE = 0.25
# A partly filled buffer waits at most this long before it is written (a slow body still
# reaches the disk and the sidecar every so often), like the event-loop path's batches.
_FLUSH_AFTER = 0.5


# splice(2): Linux only (os.splice since Python 3.10).
_SPLICE = hasattr(os, "splice")
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)
_PIPE_SIZE = 1024 * 1024  # the default cap for unprivileged processes (pipe-max-size)
_NOT_SPLICEABLE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})


class PumpStopped(Exception):
    """The transfer was cancelled while the thread was reading."""


class _Hash(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...


def pump(
    sock_fd: int,
    write: Callable[[memoryview, int], None],
    pos: int,
    count: int,
    *,
    buffer_size: int,
    stall: float,
    stop: threading.Event,
    landed: Callable[[int], None],
    sha: _Hash | None = None,
    gate: Callable[[int], None] | None = None,
    splice_to: tuple[int, Callable[[OSError], Exception]] | None = None,
    charge: Callable[[int], None] | None = None,
    min_rate: tuple[float, float] | None = None,
) -> None:
    """Read ``count`` bytes from the non-blocking socket ``sock_fd`` and write them from file
    offset ``pos`` on, ``buffer_size`` at a time; ``landed(n)`` after each write.

    ``sha``, when given, is fed every byte in order (the caller must not touch it meanwhile).
    ``gate(offset)``, when given, is called before each read and may block: flow control.
    ``splice_to``: the file's descriptor and the exception for a failed write to it; without
    ``sha``, the bytes then go from the socket to the file through a pipe with ``splice(2)``
    (where the system and the file system allow it) and never enter this process.
    ``charge(n)``, when given, is called before ``n`` bytes are written and may raise (the disk
    reserve). ``min_rate``: ``(bytes/s, window s)``, the body's minimum rate.
    Raises :class:`ReadTimeout` after ``stall`` seconds without a byte,
    :class:`~engine.transfer.min_rate.TooSlow` below the minimum rate, :class:`BodyError` if
    the connection ends early, :class:`OSError` for a socket error, :class:`PumpStopped` once
    ``stop`` is set, and whatever ``write`` or ``charge`` raise.
    """
    floor = rate_floor(*min_rate, time.monotonic()) if min_rate is not None else None
    if splice_to is not None and sha is None and _SPLICE:
        file_fd, file_error = splice_to
        pos, count = _splice(
            sock_fd,
            file_fd,
            file_error,
            write,
            pos,
            count,
            report_size=buffer_size,
            stall=stall,
            stop=stop,
            landed=landed,
            gate=gate,
            charge=charge,
            floor=floor,
        )
        if count == 0:
            return
    _read(
        sock_fd,
        write,
        pos,
        count,
        buffer_size=buffer_size,
        stall=stall,
        stop=stop,
        landed=landed,
        sha=sha,
        gate=gate,
        charge=charge,
        floor=floor,
    )


def _read(
    sock_fd: int,
    write: Callable[[memoryview, int], None],
    pos: int,
    count: int,
    *,
    buffer_size: int,
    stall: float,
    stop: threading.Event,
    landed: Callable[[int], None],
    sha: _Hash | None,
    gate: Callable[[int], None] | None,
    charge: Callable[[int], None] | None,
    floor: RateFloor | None,
) -> None:
    """:func:`pump` through a buffer in this process: ``recv_into``, hash, ``pwrite``."""
    buf = bytearray(min(buffer_size, max(count, 1)))
    view = memoryview(buf)
    size = len(buf)
    filled = 0
    batch_started = 0.0
    poller = select.poll()
    poller.register(sock_fd, select.POLLIN | select.POLLPRI)

    def flush() -> None:
        nonlocal pos, filled
        if filled:
            data = view[:filled]
            if charge is not None:
                charge(filled)
            if sha is not None:
                sha.update(data)
            write(data, pos)
            pos += filled
            n, filled = filled, 0
            landed(n)

    try:
        while count > 0:
            if stop.is_set():
                raise PumpStopped
            if gate is not None:
                gate(pos + filled)
            try:
                got = os.readv(sock_fd, [view[filled : filled + min(count, size - filled)]])
            except BlockingIOError:
                _wait(poller, stall, stop, flush if filled else None, batch_started)
                continue
            if got == 0:
                raise BodyError(f"connection closed {count} bytes before the body's end")
            if not filled:
                batch_started = time.monotonic()
            filled += got
            count -= got
            if filled == size:
                flush()
            if floor is not None and count:
                floor.feed(got, time.monotonic())  # what came is written by the finally
    finally:
        # Land what was received, whatever ended the body. A write error raised here outranks
        # the network error that brought us here.
        flush()


def _splice(
    sock_fd: int,
    file_fd: int,
    file_error: Callable[[OSError], Exception],
    write: Callable[[memoryview, int], None],
    pos: int,
    count: int,
    *,
    report_size: int,
    stall: float,
    stop: threading.Event,
    landed: Callable[[int], None],
    gate: Callable[[int], None] | None,
    charge: Callable[[int], None] | None,
    floor: RateFloor | None,
) -> tuple[int, int]:
    """:func:`pump` in the kernel: socket to pipe to file with ``splice(2)``, one copy instead
    of two (measured on loopback: 0.52 s of system time per GiB against 0.82 s for
    ``recv_into`` and ``pwrite``). Returns where it stopped, ``(pos, 0)`` when done, or the
    rest for :func:`_read` when splicing is refused (``EINVAL``: a socket or a file system
    without it)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # the default 64 KiB pipe works too, in more steps
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    poller = select.poll()
    poller.register(sock_fd, select.POLLIN | select.POLLPRI)
    unreported = 0
    since = 0.0

    def report() -> None:
        nonlocal unreported
        if unreported:
            n, unreported = unreported, 0
            landed(n)

    try:
        while count > 0:
            if stop.is_set():
                raise PumpStopped
            if gate is not None:
                gate(pos)
            try:
                got = os.splice(sock_fd, w, min(count, _PIPE_SIZE), flags=_SPLICE_FLAGS)
            except BlockingIOError:
                _wait(poller, stall, stop, report if unreported else None, since)
                continue
            except OSError as exc:
                if exc.errno in _NOT_SPLICEABLE:
                    return pos, count
                raise
            if got == 0:
                raise BodyError(f"connection closed {count} bytes before the body's end")
            count -= got
            if not unreported:
                since = time.monotonic()
            if charge is not None:
                charge(got)  # raising leaves these bytes in the pipe: a resume asks again
            left = got
            while left:
                try:
                    moved = os.splice(r, file_fd, left, offset_dst=pos, flags=_SPLICE_FLAGS)
                except OSError as exc:
                    if exc.errno not in _NOT_SPLICEABLE:
                        raise file_error(exc) from None
                    # The file system takes no splice: what is in the pipe goes by hand, the
                    # rest of the body by reading.
                    while left:
                        data = os.read(r, left)
                        write(memoryview(data), pos)
                        pos += len(data)
                        left -= len(data)
                        unreported += len(data)
                    return pos, count
                if moved <= 0:  # cannot happen with bytes in the pipe; never spin on it
                    raise file_error(OSError(errno.EIO, "splice moved nothing"))
                pos += moved
                left -= moved
                unreported += moved
            if unreported >= report_size:
                report()
            if floor is not None and count:
                floor.feed(got, time.monotonic())
        return pos, 0
    finally:
        # Whatever ended the body, what reached the file is reported (bytes still in the pipe
        # were never written: a resume asks for them again).
        report()
        os.close(r)
        os.close(w)


def _wait(
    poller: select.poll,
    stall: float,
    stop: threading.Event,
    flush: Callable[[], None] | None,
    batch_started: float,
) -> None:
    """Until the socket is readable; raises after ``stall`` seconds of silence or on ``stop``."""
    deadline = time.monotonic() + stall
    while True:
        now = time.monotonic()
        if flush is not None and now - batch_started >= _FLUSH_AFTER:
            flush()
            flush = None
        left = deadline - now
        if left <= 0:
            raise ReadTimeout("no bytes within the stall timeout")
        if poller.poll(min(left, _SLICE) * 1000):
            return  # readable, hung up or in error: the next read tells which
        if stop.is_set():
            raise PumpStopped
