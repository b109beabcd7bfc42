"""engine.transfer.disk_room: the run stops before the disk is full, and an object that cannot
fit above the reserve is refused before its first byte."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.errors import DiskFullError, LocalStorageError
from engine.transfer.disk_room import DiskGuard
from engine.transfer.partial import PartialDir

from .test_fetch_crash import small_filesystem

KiB = 1024
MiB = 1024 * KiB


def _free(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def test_a_reserve_above_the_free_space_stops_the_first_write(tmp_path: Path) -> None:
    folder = PartialDir(tmp_path)
    guard = DiskGuard(folder, _free(tmp_path) + 1024 * 1024 * MiB)
    with pytest.raises(DiskFullError, match="disk_reserve"):
        guard.charge(1)
    # And it stays stopped: once below the reserve, every charge looks again.
    with pytest.raises(DiskFullError):
        guard.charge(1)
    folder.close()


def test_no_reserve_never_looks(tmp_path: Path) -> None:
    folder = PartialDir(tmp_path)
    guard = DiskGuard(folder, 0)
    for _ in range(1000):
        guard.charge(1 << 50)
    guard.room_for(1 << 60, "object")
    assert not (tmp_path / "partial").exists()  # the folder was never even opened
    folder.close()


def test_an_object_larger_than_the_room_is_refused(tmp_path: Path) -> None:
    folder = PartialDir(tmp_path)
    guard = DiskGuard(folder, 1 * MiB)
    guard.room_for(1 * MiB, "small")  # fits
    with pytest.raises(LocalStorageError, match="do not fit") as caught:
        guard.room_for(10**16, "huge")  # 10 PB: no test machine has that
    assert not isinstance(caught.value, DiskFullError)  # that object fails, not the run
    folder.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
@pytest.mark.parametrize("chunk", [4 * KiB, 256 * KiB])
def test_writes_stop_before_the_reserve_is_crossed(tmp_path: Path, chunk: int) -> None:
    # A tmpfs only this test writes to: the free space moves only with our writes. Charges come
    # before writes, as in the transfer core; the guard must refuse while the reserve is still
    # there (crossed by one chunk at most), and long before the disk is full.
    with small_filesystem(tmp_path / "small", "16m") as small:
        folder = PartialDir(small)
        reserve = 8 * MiB
        guard = DiskGuard(folder, reserve, every=64 * MiB)
        fd = os.open(small / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        written = 0

        def write_until_refused() -> None:
            nonlocal written
            while written < 32 * MiB:
                guard.charge(chunk)
                os.write(fd, b"f" * chunk)
                written += chunk

        try:
            with pytest.raises(DiskFullError):
                write_until_refused()
        finally:
            os.close(fd)
        free = _free(small)
        assert free >= reserve - chunk, (free, reserve)
        assert written >= 16 * MiB - reserve - 2 * MiB  # and it did not stop long before
        folder.close()
