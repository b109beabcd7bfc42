"""A barrier whose write-back fails: an error, and no later barrier vouches for anything.

A real file system whose device fails writes: ext4 on a loop device backed by a file on a tmpfs
too small for it. Writes land in the page cache (ext4 thinks it has room); write-back then
fails, and fdatasync / syncfs report it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from engine.errors import LocalStorageError
from engine.transfer import Transferer

from .conftest import KiB, MiB, fast_options, harness

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(os.geteuid() != 0, reason="a loop device and mounts need root"),
    pytest.mark.skipif(
        shutil.which("losetup") is None or shutil.which("mkfs.ext4") is None,
        reason="needs losetup and mkfs.ext4",
    ),
]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


@contextmanager
def failing_filesystem(where: Path) -> Iterator[Path]:
    """An ext4 of 64 MiB whose device has room for about 8 MiB of it."""
    back, mnt = where / "back", where / "mnt"
    back.mkdir(parents=True)
    mnt.mkdir()
    if _run("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(back)).returncode:
        pytest.skip("cannot mount a tmpfs")
    loop = None
    try:
        image = back / "image"
        with image.open("wb") as fh:
            fh.truncate(64 * MiB)
        made = _run("losetup", "--find", "--show", str(image))
        if made.returncode:
            pytest.skip(f"no loop device: {made.stderr.strip()}")
        loop = made.stdout.strip()
        mkfs = _run("mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-E", "nodiscard", loop)
        assert mkfs.returncode == 0, mkfs.stderr
        mounted = _run("mount", "-o", "errors=continue", loop, str(mnt))
        assert mounted.returncode == 0, mounted.stderr
        try:
            yield mnt
        finally:
            _run("umount", "-l", str(mnt))
    finally:
        if loop is not None:
            _run("losetup", "-d", loop)
        _run("umount", "-l", str(back))


@pytest.mark.slow
@pytest.mark.parametrize("barrier", ["files", "syncfs"])
async def test_a_failed_barrier_raises_and_so_does_every_later_one(
    tmp_path: Path, barrier: str
) -> None:
    with failing_filesystem(tmp_path / "fs") as mnt:
        async with harness(
            mnt, assets=24, large_share=0.0, empty_share=0.0, min_size=700 * KiB, max_size=MiB
        ) as h:
            options = fast_options(
                fsync=True, barrier=barrier, chunk_size=MiB, segment_size=MiB, disk_reserve=0
            )
            t = Transferer(h.session, options, h.state_dir, clock=h.emu.now, group_commit=True)
            assets = h.assets(lambda a: True)
            assert sum(a.size for a in assets) > 12 * MiB  # more than the device holds
            for asset in assets[:-1]:
                result = await h.fetch(t, asset)
                assert result.awaits_barrier
            with pytest.raises(LocalStorageError, match="cannot make the placed files durable"):
                await t.sync_placed()
            # The kernel reports a write-back error once: a later barrier could not vouch for
            # the files of the failed one, nor for new ones on the same device.
            await h.fetch(t, assets[-1])
            with pytest.raises(LocalStorageError, match="an earlier durability barrier failed"):
                await t.sync_placed()
            t.close()
