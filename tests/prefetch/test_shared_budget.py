"""One disk budget shared by the prefetchers of a DEST: a DataLoader's workers, or any processes.

The budget's books live in the manifest (engine.manifest.budget); each prefetcher pins the
items its consumer has still to read. What a user sees: the data under DEST stays within
``max_bytes`` while several workers stream a version larger than it (sampled while they run),
every item handed out is whole and correct, and a killed worker never blocks the others.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest

from engine.manifest import Manifest
from engine.prefetch import Prefetcher
from tests.command import command_env
from tests.prefetch.helpers import (
    budget_settings,
    budget_version,
    data_bytes_on_disk,
    listing,
    sha256_of,
)


def _children() -> list[int]:
    """This process's child processes (a DataLoader's workers)."""
    me = os.getpid()
    pids: set[int] = set()
    for task in os.listdir(f"/proc/{me}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{me}/task/{task}/children") as fh:
            pids.update(int(pid) for pid in fh.read().split())
    return sorted(pids)


def _stopped(pid: int) -> bool:
    """Every thread of ``pid`` is stopped (or the process is gone)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # that thread is gone
        if state not in ("T", "t", "Z", "X"):
            return False
    return True


class DiskSampler:
    """Samples the data bytes under DEST from a thread while the prefetchers run.

    A walk of DEST is not atomic: a file counted just before another process evicts it, and a
    file that process then writes before the walk reaches it, are both counted though they
    were never on disk together. With the books at the budget (as a streaming cache keeps
    them) that alone reads as over the budget. So each sample stops the child processes (the
    DataLoader's workers) with SIGSTOP, waits until they are stopped, walks, and lets them go
    on: every file operation has either happened or not.
    """

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        kids = _children()
        for pid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 5
            while not all(_stopped(pid) for pid in kids):
                assert time.monotonic() < deadline, "a worker did not stop"
                time.sleep(0.0005)
            return data_bytes_on_disk(self.dest)
        finally:
            for pid in kids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.dest.exists():
                self.samples.append(self._sample())
            time.sleep(0.003)

    def __enter__(self) -> DiskSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def budget_without_overrun(total: int, prefetchers: int, window: int, hold: int) -> int:
    """Half the version, or more if needed so that the budget can never be overrun: the files
    each prefetcher pins (its window, its held items, the last epoch's held ones) and its
    downloads in flight (4, each reserving at most the largest file), all of the largest size.
    Only then is "never over the budget" a promise (else the item a loop waits for goes over
    it, with a warning, rather than stall)."""
    largest = 160 * 1024
    worst = prefetchers * ((window + 2 * hold) * largest + 4 * largest)
    budget = max(total // 2, worst)
    assert total > budget, "the version must not fit: files have to be evicted"
    return budget


def _evicted_rows(dest: Path) -> int:
    with Manifest.open(dest, create=False) as manifest:
        return sum(1 for row in manifest.iter_rows() if row.state == "evicted")


def test_a_budget_with_two_dataloader_workers_holds(tmp_path: Path):
    """The issue's case: a DataLoader with 2 workers and max_bytes, two shuffled epochs of a
    version twice the budget. DEST's data never exceeds the budget, sampled every few ms."""
    pytest.importorskip("torch")
    from engine.prefetch import PrefetchDataset

    dest = tmp_path / "d"
    with budget_version(61, assets=200).in_thread() as emu:
        ids = listing(emu)
        total = sum(emu.dataset.expected(a).size for a in ids)
        budget = budget_without_overrun(total, prefetchers=2, window=4, hold=4)
        dataset = PrefetchDataset(
            budget_settings(emu, dest), max_bytes=budget, window=4, shuffle=True, seed=7
        )
        # loader(): the workers keep what the loader holds in flight (hold = 4 items here).
        loader = dataset.loader(batch_size=None, num_workers=2, persistent_workers=True)
        with DiskSampler(dest) as sampler:
            for epoch in range(2):
                dataset.set_epoch(epoch)
                seen = []
                for item in loader:
                    assert item.path is not None
                    assert sha256_of(item.path) == emu.dataset.expected(item.asset_id).sha256
                    seen.append(item.asset_id)
                assert sorted(seen) == sorted(ids), f"epoch {epoch}: each asset once"
        del loader  # the persistent workers leave their seats
        assert len(sampler.samples) > 20
        assert max(sampler.samples) <= budget, (max(sampler.samples), budget)
        assert _evicted_rows(dest) > 0  # the version did not fit: files were evicted
        assert data_bytes_on_disk(dest) <= budget


def test_the_loader_hold_covers_the_batches_in_flight():
    pytest.importorskip("torch")
    from engine.prefetch.torch_dataset import loader_hold

    assert loader_hold(None, 0, None) == 1  # in the loop's process: the item in hand
    assert loader_hold(None, 2, None) == 4  # torch's prefetch_factor 2, + in hand + before
    assert loader_hold(32, 4, 3) == 5 * 32


async def test_two_prefetchers_stream_through_one_budget_side_by_side(tmp_path: Path):
    """Two shards of a shuffled order in one process (as two workers), over two epochs: the
    budget holds after every item either hands out, and neither ever hands out a file the
    other evicted (each is read as it is handed out)."""
    dest = tmp_path / "d"
    async with budget_version(62, assets=160) as emu:
        ids = listing(emu)
        total = sum(emu.dataset.expected(a).size for a in ids)
        budget = budget_without_overrun(total, prefetchers=2, window=4, hold=1)
        settings = budget_settings(emu, dest)
        seen: list[str] = []
        samples: list[int] = []

        async def stream(shard: int) -> None:
            options = {"max_bytes": budget, "window": 4, "shuffle": True, "seed": 3}
            async with Prefetcher(settings, shard=(shard, 2), **options) as prefetcher:
                for _epoch in range(2):
                    async for item in prefetcher:
                        assert item.path is not None
                        digest = sha256_of(item.path)
                        assert digest == emu.dataset.expected(item.asset_id).sha256
                        seen.append(item.asset_id)
                        samples.append(data_bytes_on_disk(dest))
                        await anyio.sleep(0)

        async with anyio.create_task_group() as tg:
            tg.start_soon(stream, 0)
            tg.start_soon(stream, 1)
        assert sorted(seen) == sorted(ids * 2)
        assert max(samples) <= budget, (max(samples), budget)
        assert _evicted_rows(dest) > 0


_CHILD = """
import sys, time
from engine.prefetch import Prefetcher
from engine.settings import load_settings

api, version, dest, budget = sys.argv[1:5]
settings = load_settings({
    "api_url": api, "dataset_version": version, "dest": dest,
    "transfer": {"chunk_size": 65536}, "limits": {"concurrency": 4},
})
with Prefetcher(settings, max_bytes=int(budget), window=6) as prefetcher:
    for item in prefetcher:
        print("item", flush=True)
        time.sleep(60)  # a consumer stuck on its first item: its pins and reservations stay
"""


def _holders(dest: Path) -> list[int]:
    conn = sqlite3.connect(f"file:{dest / '.assetsync' / 'manifest.sqlite'}?mode=ro", uri=True)
    try:
        return [holder for (holder,) in conn.execute("SELECT holder FROM budget_holders")]
    finally:
        conn.close()


def test_a_killed_prefetcher_never_blocks_the_budget(tmp_path: Path):
    """A worker SIGKILLed mid-epoch leaves its seat, pins and reservations in the manifest. The
    next prefetcher finds it dead (its liveness lock went with it), clears it, and may even
    bring another budget; the budget then holds for it alone."""
    dest = tmp_path / "d"
    with budget_version(63, assets=100).in_thread() as emu:
        ids = listing(emu)
        total = sum(emu.dataset.expected(a).size for a in ids)
        args = [sys.executable, "-c", _CHILD, emu.api_url, emu.dataset_version_id, str(dest)]
        child = subprocess.Popen(
            [*args, str(total)],
            env=command_env(emu.token),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == b"item", "the child never got an item"
            assert len(_holders(dest)) == 1
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert len(_holders(dest)) == 1  # the dead seat is still on record

        budget = budget_without_overrun(total, prefetchers=1, window=4, hold=1)

        async def main() -> None:
            async with Prefetcher(budget_settings(emu, dest), max_bytes=budget, window=4) as p:
                got = []
                async for item in p:
                    assert item.path is not None
                    assert sha256_of(item.path) == emu.dataset.expected(item.asset_id).sha256
                    assert data_bytes_on_disk(dest) <= budget
                    got.append(item.asset_id)
                assert sorted(got) == sorted(ids)
                assert len(_holders(dest)) == 1  # itself: the dead one was cleared

        anyio.run(main)
        # Its seat stays while this process lives, pinning the item it handed out last (the
        # consumer may still read it): no reservation, one pin.
        with sqlite3.connect(dest / ".assetsync" / "manifest.sqlite") as conn:
            assert conn.execute(
                "SELECT count(*), sum(reserved) FROM budget_holders"
            ).fetchone() == (1, 0)
            assert conn.execute("SELECT count(*) FROM budget_pins").fetchone() == (1,)
        assert data_bytes_on_disk(dest) <= budget
