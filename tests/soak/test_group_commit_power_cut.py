"""Group commit: a mirror (or a prefetcher) SIGKILLed while it commits, then a power cut, leaves
no row without its bytes.

The mirror writes small files without an fsync each and records them only after a barrier made
them durable (:mod:`engine.pipeline.writer`). A SIGKILL alone cannot tell whether that barrier
ran: the page cache outlives the process. So DEST is an ext4 on a loop device whose backing file
sits on a tmpfs, and right after each kill the test copies that backing file: the copy is what
the device holds, without the page cache, as a power cut would leave it. Before the copy the
manifest alone is synced: the kernel may write its pages back before the files', and the copy
must hold the committed rows to put them to the test. The copy is mounted
(its journal replayed) and every manifest row in state ``ok`` on it must name a file whose size
and SHA-256 are the object's. The live DEST is checked the same way, and the next run goes on
from it.

Kills land while the run commits: once the manifest (read-only, from this process) shows a
random number of new rows past the run's start. A run that ends before its moment must have
ended well; the test needs at least :data:`MIN_KILLS` kills and makes at most :data:`MAX_RUNS`
runs.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from engine.emulator import Emulator, ExpectedAsset
from engine.manifest import Manifest
from tests.command import command_env, mirror_command
from tests.mirror.helpers import ok_count, sha256_of

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="a loop device and mounts need root"),
    pytest.mark.skipif(
        any(shutil.which(tool) is None for tool in ("losetup", "mkfs.ext4", "e2fsck")),
        reason="needs losetup, mkfs.ext4 and e2fsck",
    ),
]

KiB = 1024
MiB = 1024 * KiB
ASSETS = 1500
IMAGE_SIZE = 128 * MiB
MIN_KILLS = 4
MAX_RUNS = 8
# Hang guards, not speed assertions.
MOMENT_DEADLINE = 120.0
RUN_TIMEOUT = 300.0


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)


@contextmanager
def _mounted(image: Path, at: Path) -> Iterator[Path]:
    made = _run("losetup", "--find", "--show", str(image))
    if made.returncode:
        pytest.skip(f"no loop device: {made.stderr.strip()}")
    loop = made.stdout.strip()
    try:
        at.mkdir(exist_ok=True)
        mounted = _run("mount", "-t", "ext4", loop, str(at))
        assert mounted.returncode == 0, mounted.stderr
        try:
            yield at
        finally:
            assert _run("umount", str(at)).returncode == 0
    finally:
        _run("losetup", "-d", loop)


@contextmanager
def _loop_ext4(where: Path) -> Iterator[tuple[Path, Path]]:
    """An ext4 (journalled, the defaults) on a loop device backed by a file on a tmpfs:
    ``(mount point, backing image)``."""
    back = where / "back"
    back.mkdir(parents=True)
    if _run("mount", "-t", "tmpfs", "-o", "size=300m", "tmpfs", str(back)).returncode:
        pytest.skip("cannot mount a tmpfs")
    try:
        image = back / "image"
        with image.open("wb") as fh:
            fh.truncate(IMAGE_SIZE)
        mkfs = _run("mkfs.ext4", "-q", "-F", "-E", "nodiscard", str(image))
        assert mkfs.returncode == 0, mkfs.stderr
        with _mounted(image, where / "mnt") as mnt:
            yield mnt, image
    finally:
        _run("umount", "-l", str(back))


def _check_rows(dest: Path, expected: dict[str, ExpectedAsset], *, copy: bool = False) -> int:
    """Every row recorded ok has the object's bytes on disk, whole; returns how many rows.

    ``copy``: a power cut's copy, opened read-write (a scratch): its manifest may predate the
    schema (SQLite syncs the WAL at checkpoints only; losing the last commits is safe)."""
    if not (dest / ".assetsync" / "manifest.sqlite").exists():
        return 0
    with Manifest.open(dest, create=False, read_only=not copy) as manifest:
        assert manifest.check() == []
        rows = [row for row in manifest.iter_rows() if row.state == "ok"]
    for row in rows:
        want = expected[row.asset_id]
        assert (row.size, row.sha256) == (want.size, want.sha256), row.asset_id
        assert row.path is not None
        path = dest / row.path
        assert path.is_file(), f"{row.asset_id}: recorded, but {row.path} is missing"
        assert path.stat().st_size == row.size, f"{row.asset_id}: {row.path} is cut short"
        assert sha256_of(path) == row.sha256, f"{row.asset_id}: {row.path} has other bytes"
    return len(rows)


def _manifest_written_back_first(dest: Path) -> None:
    """The kernel may write the manifest's pages back before the files' (SQLite syncs its WAL
    only at checkpoints): make it so, so that the copy holds the rows the run committed."""
    state = dest / ".assetsync"
    for name in ("manifest.sqlite", "manifest.sqlite-wal"):
        try:
            fd = os.open(state / name, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for folder in (state, dest):
        if folder.is_dir():
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _power_cut_copy(image: Path, where: Path, expected: dict[str, ExpectedAsset]) -> int:
    """Copy the device as it is now (no page cache), mount the copy, check its rows."""
    copy = image.with_name("cut")
    shutil.copyfile(image, copy)
    # The copy is taken while the kernel may still be writing the dead run's pages back, so,
    # like a disk after a real power cut, it can hold a metadata block torn between two writes
    # (ext4 then answers EBADMSG): check and repair it as a boot would before mounting.
    fsck = _run("e2fsck", "-f", "-y", str(copy))
    assert fsck.returncode in (0, 1, 2), fsck.stdout + fsck.stderr  # 4+: left uncorrected
    try:
        with _mounted(copy, where / "cut") as mnt:
            return _check_rows(mnt / "dest", expected, copy=True)
    finally:
        copy.unlink()


# The prefetcher over the same pipeline: items go out as their files land, rows after the barrier.
_PREFETCH_CHILD = """
import sys
from engine.prefetch import Prefetcher
from engine.settings import load_settings

api, version, dest = sys.argv[1:4]
settings = load_settings({"api_url": api, "dataset_version": version, "dest": dest})
with Prefetcher(settings, window=64) as prefetcher:
    for item in prefetcher:
        pass
"""


def _command(tool: str, emu: Emulator, dest: Path) -> list[str]:
    if tool == "mirror":
        return mirror_command(emu, dest, "-q")
    return [sys.executable, "-c", _PREFETCH_CHILD, emu.api_url, emu.dataset_version_id, str(dest)]


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("tool", "barrier"),
    [("mirror", "files"), ("mirror", "syncfs"), ("prefetch", "files"), ("prefetch", "syncfs")],
)
def test_a_power_cut_after_a_kill_during_group_commits_leaves_no_row_without_its_bytes(
    tmp_path: Path, tool: str, barrier: str
) -> None:
    emu = Emulator(assets=ASSETS, seed=13, min_size=1 * KiB, max_size=64 * KiB, large_share=0.0)
    seed = (
        f"group-commit-cut:{barrier}" if tool == "mirror" else f"group-commit-cut:{tool}:{barrier}"
    )
    rng = random.Random(seed)
    kills = runs = 0
    checked_on_copies = 0
    with emu.in_thread() as running, _loop_ext4(tmp_path / "fs") as (mnt, image):
        dest = mnt / "dest"
        dataset = running.dataset
        expected = {asset_id: dataset.expected(asset_id) for asset_id in dataset.asset_ids()}
        env = command_env(
            running.token,
            ASSETSYNC_TRANSFER__GROUP_COMMIT="true",
            ASSETSYNC_TRANSFER__BARRIER=barrier,
            ASSETSYNC_TRANSFER__DISK_RESERVE="0",
        )
        argv = _command(tool, running, dest)
        while kills < MIN_KILLS:
            assert runs < MAX_RUNS, f"only {kills} of {runs} runs were killed while committing"
            runs += 1
            if ok_count(dest) == ASSETS:
                # A kill landed after the last commit (under load one barrier can cover all
                # that was left): start over, so that the next run has commits to kill.
                shutil.rmtree(dest)
            before = ok_count(dest)
            # Somewhere in the first quarter of what is left: later runs still have work.
            target = before + rng.randint(1, max(1, (ASSETS - before) // 4))
            started = time.monotonic()
            proc = subprocess.Popen(
                argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            try:
                while proc.poll() is None:
                    if ok_count(dest) >= target:
                        time.sleep(rng.random() * 0.05)  # anywhere in the commits that follow
                        proc.send_signal(signal.SIGKILL)
                        break
                    assert time.monotonic() - started < MOMENT_DEADLINE, "no moment came"
                    time.sleep(0.01)
                _, err = proc.communicate(timeout=RUN_TIMEOUT)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            running.quiesce_sync()
            if proc.returncode == -signal.SIGKILL:
                kills += 1
            else:
                assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
            _manifest_written_back_first(dest)
            on_copy = _power_cut_copy(image, tmp_path, expected)
            live = _check_rows(dest, expected)
            assert on_copy <= live
            checked_on_copies += on_copy
            print(f"run {runs}: exit {proc.returncode}, rows {before} -> {live}, copy {on_copy}")
    # The copies did hold rows to check (not only empty manifests).
    assert checked_on_copies > 0
