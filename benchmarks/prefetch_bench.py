"""Prefetcher vs mirror-then-read, on one emulated version, in one run.

    .venv/bin/python -m benchmarks.prefetch_bench [--assets 2000] [--size 128KiB] [--nginx]
        [--window 64] [--concurrency 32] [--step-ms 0] [--repeat 3] [--url-ttl 21600] [--fsync]
        [--jobs N [--split]]

A training loop wants its first sample early and then a steady stream. Both ways of feeding it
run against the same emulated version (loopback only), into fresh folders, in turns:

* **prefetch**: ``for item in Prefetcher(settings, window=...)``, reading each file as it comes;
* **mirror-then-read**: ``mirror(settings)``, then reading every file in listing order (the
  manifest's paths), as a loader over a finished mirror would.

Both run without fsync (a training cache) unless ``--fsync`` asks for the default durability
(files made durable before their rows are committed: group commit, for both sides).

Each reports the time to the first item (from the start of the run), the steady rate (items/s
after the first item, to the last), and the total. ``--step-ms`` adds a simulated training step
per item (both sides pay it after their first item). The prefetcher's second epoch (every file
on disk already) is timed too. Figures are medians over ``--repeat`` rounds.

``--jobs N`` (N >= 2) adds rounds of N prefetchers started together on one fresh DEST (N
training jobs sharing a cache, each in its own thread), in turns with one job alone: the
storage bytes served over the version's bytes (1.00: each object fetched once between them) and
the time to every job's last item. With ``--split`` the N take shards of one order, as the
workers of one DataLoader do (no object is theirs to share: the cost of the look for one
another's files shows there).

The bytes come from the emulator's own storage (generated, in Python) or, with ``--nginx``,
from nginx serving files the emulator wrote (Python out of the data plane, as in
``benchmarks/servers.py``). The emulator runs on its own thread and loop (uvloop), the engine on
another, as a training process would use it.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from pydantic import SecretStr

from engine.emulator import Emulator, EmulatorThread, ExternalStorage
from engine.manifest import Manifest
from engine.mirroring import mirror
from engine.prefetch import Prefetcher
from engine.prefetch.options import parse_size
from engine.settings import Settings, load_settings

KiB = 1024


@dataclass
class Timing:
    first: float  # seconds to the first item
    total: float  # seconds to the last item
    items: int

    @property
    def steady(self) -> float:
        span = self.total - self.first
        return (self.items - 1) / span if span > 0 and self.items > 1 else float("inf")


def _settings(emu: Emulator, dest: Path, concurrency: int, fsync: bool = False) -> Settings:
    return load_settings(
        {
            "api_url": emu.api_url,
            "dataset_version": emu.dataset_version_id,
            "dest": dest,
            "token": SecretStr(emu.token),
            "limits": {"concurrency": concurrency, "per_host": concurrency},
            # A training cache: no fsync by default (the same for both sides).
            "transfer": {"fsync": fsync},
        }
    )


def _step(step_s: float) -> None:
    if step_s > 0:
        time.sleep(step_s)


def run_prefetch(settings: Settings, window: int, step_s: float) -> tuple[Timing, Timing]:
    timings = []
    with Prefetcher(settings, window=window) as prefetcher:
        for _epoch in range(2):
            start = time.perf_counter()
            first = 0.0
            count = 0
            for item in prefetcher:
                assert item.path is not None
                item.path.read_bytes()
                count += 1
                if count == 1:
                    first = time.perf_counter() - start
                _step(step_s)
            timings.append(Timing(first, time.perf_counter() - start, count))
    return timings[0], timings[1]


def run_jobs(settings: Settings, window: int, jobs: int, split: bool) -> float:
    """``jobs`` prefetchers on one DEST at once, one epoch each (``split``: each its shard of
    it): seconds to the last item."""
    opened = threading.Barrier(jobs)
    errors: list[BaseException] = []

    def one_job(index: int) -> None:
        shard = (index, jobs) if split else None
        try:
            with Prefetcher(settings, window=window, shard=shard) as prefetcher:
                opened.wait()
                for item in prefetcher:  # one epoch
                    assert item.path is not None
                    item.path.read_bytes()
        except BaseException as exc:  # raised again below, in the caller's thread
            opened.abort()
            errors.append(exc)

    start = time.perf_counter()
    threads = [threading.Thread(target=one_job, args=(i,)) for i in range(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - start


def _paths_in_listing_order(dest: Path, order: list[str]) -> list[Path]:
    with Manifest.open(dest, create=False) as manifest:
        rows = manifest.rows(order)
    return [dest / str(rows[asset_id].path) for asset_id in order]


def run_mirror_then_read(settings: Settings, order: list[str], step_s: float) -> Timing:
    start = time.perf_counter()
    summary = anyio.run(mirror, settings, backend_options={"use_uvloop": True})
    assert summary.outcome == "ok", summary
    assert settings.dest is not None
    first = 0.0
    count = 0
    for path in _paths_in_listing_order(Path(settings.dest), order):
        path.read_bytes()
        count += 1
        if count == 1:
            first = time.perf_counter() - start
        _step(step_s)
    return Timing(first, time.perf_counter() - start, count)


@contextlib.contextmanager
def _platform(args: argparse.Namespace, work: Path) -> Iterator[Emulator]:
    size = parse_size(args.size)
    spec: dict[str, Any] = {
        "assets": args.assets,
        "seed": 0,
        "min_size": size // 2,
        "max_size": size * 3 // 2,
        "large_share": 0.0,
        "empty_share": 0.0,
        "nasty_filenames": False,
        "url_ttl": args.url_ttl,
    }
    if not args.nginx:
        with EmulatorThread(Emulator(**spec), use_uvloop=True) as emu:
            yield emu
        return
    from engine.emulator.nginx import NginxServer

    objects = work / "objects"
    objects.mkdir()
    with NginxServer(objects, worker_processes=2) as nginx:
        emulator = Emulator(**spec, external_storage=ExternalStorage(nginx.base_url, nginx.secret))
        emulator.write_objects(objects)
        with EmulatorThread(emulator, use_uvloop=True) as emu:
            yield emu


def _fmt(seconds: float) -> str:
    return f"{seconds * 1000:9.1f} ms" if seconds < 10 else f"{seconds:9.2f} s "


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.prefetch_bench", description=__doc__
    )
    parser.add_argument("--assets", type=int, default=2000)
    parser.add_argument("--size", default="128KiB", help="mean file size (half to 1.5x)")
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--step-ms", type=float, default=0.0, help="simulated step per item")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--nginx", action="store_true", help="serve the bytes with nginx")
    parser.add_argument("--url-ttl", type=float, default=6 * 3600.0, help="signed URL life (s)")
    parser.add_argument("--fsync", action="store_true", help="durable files (both sides)")
    parser.add_argument("--jobs", type=int, default=1, help="also N prefetchers on one DEST")
    parser.add_argument("--split", action="store_true", help="the N jobs take shards of one order")
    args = parser.parse_args(argv)
    if not 1 <= args.jobs <= 16:
        parser.error("--jobs in 1..16")
    if not 1 <= args.assets <= 200_000 or not 1 <= args.repeat <= 20:
        parser.error("--assets in 1..200000, --repeat in 1..20")
    if not 1 <= args.url_ttl <= 7 * 86400:
        parser.error("--url-ttl in 1..604800 seconds")
    step_s = args.step_ms / 1000

    work = Path(tempfile.mkdtemp(prefix="assetsync-prefetch-bench-"))
    results: dict[str, list[Timing]] = {"prefetch": [], "epoch2": [], "mirror": []}
    shared: dict[int, list[tuple[float, float]]] = {1: [], args.jobs: []}  # (seconds, served)
    try:
        with _platform(args, work) as emu:
            order = list(emu.dataset.asset_ids())
            total_bytes = sum(emu.dataset.expected(a).size for a in order)
            print(
                f"{len(order)} assets, {total_bytes / 2**20:.1f} MiB, window {args.window}, "
                f"concurrency {args.concurrency}, step {args.step_ms:g} ms, "
                f"storage {'nginx' if args.nginx else 'emulator'}, URLs live {args.url_ttl:g} s, "
                f"fsync {'on' if args.fsync else 'off'}, "
                f"{args.repeat} rounds"
            )
            for round_ in range(args.repeat):
                for side in ("prefetch", "mirror") if round_ % 2 == 0 else ("mirror", "prefetch"):
                    dest = work / f"{side}-{round_}"
                    settings = _settings(emu, dest, args.concurrency, args.fsync)
                    if side == "prefetch":
                        epoch0, epoch1 = run_prefetch(settings, args.window, step_s)
                        results["prefetch"].append(epoch0)
                        results["epoch2"].append(epoch1)
                    else:
                        results["mirror"].append(run_mirror_then_read(settings, order, step_s))
                    shutil.rmtree(dest, ignore_errors=True)
            for round_ in range(args.repeat if args.jobs > 1 else 0):
                counts = (1, args.jobs) if round_ % 2 == 0 else (args.jobs, 1)
                for jobs in counts:
                    dest = work / f"jobs{jobs}-{round_}"
                    settings = _settings(emu, dest, args.concurrency, args.fsync)
                    before = emu.counters.storage_bytes
                    seconds = run_jobs(settings, args.window, jobs, args.split and jobs > 1)
                    shared[jobs].append(
                        (seconds, (emu.counters.storage_bytes - before) / total_bytes)
                    )
                    shutil.rmtree(dest, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'':28} {'first item':>12} {'steady items/s':>15} {'last item':>12}")
    rows = [
        ("prefetch (epoch 0)", results["prefetch"]),
        ("mirror-then-read", results["mirror"]),
        ("prefetch (epoch 1, on disk)", results["epoch2"]),
    ]
    for label, timings in rows:
        first = statistics.median(t.first for t in timings)
        steady = statistics.median(t.steady for t in timings)
        total = statistics.median(t.total for t in timings)
        print(f"{label:28} {_fmt(first):>12} {steady:15.0f} {_fmt(total):>12}")
    p, m = results["prefetch"], results["mirror"]
    sooner = statistics.median(t.first for t in m) / statistics.median(t.first for t in p)
    last = statistics.median(t.total for t in p) / statistics.median(t.total for t in m)
    print(
        f"\nfirst item: prefetch {sooner:.0f}x sooner; last item: prefetch/mirror-then-read "
        f"= {last:.2f}"
    )
    if args.jobs > 1:
        title = "one DEST, shards of one order" if args.split else "one DEST, started together"
        print(f"\n{title:28} {'last item':>12} {'bytes served':>15}")
        for jobs, runs in shared.items():
            label = f"{jobs} prefetcher{'s' if jobs > 1 else ''}"
            seconds = statistics.median(r[0] for r in runs)
            served = statistics.median(r[1] for r in runs)
            print(f"{label:28} {_fmt(seconds):>12} {served:14.2f}x")
        alone = statistics.median(r[0] for r in shared[1])
        together = statistics.median(r[0] for r in shared[args.jobs])
        print(f"\n{args.jobs} jobs on one DEST / one job alone: last item {together / alone:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
