"""Issue 14's benchmark: listing and planning at 100k, 300k and 1M assets, in flat memory?

``python benchmarks/scale_bench.py [--sizes 100000,300000,1000000] [--phases dry,mirror,rerun]``

For each size, ``assetsync emulator`` starts as its own process on 127.0.0.1 with tiny objects
(16-64 bytes, ordinary names, no empty or large objects; ``--cache-assets`` as many as listed so a
rerun meets stored rows, not regenerated ones, as a platform would serve them), and the real
``assetsync mirror`` runs as a subprocess (token in ``PICSELLIA_TOKEN``, ``-q --json``, default
settings otherwise) under GNU ``time`` for its peak RSS and CPU, its resident size also sampled
from ``/proc`` every 0.2 s. Phases, in this order:

``dry``
    ``--dry-run`` into an empty DEST: lister and planner (no manifest yet, nothing fetched).
``mirror``
    a real mirror of the tiny objects: lister, planner, metadata, transfers and manifest.
``rerun``
    the same mirror again, unchanged: lister, planner and manifest (no storage request).

Each run is checked before it is counted: exit code 0, the summary's counts (every asset
planned, downloaded, or skipped), no storage request on a dry run or a rerun. Printed: the
machine, date, commit and commands; per phase and size the wall time, assets/s, peak RSS (MB),
the RSS sampled at each quarter of the run, CPU of the mirror and of the emulator; and for each
phase whether peak RSS stays flat (within 20%) from the smallest size to the largest.

The mirror folders go under ``benchmarks/.work/scale-bench/`` (``--work``), deleted at the end
unless ``--keep``. Tiny files still cost an inode each: 1M assets take about 4 GB of disk.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks.emulator_proc import EmulatorProcess, emulator_process  # noqa: E402
from benchmarks.measure import run_measured  # noqa: E402
from benchmarks.mirror_bench import RUN_TIMEOUT, check_exit, json_summary, peak_mb  # noqa: E402

BIN = Path(sys.executable).parent
FLAT = 0.20  # "flat": the largest size's peak RSS within 20% of the smallest's
PHASES = ("dry", "mirror", "rerun")


def emulator_args(assets: int, seed: int, cache: bool) -> list[str]:
    args = [
        "--assets", str(assets), "--seed", str(seed),
        "--min-size", "16", "--max-size", "64",
        "--large-share", "0", "--empty-share", "0", "--no-nasty-filenames",
    ]  # fmt: skip
    if cache:
        args += ["--cache-assets", str(assets)]
    return args


class RssSampler:
    """VmRSS of one process every ``interval`` seconds, until stopped."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._start = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        status = Path(f"/proc/{self.pid}/status")
        while not self._stop.is_set():
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        mb = int(line.split()[1]) / 1024
                        self.samples.append((time.perf_counter() - self._start, mb))
                        break
            except (FileNotFoundError, ProcessLookupError):
                return
            self._stop.wait(self.interval)

    def quarters(self) -> list[float]:
        """The RSS at 25, 50, 75 and 100% of the sampled time (the last sample before each)."""
        if not self.samples:
            return []
        end = self.samples[-1][0]
        out = []
        for share in (0.25, 0.5, 0.75, 1.0):
            before = [mb for t, mb in self.samples if t <= end * share]
            out.append(before[-1] if before else self.samples[0][1])
        return out


@dataclass
class Run:
    phase: str
    assets: int
    wall: float
    cpu: float
    peak_rss_mb: float
    emulator_cpu: float
    quarters_mb: list[float]
    summary: dict[str, Any]
    requests: dict[str, int]
    command: str = field(repr=False, default="")

    @property
    def rate(self) -> float:
        return self.assets / self.wall


def run_phase(phase: str, emulator: EmulatorProcess, dest: Path, assets: int) -> Run:
    info = emulator.info
    command = [
        str(BIN / "assetsync"), "mirror",
        "--api-url", info["api_url"], "--dataset-version", info["dataset_version_id"],
        "--dest", str(dest), "-q", "--json",
    ]  # fmt: skip
    if phase == "dry":
        command.append("--dry-run")
    shown = (
        " ".join(command)
        .replace(info["api_url"], "$API")
        .replace(info["dataset_version_id"], "$DV")
    )
    env = {**os.environ, "PICSELLIA_TOKEN": info["token"]}
    emulator.control("POST", "counters/reset")
    samplers: list[RssSampler] = []

    def sample(pid: int) -> RssSampler:
        samplers.append(RssSampler(pid))
        return samplers[-1]

    with tempfile.TemporaryDirectory() as scratch:
        emulator_before = emulator.cpu_seconds()
        measured = run_measured(
            command, env=env, log_dir=Path(scratch), timeout=RUN_TIMEOUT, during=sample
        )
        emulator_cpu = emulator.cpu_seconds() - emulator_before
        check_exit(f"{phase} {assets}", measured)
        stdout = (Path(scratch) / "stdout.log").read_bytes()
    summary = json_summary(stdout)
    counters = emulator.counters()
    run = Run(
        phase, assets, measured.wall, measured.cpu, peak_mb(measured), emulator_cpu,
        samplers[0].quarters(), summary, counters["requests"], shown,
    )  # fmt: skip
    check(run)
    return run


def check(run: Run) -> None:
    """Raise unless the run did what its phase is for, for every asset."""
    s, n = run.summary, run.assets
    storage = run.requests.get("storage", 0)
    if s.get("listed") != n or s.get("failed"):
        raise RuntimeError(f"{run.phase} {n}: listed {s.get('listed')}, failed {s.get('failed')}")
    if run.phase == "dry" and (s["downloaded"] != n or storage):
        raise RuntimeError(f"dry {n}: planned {s['downloaded']}, {storage} storage requests")
    if run.phase == "mirror" and s["downloaded"] != n:
        raise RuntimeError(f"mirror {n}: downloaded {s['downloaded']}")
    if run.phase == "rerun" and (s["skipped"] != n or s["downloaded"] or storage):
        raise RuntimeError(f"rerun {n}: {s}, {storage} storage requests")


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(mem_gb, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "commit": commit,
        "load_before": os.getloadavg()[0],
    }


def report(runs: list[Run], facts: dict[str, Any]) -> bool:
    print()
    print(
        f"Scale benchmark, {facts['date']}: {facts['cpus']} CPUs ({facts['cpu']}), "
        f"{facts['memory_gb']} GB, Python {facts['python']}, Linux {facts['kernel']}, "
        f"commit {facts['commit']}, load average at start {facts['load_before']:.2f}"
    )
    print("Objects of 16-64 bytes; emulator and mirror are separate processes on loopback.")
    for run in runs:
        if run.command:
            print(f"command ({run.phase}): PICSELLIA_TOKEN=... {run.command}")
            break
    print()
    print(
        f"{'phase':<7} {'assets':>9} {'wall s':>8} {'assets/s':>9} {'peak RSS MB':>12} "
        f"{'RSS at 25/50/75/100% MB':>26} {'CPU s':>7} {'emulator CPU s':>15} {'API req':>8}"
    )
    for run in runs:
        api = sum(n for k, n in run.requests.items() if k != "storage")
        quarters = "/".join(f"{mb:.0f}" for mb in run.quarters_mb)
        print(
            f"{run.phase:<7} {run.assets:>9,} {run.wall:>8.1f} {run.rate:>9,.0f} "
            f"{run.peak_rss_mb:>12.1f} {quarters:>26} {run.cpu:>7.1f} {run.emulator_cpu:>15.1f} "
            f"{api:>8,}"
        )
    flat_all = True
    print()
    for phase in PHASES:
        mine = sorted((r for r in runs if r.phase == phase), key=lambda r: r.assets)
        if len(mine) < 2:
            continue
        low, high = mine[0], mine[-1]
        growth = high.peak_rss_mb / low.peak_rss_mb - 1
        flat = growth <= FLAT
        flat_all &= flat
        print(
            f"{'FLAT' if flat else 'NOT FLAT'}: {phase} peak RSS {low.peak_rss_mb:.1f} MB at "
            f"{low.assets:,} -> {high.peak_rss_mb:.1f} MB at {high.assets:,} ({growth:+.0%}; "
            f"flat means at most +{FLAT:.0%})"
        )
    reruns = [r for r in runs if r.phase == "rerun"]
    if reruns:
        biggest = max(reruns, key=lambda r: r.assets)
        print(f"no-change rerun of {biggest.assets:,} assets: {biggest.wall:.1f} s")
    return flat_all


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,300000,1000000", help="comma-separated")
    parser.add_argument("--phases", default="dry,mirror,rerun", help="of dry,mirror,rerun")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / ".work" / "scale-bench")
    parser.add_argument("--keep", action="store_true", help="keep the mirror folders")
    parser.add_argument("--no-cache", action="store_true", help="emulator without --cache-assets")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    opts = parser.parse_args()
    sizes = [int(s.replace("_", "")) for s in opts.sizes.split(",") if s]
    phases = [p for p in opts.phases.split(",") if p]
    if not sizes or min(sizes) < 1 or any(p not in PHASES for p in phases):
        parser.error("--sizes must be positive numbers, --phases of dry,mirror,rerun")
    if "rerun" in phases and "mirror" not in phases:
        parser.error("a rerun needs the mirror phase before it")
    facts = machine()
    runs: list[Run] = []
    opts.work.mkdir(parents=True, exist_ok=True)
    for assets in sizes:
        dest = opts.work / f"mirror-{assets}"
        if dest.exists():
            shutil.rmtree(dest)
        try:
            args = emulator_args(assets, opts.seed, cache=not opts.no_cache)
            with emulator_process(args) as emulator:
                for phase in PHASES:
                    if phase not in phases:
                        continue
                    run = run_phase(phase, emulator, dest, assets)
                    runs.append(run)
                    print(
                        f"{phase} {assets:,}: {run.wall:.1f} s, {run.rate:,.0f} assets/s, "
                        f"peak RSS {run.peak_rss_mb:.1f} MB, CPU {run.cpu:.1f} s, "
                        f"emulator CPU {run.emulator_cpu:.1f} s, emulator peak RSS "
                        f"{emulator.peak_rss_mb():.0f} MB",
                        flush=True,
                    )
        finally:
            if not opts.keep and dest.exists():
                shutil.rmtree(dest)
    flat = report(runs, facts)
    if opts.json is not None:
        figures = {"machine": facts, "runs": [asdict(r) for r in runs], "flat": flat}
        opts.json.write_text(json.dumps(figures, indent=1))
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
