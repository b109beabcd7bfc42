"""The pump thread's loop (engine.transfer.socket_pump) on a real socket pair: every byte lands
once, in order, at its offset; a cut, a stall and a stop end it with every received byte written.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import LocalStorageError
from engine.transfer.hashing import HashGate, PrefixHasher
from engine.transfer.http1 import BodyError, ReadTimeout
from engine.transfer.min_rate import TooSlow
from engine.transfer.socket_pump import PumpStopped, pump


class Sink:
    """A file the pump writes into, and what it reported."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.landed: list[int] = []
        self.writes: list[tuple[int, int]] = []

    def write(self, data: memoryview, pos: int) -> None:
        self.writes.append((pos, len(data)))
        assert os.pwrite(self.fd, data, pos) == len(data)

    def read(self) -> bytes:
        size = os.fstat(self.fd).st_size
        return os.pread(self.fd, size, 0)

    def close(self) -> None:
        os.close(self.fd)


def _no_error(exc: OSError) -> Exception:
    raise AssertionError(f"the file refused a write: {exc}")


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)  # as an event loop's transport leaves it
    yield ours, theirs
    ours.close()
    theirs.close()


def _send_in_pieces(sock: socket.socket, data: bytes, pieces: list[int], close: bool) -> None:
    at = 0
    for size in pieces:
        if at >= len(data):
            break
        sock.sendall(data[at : at + size])
        at += size
    sock.sendall(data[at:])
    if close:
        sock.shutdown(socket.SHUT_WR)


# tmp_path is shared by the examples: each one truncates its file.
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    size=st.integers(min_value=1, max_value=300_000),
    offset=st.integers(min_value=0, max_value=10_000),
    buffer_size=st.integers(min_value=1, max_value=70_000),
    pieces=st.lists(st.integers(min_value=1, max_value=50_000), max_size=20),
    hashed=st.booleans(),
    spliced=st.booleans(),
)
def test_every_byte_lands_once_in_order(
    tmp_path: Path,
    size: int,
    offset: int,
    buffer_size: int,
    pieces: list[int],
    hashed: bool,
    spliced: bool,
) -> None:
    data = os.urandom(size)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    sink = Sink(tmp_path / "out.bin")
    sha = hashlib.sha256() if hashed else None
    gated: list[int] = []
    # The sender writes the body and then more (the next response on a kept-alive connection):
    # the pump must stop at exactly its count.
    sender = threading.Thread(target=_send_in_pieces, args=(theirs, data + b"NEXT", pieces, False))
    sender.start()
    try:
        pump(
            ours.fileno(),
            sink.write,
            offset,
            size,
            buffer_size=buffer_size,
            stall=10.0,
            stop=threading.Event(),
            landed=sink.landed.append,
            sha=sha,
            gate=gated.append,
            splice_to=(sink.fd, _no_error) if spliced else None,
        )
        sender.join()
        assert sink.read()[offset:] == data
        assert sum(sink.landed) == size
        # Writes are contiguous and in order, each reported once.
        if spliced and not hashed:  # the kernel wrote: nothing went through our buffer
            assert sink.writes == []
        else:
            pos = offset
            for at, n in sink.writes:
                assert at == pos
                pos += n
            assert [n for _, n in sink.writes] == sink.landed
        assert gated == sorted(gated) and all(offset <= g < offset + size for g in gated)
        if sha is not None:
            assert sha.hexdigest() == hashlib.sha256(data).hexdigest()
        assert ours.recv(16) == b"NEXT"  # the rest is left for the connection's next user
    finally:
        sender.join()
        sink.close()
        ours.close()
        theirs.close()


@pytest.mark.parametrize("spliced", [False, True])
def test_a_cut_body_is_an_error_and_what_came_is_written(
    tmp_path: Path, pair: tuple[socket.socket, socket.socket], spliced: bool
) -> None:
    ours, theirs = pair
    sink = Sink(tmp_path / "out.bin")
    data = os.urandom(5000)
    _send_in_pieces(theirs, data, [1000, 1000], close=True)
    with pytest.raises(BodyError):
        pump(
            ours.fileno(),
            sink.write,
            0,
            8000,
            buffer_size=64 * 1024,  # larger than what came: only the final flush writes it
            stall=10.0,
            stop=threading.Event(),
            landed=sink.landed.append,
            splice_to=(sink.fd, _no_error) if spliced else None,
        )
    assert sink.read() == data
    assert sum(sink.landed) == 5000
    sink.close()


@pytest.mark.parametrize("spliced", [False, True])
def test_silence_is_a_stall(
    tmp_path: Path, pair: tuple[socket.socket, socket.socket], spliced: bool
) -> None:
    ours, theirs = pair
    sink = Sink(tmp_path / "out.bin")
    theirs.sendall(b"x" * 100)
    with pytest.raises(ReadTimeout):
        pump(
            ours.fileno(),
            sink.write,
            0,
            1000,
            buffer_size=4096,
            stall=0.3,
            stop=threading.Event(),
            landed=sink.landed.append,
            splice_to=(sink.fd, _no_error) if spliced else None,
        )
    assert sink.read() == b"x" * 100 and sink.landed == [100]
    sink.close()


@pytest.mark.parametrize("spliced", [False, True])
def test_a_stop_ends_the_pump_and_keeps_what_came(
    tmp_path: Path, pair: tuple[socket.socket, socket.socket], spliced: bool
) -> None:
    ours, theirs = pair
    sink = Sink(tmp_path / "out.bin")
    stop = threading.Event()
    theirs.sendall(b"y" * 300)

    def gate(offset: int) -> None:
        if offset == 300:  # the 300 bytes are in the pump's buffer, not yet written
            stop.set()

    with pytest.raises(PumpStopped):
        pump(
            ours.fileno(),
            sink.write,
            0,
            10_000,
            buffer_size=64 * 1024,
            stall=60.0,
            stop=stop,
            landed=sink.landed.append,
            splice_to=(sink.fd, _no_error) if spliced else None,
            gate=gate,
        )
    assert sink.read() == b"y" * 300 and sink.landed == [300]
    sink.close()


@pytest.mark.parametrize("spliced", [False, True])
def test_a_slow_body_is_written_before_it_ends(
    tmp_path: Path, pair: tuple[socket.socket, socket.socket], spliced: bool
) -> None:
    """A batch does not wait in memory for the whole buffer: after a pause the bytes so far
    are written and reported (so a killed process finds them in the sidecar)."""
    ours, theirs = pair
    sink = Sink(tmp_path / "out.bin")
    first_landed = threading.Event()

    def landed(n: int) -> None:
        sink.landed.append(n)
        first_landed.set()

    def slow_sender() -> None:
        theirs.sendall(b"a" * 100)
        # The rest only once the first bytes were reported: they cannot have been held back.
        assert first_landed.wait(30)
        theirs.sendall(b"b" * 100)

    sender = threading.Thread(target=slow_sender)
    sender.start()
    pump(
        ours.fileno(),
        sink.write,
        0,
        200,
        buffer_size=1 << 20,
        stall=30.0,
        stop=threading.Event(),
        landed=landed,
        splice_to=(sink.fd, _no_error) if spliced else None,
    )
    sender.join()
    assert sink.landed == [100, 100]
    assert sink.read() == b"a" * 100 + b"b" * 100
    sink.close()


def test_wait_hashed_returns_once_the_hasher_gets_there_or_stops(tmp_path: Path) -> None:
    """The pumps' flow control: a pump ahead of the hash waits for it, never forever."""
    path = tmp_path / "data.bin"
    data = os.urandom(3 * 1024 * 1024)
    path.write_bytes(data)
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        hasher = PrefixHasher(dir_fd, "data.bin", len(data))
        result: list[str] = []
        thread = threading.Thread(target=lambda: result.append(hasher._run()))
        thread.start()
        hasher.advance(1024 * 1024)
        hasher.wait_hashed(1024 * 1024, timeout=30)
        assert hasher.hashed >= 1024 * 1024
        hasher.advance(len(data))
        thread.join(timeout=30)
        assert result == [hashlib.sha256(data).hexdigest()]
        assert hasher.hashed == len(data)

        stopped = PrefixHasher(dir_fd, "data.bin", len(data))
        stopped.stop()
        stopped.wait_hashed(len(data), timeout=30)  # returns at once: nobody would get there
        assert stopped.stopped and stopped.hashed == 0
    finally:
        os.close(dir_fd)


def test_the_hash_gate_holds_a_pump_back_until_the_hash_is_near(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    data = os.urandom(4 * 1024 * 1024)
    path.write_bytes(data)
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        hasher = PrefixHasher(dir_fd, "data.bin", len(data))
        gate = HashGate(hasher, 1024 * 1024, threading.Event(), max_wait=60.0)
        gate(3 * 1024 * 1024)  # the hasher is not running (no token yet): nobody waits
        assert not gate.gave_up
        thread = threading.Thread(target=hasher._run)
        thread.start()
        released = threading.Event()

        def pump_side() -> None:
            gate(3 * 1024 * 1024)
            released.set()

        waiter = threading.Thread(target=pump_side)
        waiter.start()
        assert not released.wait(0.3)  # held: the hash is at 0, 3 MiB behind
        hasher.advance(len(data))  # the prefix is on disk: the hash catches up
        waiter.join(timeout=30)
        assert released.is_set() and not gate.gave_up
        assert hasher.hashed > 2 * 1024 * 1024
        thread.join(timeout=30)
    finally:
        os.close(dir_fd)


def test_the_hash_gate_only_delays(tmp_path: Path) -> None:
    """A hash that does not move releases the pump after max_wait, for the rest of its body;
    a stop raises."""
    path = tmp_path / "data.bin"
    path.write_bytes(b"z" * 1024)
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        hasher = PrefixHasher(dir_fd, "data.bin", 1024)
        outcome: list[BaseException] = []

        def run() -> None:
            try:
                hasher._run()
            except LocalStorageError as exc:  # stop() below: the hasher gives up
                outcome.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        while not hasher.running:
            threading.Event().wait(0.01)
        gate = HashGate(hasher, 100, threading.Event(), max_wait=0.2)
        gate(500)  # nothing was advanced: the hash stays at 0
        assert gate.gave_up
        gate(900)  # from now on it does not wait at all

        stop = threading.Event()
        stop.set()
        with pytest.raises(PumpStopped):
            HashGate(hasher, 100, stop, max_wait=60.0)(500)
        hasher.stop()
        thread.join(timeout=30)
        assert len(outcome) == 1
    finally:
        os.close(dir_fd)


def test_a_file_that_refuses_splice_gets_the_bytes_by_hand(
    tmp_path: Path, pair: tuple[socket.socket, socket.socket]
) -> None:
    """splice(2) into an O_APPEND descriptor is refused (EINVAL), like a file system without
    splice: what is already in the pipe is written by hand and the rest read as usual."""
    ours, theirs = pair
    sink = Sink(tmp_path / "out.bin")
    appending = os.open(tmp_path / "out.bin", os.O_WRONLY | os.O_APPEND)
    data = os.urandom(200_000)
    sender = threading.Thread(target=_send_in_pieces, args=(theirs, data, [70_000], False))
    sender.start()
    try:
        pump(
            ours.fileno(),
            sink.write,
            0,
            len(data),
            buffer_size=64 * 1024,
            stall=10.0,
            stop=threading.Event(),
            landed=sink.landed.append,
            splice_to=(appending, _no_error),
        )
    finally:
        sender.join()
        os.close(appending)
    assert sink.read() == data and sum(sink.landed) == len(data)
    assert sink.writes  # the by-hand path wrote it
    sink.close()


def test_a_write_error_while_splicing_is_the_file_s_error(
    tmp_path: Path, pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, theirs = pair
    (tmp_path / "ro.bin").write_bytes(b"")
    read_only = os.open(tmp_path / "ro.bin", os.O_RDONLY)
    theirs.sendall(b"q" * 1000)

    class Refused(Exception):
        pass

    def refused(exc: OSError) -> Exception:
        return Refused(exc.errno)

    try:
        with pytest.raises(Refused):
            pump(
                ours.fileno(),
                lambda data, pos: None,
                0,
                1000,
                buffer_size=4096,
                stall=10.0,
                stop=threading.Event(),
                landed=lambda n: None,
                splice_to=(read_only, refused),
            )
    finally:
        os.close(read_only)


@pytest.mark.parametrize("spliced", [False, True])
def test_a_drip_below_the_minimum_rate_ends_the_pump_and_keeps_what_came(
    tmp_path: Path, pair: tuple[socket.socket, socket.socket], spliced: bool
) -> None:
    """A byte every 50 ms never lets the stall timeout fire; the minimum rate ends it, and the
    bytes that came are written and reported (the retry resumes after them)."""
    ours, theirs = pair
    sink = Sink(tmp_path / "out.bin")
    done = threading.Event()

    def drip() -> None:
        while not done.is_set():
            theirs.send(b"d")
            done.wait(0.05)

    sender = threading.Thread(target=drip)
    sender.start()
    try:
        with pytest.raises(TooSlow):
            pump(
                ours.fileno(),
                sink.write,
                0,
                10_000,
                buffer_size=64 * 1024,
                stall=30.0,
                stop=threading.Event(),
                landed=sink.landed.append,
                splice_to=(sink.fd, _no_error) if spliced else None,
                min_rate=(1000.0, 0.3),
            )
    finally:
        done.set()
        sender.join()
    kept = sink.read()
    assert 0 < len(kept) < 10_000 and kept == b"d" * len(kept)
    assert sum(sink.landed) == len(kept)
    sink.close()


@pytest.mark.parametrize("spliced", [False, True])
def test_a_fast_body_keeps_to_the_minimum_rate(
    tmp_path: Path, pair: tuple[socket.socket, socket.socket], spliced: bool
) -> None:
    ours, theirs = pair
    sink = Sink(tmp_path / "out.bin")
    data = os.urandom(200_000)
    sender = threading.Thread(target=_send_in_pieces, args=(theirs, data, [7000] * 20, False))
    sender.start()
    pump(
        ours.fileno(),
        sink.write,
        0,
        len(data),
        buffer_size=16 * 1024,
        stall=30.0,
        stop=threading.Event(),
        landed=sink.landed.append,
        splice_to=(sink.fd, _no_error) if spliced else None,
        min_rate=(1.0, 0.0001),  # every arrival closes a window: each one is checked
    )
    sender.join()
    assert sink.read() == data
    sink.close()


class _Full(Exception):
    pass


@pytest.mark.parametrize("spliced", [False, True])
@pytest.mark.parametrize("refuse", [False, True])
def test_every_byte_is_charged_before_it_is_written(
    tmp_path: Path, pair: tuple[socket.socket, socket.socket], spliced: bool, refuse: bool
) -> None:
    """The disk reserve is charged before each write: a refusal stops the pump before it."""
    ours, theirs = pair
    sink = Sink(tmp_path / "out.bin")
    charged: list[int] = []

    def charge(n: int) -> None:
        if refuse:
            raise _Full
        charged.append(n)

    data = os.urandom(50_000)
    sender = threading.Thread(target=_send_in_pieces, args=(theirs, data, [3000] * 5, False))
    sender.start()
    try:
        with pytest.raises(_Full) if refuse else contextlib.nullcontext():
            pump(
                ours.fileno(),
                sink.write,
                0,
                len(data),
                buffer_size=4096,
                stall=30.0,
                stop=threading.Event(),
                landed=sink.landed.append,
                splice_to=(sink.fd, _no_error) if spliced else None,
                charge=charge,
            )
    finally:
        sender.join()
    kept = sink.read()
    assert kept == (b"" if refuse else data)
    assert sum(charged) == len(kept) == sum(sink.landed)
    sink.close()
