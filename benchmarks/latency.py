"""The latency profile: files/s when every request waits, as against a remote platform.

``python -m benchmarks.latency [--in-flight 32,128,256] [--repeat 1] [--tools ...]``

On loopback a request costs its CPU only, so the suite's main run measures CPU per file. Real
users talk to an object store tens of milliseconds away, and are latency-bound long before they
are CPU-bound: a downloader's files/s is then about (requests in flight) / (time to first byte).
This profile makes that round trip explicit. The emulator serves the corpus itself (no nginx:
nginx cannot hold an answer back) with ``storage_latency`` (30 ms before each storage answer's
first byte) and ``api_latency`` (50 ms before each API answer); the peers fetch the same signed
URLs, taken from the emulator's listing before they start, with the same number in flight;
``assetsync mirror`` lists through the API itself (its time includes that, and its tags and
annotations), run with ``--concurrency N --per-host N``, and once more with its defaults.

The rounds alternate tools and levels, so the machine's other load falls on all of them alike.
Each run goes into a fresh folder and is checked (count, sizes, a SHA-256 sample) by the suite's
own runner; a failed check is reported, never counted. rclone is left out: it cannot take a
signed URL per object (see the README). With the emulator in Python serving every byte, the
server itself may be what limits the highest levels: the table says files/s of every tool, so
a shared ceiling shows as every tool stopping at the same figure.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.corpus import build, specs, warm
from benchmarks.install import ensure_installed
from benchmarks.peers import Platform, Tool, make_tools
from benchmarks.peers.assetsync import Assetsync
from benchmarks.report import ToolRun
from benchmarks.runner import Options, run_tool
from benchmarks.servers import URL_TTL, list_urls

ROOT = Path(__file__).resolve().parent
PEERS = ("curl", "wget2", "aria2c")
DEFAULT_LEVELS = (32, 128, 256)


@dataclass
class Cell:
    """The runs of one tool at one level."""

    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)  # user + sys of the tool's process tree
    problems: list[str] = field(default_factory=list)
    settings: str = ""

    def files_per_s(self, files: int) -> float | None:
        return files / statistics.median(self.walls) if self.walls else None


def _tools(level: int, peers: Sequence[str]) -> list[tuple[str, Tool]]:
    at_level = Assetsync(["--concurrency", str(level), "--per-host", str(level)])
    return [("assetsync", at_level), *((t.name, t) for t in make_tools(list(peers)))]


def _record(cell: Cell, runs: list[ToolRun]) -> None:
    run = runs[0]
    cell.settings = run.settings
    if run.ok and run.wall is not None:
        cell.walls.append(run.wall)
        cell.cpus.append(run.cpu or 0.0)
    else:
        cell.problems.append(f"{run.status}: {run.reason[:200]}")


def profile(args: argparse.Namespace) -> dict[tuple[str, int], Cell]:
    from engine.emulator import Emulator, EmulatorThread

    work: Path = args.work
    corpus = build(specs(True)[args.corpus], work, print)
    warm(corpus)
    files = len(corpus.files)
    peers = [p for p in args.tools if p != "assetsync"]
    ensure_installed(make_tools(peers), allow=not args.no_install, log=print)
    emulator = Emulator(
        from_dir=corpus.root,
        url_ttl=URL_TTL,
        seed=0,
        cache_assets=files,
        api_latency=args.api_latency,
        storage_latency=args.storage_latency,
    )
    cells: dict[tuple[str, int], Cell] = {}
    with EmulatorThread(emulator, use_uvloop=True) as emu:
        t0 = time.perf_counter()
        urls = list_urls(emu.api_url, emu.token, emu.dataset_version_id)
        listing = time.perf_counter() - t0
        platform = Platform(
            storage_url=emu.api_url,
            plain_url="",
            urls=urls,
            url_source="the emulator's listing (its own storage, with latency)",
            listing_seconds=listing,
            api_url=emu.api_url,
            token=emu.token,
            dataset_version_id=emu.dataset_version_id,
        )
        print(
            f"{corpus.spec.description}; storage {args.storage_latency * 1000:.0f} ms to first"
            f" byte, API {args.api_latency * 1000:.0f} ms; listing for the peers took"
            f" {listing:.2f} s (not counted in their times)"
        )
        for round_no in range(args.repeat):
            for level in args.in_flight:
                opts = Options(concurrency=level, work=work, rerun=False, install=False, repeat=1)
                tools = _tools(level, peers)
                if round_no % 2:  # alternate who goes first
                    tools.reverse()
                for name, tool in tools:
                    cell = cells.setdefault((name, level), Cell())
                    _record(cell, run_tool(tool, corpus, platform, opts, print))
            defaults = Options(concurrency=32, work=work, rerun=False, install=False, repeat=1)
            cell = cells.setdefault(("assetsync (defaults)", 0), Cell())
            _record(cell, run_tool(Assetsync([]), corpus, platform, defaults, print))
    _table(cells, files, args.in_flight)
    return cells


def _table(cells: dict[tuple[str, int], Cell], files: int, levels: Sequence[int]) -> None:
    names = list(dict.fromkeys(name for name, _ in cells))
    print()
    print("| tool | " + " | ".join(f"files/s at {n} (CPU)" for n in levels) + " |")
    print("|---|" + "---|" * len(levels))
    for name in names:
        row = []
        for level in levels if name != "assetsync (defaults)" else (0,):
            cell = cells.get((name, level))
            rate = cell.files_per_s(files) if cell else None
            cpu = f", {statistics.median(cell.cpus):.2f} s CPU" if cell and cell.cpus else ""
            row.append("-" if rate is None else f"{rate:,.0f}{cpu}")
            if cell and cell.problems:
                row[-1] += f" ({len(cell.problems)} failed: {cell.problems[0][:60]})"
        print(f"| {name} | " + " | ".join(row) + " |")
    print()
    for level in levels:
        ours = cells.get(("assetsync", level))
        mine = ours.files_per_s(files) if ours else None
        best_name, best = None, 0.0
        for name in PEERS:
            cell = cells.get((name, level))
            rate = cell.files_per_s(files) if cell else None
            if rate and rate > best:
                best_name, best = name, rate
        if mine and best_name:
            print(f"at {level}: assetsync {mine:,.0f} files/s = {mine / best:.2f}x {best_name}")
    default = cells.get(("assetsync (defaults)", 0))
    rate = default.files_per_s(files) if default else None
    if rate:
        print(
            f"assetsync with its defaults ({default.settings if default else ''}): "
            f"{rate:,.0f} files/s"
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__)
    parser.add_argument(
        "--in-flight",
        type=lambda text: [int(v) for v in text.split(",") if v],
        default=list(DEFAULT_LEVELS),
        help="requests in flight for every tool, comma-separated (32,128,256)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="rounds (median shown)")
    parser.add_argument(
        "--tools",
        type=lambda text: [v for v in text.split(",") if v],
        default=["assetsync", *PEERS],
        help="assetsync and peers among curl, wget2, aria2c",
    )
    parser.add_argument("--corpus", default="small", help="a quick corpus (small: 2,000 x 64 KiB)")
    parser.add_argument("--storage-latency", type=float, default=0.030, help="seconds (0.030)")
    parser.add_argument("--api-latency", type=float, default=0.050, help="seconds (0.050)")
    parser.add_argument("--no-install", action="store_true", help="do not apt-get missing peers")
    parser.add_argument(
        "--work", type=Path, default=ROOT / ".work" / "latency", help="corpus and scratch"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    profile(_parser().parse_args(argv))


if __name__ == "__main__":
    main()
