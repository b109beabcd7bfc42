"""A process killed mid-transfer, and a full disk: the bytes on disk survive and are reused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

from engine.emulator import FaultRule
from engine.errors import DiskFullError
from engine.transfer import Transferer

from .conftest import MiB, current_body_path, fast_options, harness, settle

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("body_path")]

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["segmented", "single"])
async def test_killed_process_is_resumed_by_a_new_one(tmp_path: Path, kind: str) -> None:
    async with harness(tmp_path) as h:
        if kind == "segmented":
            asset = h.one(lambda a: a.size >= 3 * MiB)
        else:
            asset = h.one(lambda a: 300 * 1024 < a.size < MiB)
        # Slow storage, so that the child is surely mid-transfer when it dies.
        h.emu.faults.add(
            FaultRule(target="storage", kind="throttle", bytes_per_second=asset.size / 2)
        )
        args = {
            "api_url": h.emu.api_url,
            "token": h.emu.token,
            "asset_id": asset.asset_id,
            "data_id": asset.data_id,
            "state_dir": str(h.state_dir),
            "dest": str(h.dest),
            "rel": "killed.bin",
            "body_path": current_body_path(),
        }
        killed_at = 0
        async with await anyio.open_process(
            [sys.executable, "-m", "tests.transfer.child_fetch", json.dumps(args)],
            cwd=REPO,
            stderr=subprocess.STDOUT,
        ) as child:
            assert child.stdout is not None
            seen = ""
            async for chunk in child.stdout:
                seen += chunk.decode()
                lines = seen.splitlines()
                done = [int(line.split()[1]) for line in lines if line.startswith("bytes ")]
                if done and max(done) >= asset.size // 3:
                    killed_at = max(done)
                    child.send_signal(signal.SIGKILL)
                    break
                assert "finished" not in seen and "Traceback" not in seen, seen
            assert await child.wait() == -signal.SIGKILL
        assert killed_at and not (h.dest / "killed.bin").exists()
        # A single stream writes in order: every byte in the partial file must be reused.
        on_disk = sum(p.stat().st_size for p in (h.state_dir / "partial").glob("*.part"))

        h.emu.faults.clear()
        await settle(h.emu)  # the dead child's last response may still be on its way out
        h.emu.counters.reset()
        t = h.transferer()
        result = await h.fetch(t, asset, rel="killed.bin")
        h.check(result, asset)
        assert result.resumed and result.bytes_resumed >= killed_at
        if kind == "single":
            assert result.bytes_resumed == on_disk
        # Only the missing bytes crossed the wire: storage's own count says so.
        assert result.bytes_downloaded == asset.size - result.bytes_resumed
        assert h.emu.counters.storage_bytes_for(asset.data_id) == result.bytes_downloaded


@contextmanager
def small_filesystem(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``where`` (needs root: otherwise the test is skipped)."""
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def remount(where: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(where)], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
@pytest.mark.parametrize("fsync", [False, True])
async def test_disk_full_keeps_the_partial_for_a_later_resume(tmp_path: Path, fsync: bool) -> None:
    with small_filesystem(tmp_path / "small", "2m") as small:
        neighbour = small / "neighbour.txt"
        neighbour.write_bytes(b"untouched")
        async with harness(small) as h:
            asset = h.one(lambda a: a.size >= 3 * MiB)
            # No reserve: this is about the disk itself refusing a write (ENOSPC); a reserve
            # would refuse the object before its first byte (tests/transfer/test_fetch_bounds).
            t = h.transferer(fast_options(fsync=fsync, disk_reserve=0))
            with pytest.raises(DiskFullError, match="No space left"):
                await h.fetch(t, asset)
            assert h.partials()  # kept, with its sidecar
            assert not (h.dest / "files").exists()
            assert neighbour.read_bytes() == b"untouched"

            remount(small, "16m")
            await settle(h.emu)
            h.emu.counters.reset()
            result = await h.fetch(h.transferer(fast_options(fsync=fsync, disk_reserve=0)), asset)
            h.check(result, asset)
            assert result.resumed and result.bytes_resumed > 0
            assert result.bytes_downloaded == asset.size - result.bytes_resumed
            assert h.emu.counters.storage_bytes_for(asset.data_id) == result.bytes_downloaded


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
async def test_state_on_another_file_system_is_copied_into_place(tmp_path: Path) -> None:
    # rename(2) cannot cross file systems (EXDEV): placement copies next to the target, then
    # renames there, so the final path still never holds a partial file.
    with small_filesystem(tmp_path / "state-fs", "64m") as state_fs:
        async with harness(tmp_path / "h") as h:
            t = Transferer(h.session, fast_options(disk_reserve=0), state_fs)
            for asset in (h.one(lambda a: 0 < a.size < 64 * 1024), h.one(lambda a: a.size > MiB)):
                result = await h.fetch(t, asset)
                h.check(result, asset)
            assert not list((state_fs / "partial").iterdir())
            assert not [p for p in h.dest.rglob("*") if "assetsync-tmp" in p.name]
