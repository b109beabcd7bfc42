"""Issue 4's benchmark: mirror a 100,000-asset emulated version, then rerun it unchanged.

``python benchmarks/mirror_bench.py [--quick] [--assets N] [--work DIR] [--profile DIR]``

1. ``assetsync emulator`` starts as its own process on 127.0.0.1 with small files
   (``--min-size 1024 --max-size 16384 --large-share 0 --empty-share 0 --no-nasty-filenames``,
   100,000 assets; ``--quick``: 10,000), and ``--cache-assets`` as many: it keeps the records
   and annotations it derives, as a platform reads stored rows, instead of regenerating them
   for the rerun (which made the emulator, not the mirror, set the rerun's pace).
2. ``assetsync mirror`` runs as a subprocess (token in ``PICSELLIA_TOKEN``, ``-q --json``, default
   settings otherwise) into a fresh folder under ``benchmarks/.work/mirror-bench/`` (or
   ``--work``), measured by ``benchmarks.measure.run_measured``: CPU of its process tree from
   ``os.wait4``, peak RSS from GNU ``time``, wall time around the process.
3. The output is checked, so a broken run is not counted: exit code 0 and the summary's counts;
   the number of files on disk; ``assetsync manifest export``: one entry per asset, each file's
   size as recorded and as the emulator generated it; SHA-256 of a random sample of files (and
   of the manifest) against the digests of an in-process ``Emulator`` built with the same seed
   and options (``dataset.expected(asset_id).sha256``).
4. The same mirror runs again, unchanged, and is checked the same way (nothing downloaded, no
   storage request counted by the emulator, every file still there).
5. Printed: wall time, files/s, MB/s, peak RSS (MB), CPU seconds of the mirror and of the
   emulator for both runs, the rerun/first ratio, and PASS/FAIL for issue 4's two targets
   (peak RSS under 300 MB; the rerun under a tenth of the first run's time).

``--profile DIR`` adds a third, unchanged run profiled with py-spy on both processes (the mirror
with ``--gil``, the emulator attached by pid); its raw profiles land in DIR (its figures are not
the measured ones). The mirror folder is deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks.emulator_proc import EmulatorProcess, emulator_process  # noqa: E402
from benchmarks.measure import Measurement, run_measured  # noqa: E402
from engine.emulator import Emulator  # noqa: E402

BIN = Path(sys.executable).parent
RSS_LIMIT_MB = 300.0
RERUN_LIMIT = 0.1
# A bound on one measured run (a hung run ends the benchmark instead of holding the machine).
RUN_TIMEOUT = 3600.0


def dataset_options(assets: int, seed: int) -> dict[str, Any]:
    """The emulated version: small files, ordinary names (the same in both processes)."""
    return {
        "assets": assets,
        "seed": seed,
        "min_size": 1024,
        "max_size": 16384,
        "large_share": 0.0,
        "empty_share": 0.0,
        "nasty_filenames": False,
        # The emulator keeps what it derives for the whole version, as a platform reads stored
        # rows: otherwise the rerun measures the emulator regenerating every annotation.
        "cache_assets": assets,
    }


def cli_args(options: dict[str, Any]) -> list[str]:
    out = []
    for key, value in options.items():
        if key == "nasty_filenames":
            if not value:
                out.append("--no-nasty-filenames")
        else:
            out += [f"--{key.replace('_', '-')}", str(value)]
    return out


@dataclass
class RunResult:
    name: str
    wall: float
    cpu: float
    peak_rss_mb: float
    emulator_cpu: float
    summary: dict[str, Any]
    requests: dict[str, int]

    @property
    def files(self) -> int:
        return int(self.summary["downloaded"]) + int(self.summary["skipped"])


def run_mirror(
    name: str,
    emulator: EmulatorProcess,
    dest: Path,
    extra: list[str],
    *,
    py_spy: Path | None = None,
) -> RunResult:
    info = emulator.info
    command = [
        str(BIN / "assetsync"),
        "mirror",
        "--api-url",
        info["api_url"],
        "--dataset-version",
        info["dataset_version_id"],
        "--dest",
        str(dest),
        "-q",
        "--json",
        *extra,
    ]
    spy: subprocess.Popen[bytes] | None = None
    if py_spy is not None:
        spy_bin = str(BIN / "py-spy")
        command = [
            spy_bin,
            "record",
            "-o",
            str(py_spy / "mirror.txt"),
            "-f",
            "raw",
            "--gil",
            "--",
            *command,
        ]
        spy = subprocess.Popen(
            [
                spy_bin,
                "record",
                "-p",
                str(emulator.pid),
                "-o",
                str(py_spy / "emulator.txt"),
                "-f",
                "raw",
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)
    env = {**os.environ, "PICSELLIA_TOKEN": info["token"]}
    emulator.control("POST", "counters/reset")
    with tempfile.TemporaryDirectory() as scratch:
        emulator_before = emulator.cpu_seconds()
        run = run_measured(command, env=env, log_dir=Path(scratch), timeout=RUN_TIMEOUT)
        emulator_cpu = emulator.cpu_seconds() - emulator_before
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            spy.wait(timeout=120)
        check_exit(name, run)
        stdout = (Path(scratch) / "stdout.log").read_bytes()
    summary = json_summary(stdout)
    counters = emulator.counters()
    return RunResult(
        name, run.wall, run.cpu, peak_mb(run), emulator_cpu, summary, counters["requests"]
    )


def check_exit(name: str, run: Measurement) -> None:
    if run.timed_out or run.returncode != 0:
        ended = "timed out" if run.timed_out else f"exited {run.returncode}"
        raise RuntimeError(f"{name}: assetsync mirror {ended}: {run.log_tail(2000)}")


def peak_mb(run: Measurement) -> float:
    """Peak RSS in MB (without GNU time, the largest child's ever: may be overestimated)."""
    return run.max_rss_kib / 1024


def json_summary(stdout: bytes) -> dict[str, Any]:
    """The run's ``--json`` summary: its one JSON line (py-spy, when it wraps the run, prints
    its own lines)."""
    lines = [line for line in stdout.decode().splitlines() if line.startswith("{")]
    return dict(json.loads(lines[-1]))


def local_files(dest: Path) -> int:
    count = 0
    for dirpath, dirnames, filenames in os.walk(dest):
        if Path(dirpath) == dest and ".assetsync" in dirnames:
            dirnames.remove(".assetsync")
        count += len(filenames)
    return count


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_output(
    dest: Path, twin: Emulator, assets: int, sample: int, rng: random.Random
) -> tuple[int, int]:
    """Raise on any mismatch; return (files, bytes) of the mirror."""
    exported = dest.parent / f"{dest.name}.manifest.jsonl"
    subprocess.run(
        [
            str(BIN / "assetsync"),
            "manifest",
            "export",
            "--dest",
            str(dest),
            "--format",
            "jsonl",
            "-o",
            str(exported),
        ],
        check=True,
    )
    entries = [json.loads(line) for line in exported.read_text().splitlines() if line]
    exported.unlink()
    if len(entries) != assets or len({e["asset_id"] for e in entries}) != assets:
        raise RuntimeError(f"the manifest holds {len(entries)} entries, not {assets}")
    on_disk = local_files(dest)
    if on_disk != assets:
        raise RuntimeError(f"{on_disk} files on disk, not {assets}")
    dataset = twin.dataset
    total = 0
    for entry in entries:
        index = dataset.index_of(entry["asset_id"])
        if index is None:
            raise RuntimeError(f"unknown asset {entry['asset_id']} in the manifest")
        size = dataset.record(index).source.size
        path = dest / entry["path"]
        if entry["size"] != size or path.stat().st_size != size:
            raise RuntimeError(f"{entry['path']}: size {path.stat().st_size}, expected {size}")
        total += size
    for entry in rng.sample(entries, min(sample, len(entries))):
        expected = dataset.expected(entry["asset_id"])
        actual = sha256_file(dest / entry["path"])
        if not actual == entry["sha256"] == expected.sha256:
            raise RuntimeError(f"{entry['path']}: SHA-256 {actual}, expected {expected.sha256}")
        if entry["data_id"] != expected.data_id or sorted(entry["tags"]) != sorted(expected.tags):
            raise RuntimeError(f"{entry['path']}: metadata differs from the emulator's")
    return on_disk, total


def print_report(
    first: RunResult, rerun: RunResult, total_bytes: int, opts: argparse.Namespace
) -> bool:
    print()
    print(
        f"Mirror benchmark: {opts.assets:,} assets, 1-16 KiB files "
        f"({total_bytes / 1e6:,.1f} MB), emulator and mirror as separate processes on loopback, "
        f"{os.cpu_count()} CPUs"
    )
    header = (
        f"{'run':<8} {'wall s':>8} {'files/s':>9} {'MB/s':>7} {'peak RSS MB':>12} "
        f"{'CPU s':>7} {'emulator CPU s':>15} {'API req':>8} {'storage req':>12}"
    )
    print(header)
    for result in (first, rerun):
        storage = result.requests.get("storage", 0)
        api = sum(n for k, n in result.requests.items() if k != "storage")
        megabytes = result.summary["bytes_downloaded"] / 1e6
        print(
            f"{result.name:<8} {result.wall:>8.2f} {result.files / result.wall:>9,.0f} "
            f"{megabytes / result.wall:>7.1f} {result.peak_rss_mb:>12.1f} {result.cpu:>7.2f} "
            f"{result.emulator_cpu:>15.2f} {api:>8,} {storage:>12,}"
        )
    for result in (first, rerun):
        kinds = ", ".join(f"{k} {n:,}" for k, n in sorted(result.requests.items()) if n)
        print(f"{result.name} requests by kind: {kinds}")
    ratio = rerun.wall / first.wall
    peak = max(first.peak_rss_mb, rerun.peak_rss_mb)
    rss_ok = peak < RSS_LIMIT_MB
    rerun_ok = ratio < RERUN_LIMIT
    print(f"rerun / first run: {ratio:.3f}")
    print(f"{'PASS' if rss_ok else 'FAIL'}: peak RSS {peak:.1f} MB < {RSS_LIMIT_MB:.0f} MB")
    print(
        f"{'PASS' if rerun_ok else 'FAIL'}: no-change rerun {rerun.wall:.2f} s < 1/10 of the "
        f"first run ({first.wall / 10:.2f} s)"
    )
    if opts.json:
        print(
            json.dumps(
                {
                    "assets": opts.assets,
                    "bytes": total_bytes,
                    "runs": [
                        {
                            "name": r.name,
                            "wall_s": r.wall,
                            "files_per_s": r.files / r.wall,
                            "mb_per_s": r.summary["bytes_downloaded"] / 1e6 / r.wall,
                            "peak_rss_mb": r.peak_rss_mb,
                            "cpu_s": r.cpu,
                            "emulator_cpu_s": r.emulator_cpu,
                            "requests": r.requests,
                        }
                        for r in (first, rerun)
                    ],
                    "rerun_ratio": ratio,
                    "rss_pass": rss_ok,
                    "rerun_pass": rerun_ok,
                }
            )
        )
    return rss_ok and rerun_ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000 assets instead of 100,000")
    parser.add_argument("--assets", type=int, help="assets in the version (overrides --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample", type=int, default=500, help="files whose SHA-256 is checked")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / ".work" / "mirror-bench")
    parser.add_argument("--keep", action="store_true", help="keep the mirror folder")
    parser.add_argument(
        "--mirror-arg", action="append", default=[], help="extra `assetsync mirror` argument"
    )
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy a third run")
    parser.add_argument("--json", action="store_true", help="also print one JSON object")
    opts = parser.parse_args()
    opts.assets = opts.assets or (10_000 if opts.quick else 100_000)
    if opts.assets < 1:
        parser.error("--assets must be >= 1")
    options = dataset_options(opts.assets, opts.seed)
    twin = Emulator(**options)  # never started: the same seed gives the same ids and bytes
    rng = random.Random(opts.seed)
    dest = opts.work / "mirror"
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with emulator_process(cli_args(options)) as emulator:
            print(f"emulator: {emulator.info['api_url']}, {emulator.info['assets']:,} assets")
            first = run_mirror("first", emulator, dest, opts.mirror_arg)
            if first.summary["downloaded"] != opts.assets or first.requests.get("storage", 0) < 1:
                raise RuntimeError(f"first run: {first.summary}")
            files, total_bytes = check_output(dest, twin, opts.assets, opts.sample, rng)
            print(f"first run checked: {files:,} files, {total_bytes:,} bytes")
            rerun = run_mirror("rerun", emulator, dest, opts.mirror_arg)
            if rerun.summary["downloaded"] or rerun.summary["skipped"] != opts.assets:
                raise RuntimeError(f"rerun changed something: {rerun.summary}")
            if rerun.requests.get("storage", 0):
                raise RuntimeError(f"rerun made {rerun.requests['storage']} storage requests")
            check_output(dest, twin, opts.assets, opts.sample // 5, rng)
            print("rerun checked: nothing downloaded, no storage request, files intact")
            passed = print_report(first, rerun, total_bytes, opts)
            if opts.profile is not None:
                opts.profile.mkdir(parents=True, exist_ok=True)
                third = run_mirror("profiled", emulator, dest, opts.mirror_arg, py_spy=opts.profile)
                print(
                    f"profiled rerun: {third.wall:.2f} s wall, mirror CPU {third.cpu:.2f} s, "
                    f"emulator CPU {third.emulator_cpu:.2f} s; profiles in {opts.profile}"
                )
    finally:
        if not opts.keep and dest.exists():
            shutil.rmtree(dest)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
