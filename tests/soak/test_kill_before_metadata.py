"""A SIGKILL must not cost the files already in place: what the kill soak found, made exact.

The soak (:mod:`tests.soak.test_kill_soak`) showed kills early in a run wasting every file that
run had downloaded. The cause: the pipeline's joiner holds each finished file until its listing
page's tags and annotations have arrived, and only then writes its manifest row. A file renamed
into DEST before that has no row when the process is SIGKILLed (a graceful stop records it
without metadata; a SIGKILL cannot), so the next run downloads it again. Here the page's
annotations are held back by the emulator until every file is in place, then the run is killed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.emulator import Emulator, FaultRule
from engine.manifest import Manifest
from tests.command import command_env, mirror_command
from tests.mirror.helpers import assert_mirror_matches, files_under

pytestmark = pytest.mark.slow

ASSETS = 200


def _env(token: str) -> dict[str, str]:
    return command_env(token)


def _recorded_ok(dest: Path) -> int:
    if not (dest / ".assetsync" / "manifest.sqlite").exists():
        return 0
    with Manifest.open(dest, create=False, read_only=True) as manifest:
        return manifest.status().states.get("ok", 0)


def _kill_once_every_file_is_recorded(
    victim: subprocess.Popen[bytes], dest: Path, who: str
) -> None:
    """Wait until every file is in place, then recorded (the metadata is still stalled for
    minutes, so only a record without it can come), and SIGKILL ``victim``."""
    try:
        deadline = time.monotonic() + 60
        while len(files_under(dest)) < ASSETS:
            assert victim.poll() is None, f"{who} ended before its files were in place"
            assert time.monotonic() < deadline, "the files never all came into place"
            time.sleep(0.02)
        # A file is renamed into place, then recorded: wait out that short window.
        while _recorded_ok(dest) < ASSETS:
            assert victim.poll() is None, f"{who} ended before recording its files"
            assert time.monotonic() < deadline, "files in place were never recorded"
            time.sleep(0.05)
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()


def _a_mirror_fetches_nothing_again(emu: Emulator, dest: Path) -> None:
    emu.faults.clear()
    emu.counters.reset()
    done = subprocess.run(
        mirror_command(emu, dest, "-q", "--json"),
        env=_env(emu.token),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    emu.quiesce_sync()
    assert_mirror_matches(emu, dest)
    # Nothing the killed run had in place is fetched again.
    assert (json.loads(done.stdout)["downloaded"], emu.counters.storage_bytes) == (0, 0)


def test_files_in_place_before_their_page_metadata_survive_a_sigkill(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    emulator = Emulator(assets=ASSETS, seed=3, large_share=0.0, nasty_filenames=False)
    with emulator.in_thread() as emu:
        total = sum(emu.dataset.expected(a).size for a in emu.dataset.asset_ids())
        # The page's annotations come after the API timeout; the run is killed long before.
        emu.faults.add(FaultRule(target="annotations_bulk", kind="stall", seconds=120.0))
        victim = subprocess.Popen(
            mirror_command(emu, dest, "-q"),
            env=_env(emu.token),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _kill_once_every_file_is_recorded(victim, dest, "the run")
        emu.quiesce_sync()
        assert emu.counters.storage_bytes == total  # every file came, whole, once
        print(f"killed with {ASSETS} files in place, {_recorded_ok(dest)} recorded")
        _a_mirror_fetches_nothing_again(emu, dest)


# The prefetcher, over one run of the same pipeline: its items wait for their metadata, but its
# files must be recorded as they land, as the mirror's are.
_PREFETCH_CHILD = """
import sys
from engine.prefetch import Prefetcher
from engine.settings import load_settings

api, version, dest, window = sys.argv[1:5]
settings = load_settings({"api_url": api, "dataset_version": version, "dest": dest})
with Prefetcher(settings, window=int(window), window_bytes=None) as prefetcher:
    for item in prefetcher:
        pass
"""


def test_a_prefetchers_files_in_place_before_their_metadata_survive_a_sigkill(
    tmp_path: Path,
) -> None:
    dest = tmp_path / "d"
    emulator = Emulator(assets=ASSETS, seed=4, large_share=0.0, nasty_filenames=False)
    with emulator.in_thread() as emu:
        total = sum(emu.dataset.expected(a).size for a in emu.dataset.asset_ids())
        # No item can go out (its annotations never come): the fetchers fill the window.
        emu.faults.add(FaultRule(target="annotations_bulk", kind="stall", seconds=120.0))
        args = [sys.executable, "-c", _PREFETCH_CHILD, emu.api_url, emu.dataset_version_id]
        victim = subprocess.Popen(
            [*args, str(dest), str(ASSETS)],
            env=_env(emu.token),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _kill_once_every_file_is_recorded(victim, dest, "the prefetcher")
        emu.quiesce_sync()
        assert emu.counters.storage_bytes == total  # every file came, whole, once
        _a_mirror_fetches_nothing_again(emu, dest)
