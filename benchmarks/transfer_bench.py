"""Transfer core vs curl, on loopback, in one run: one large file and many small files.

    .venv/bin/python -m benchmarks.transfer_bench [--size 1GiB] [--small 2000] [--repeat 3]

nginx (secure_link, :mod:`engine.emulator.nginx`) serves the bytes from the page cache, so
Python is not the server. Each round runs, into fresh folders on the same file system:

* large: ``curl -o`` of one signed URL, against :class:`~engine.transfer.Transferer` fetching
  the same URL (segments in parallel), with ``fsync`` off (as curl) and on (the default); and,
  for context, curl's time plus ``sha256sum`` of its file (assetsync hashes every byte, curl
  none: the target stays ``curl -o`` alone);
* small: ``curl --parallel`` (``--parallel-max`` = the concurrency) of every small file,
  against ``fetch`` calls gathered under the same concurrency on one shared session.

Rounds alternate the tools; between runs the outputs are deleted and the file system synced
(untimed), so one tool's dirty pages do not slow the next. Every output's SHA-256 is checked.
The figures printed are medians over the rounds (CPU: user and system seconds
of this process, or of curl, during the run); ratios are assetsync's throughput over curl's
(above 1: assetsync is faster). ``--only assetsync-large`` runs just that, for ``py-spy``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import aiohttp

from engine.emulator.nginx import NginxServer
from engine.settings import TransferOptions
from engine.transfer import ObjectRef, Transferer

MiB = 1024 * 1024
T = TypeVar("T")
TTL = 6 * 3600.0


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


@dataclass
class Corpus:
    root: Path
    large: str
    large_size: int
    large_sha: str
    small: list[tuple[str, int, str]]  # name, size, sha256

    @property
    def small_bytes(self) -> int:
        return sum(size for _, size, _ in self.small)


def build_corpus(root: Path, large_size: int, small_count: int, seed: int = 7) -> Corpus:
    """The files under ``root`` (reused from an earlier run with the same parameters)."""
    manifest = root / "manifest.json"
    key = {"large": large_size, "small": small_count, "seed": seed}
    if manifest.exists():
        saved = json.loads(manifest.read_text())
        if saved["key"] == key:
            small = [(str(n), int(size), str(sha)) for n, size, sha in saved["small"]]
            return Corpus(root, "large.bin", large_size, str(saved["large_sha"]), small)
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    block = rng.randbytes(MiB)
    sha = hashlib.sha256()
    with (root / "large.bin").open("wb") as out:
        written = 0
        counter = 0
        while written < large_size:
            # Vary every MiB so that a misplaced segment cannot go unnoticed.
            piece = counter.to_bytes(8, "little") + block[8:]
            piece = piece[: large_size - written]
            out.write(piece)
            sha.update(piece)
            written += len(piece)
            counter += 1
    small = []
    (root / "small").mkdir(exist_ok=True)
    for index in range(small_count):
        # Log-uniform 4 KiB .. 1 MiB: the spread of a typical image dataset.
        size = int(4096 * (256 ** rng.random()))
        data = rng.randbytes(size)
        name = f"small/{index:06d}.jpg"
        (root / name).write_bytes(data)
        small.append((name, size, hashlib.sha256(data).hexdigest()))
    manifest.write_text(json.dumps({"key": key, "large_sha": sha.hexdigest(), "small": small}))
    return Corpus(root, "large.bin", large_size, sha.hexdigest(), small)


def warm(root: Path) -> None:
    """Read every file once so that nginx serves from the page cache."""
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                while handle.read(8 * MiB):
                    pass


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(8 * MiB):
            digest.update(block)
    return digest.hexdigest()


def clean(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    os.sync()


# ---- the runs ---------------------------------------------------------------------------------


def curl_large(url: str, out: Path) -> float:
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    subprocess.run(["curl", "-sS", "--fail", "-o", str(out), url], check=True)
    return time.perf_counter() - start


def sha256sum(path: Path) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(["sha256sum", str(path)], check=True, capture_output=True, text=True)
    return time.perf_counter() - start, done.stdout.split()[0]


def curl_small(urls: list[tuple[str, Path]], concurrency: int, workdir: Path) -> float:
    config = workdir / "curl-small.cfg"
    lines = []
    for url, out in urls:
        out.parent.mkdir(parents=True, exist_ok=True)
        lines.append(f'url = "{url}"\noutput = "{out}"\n')
    config.write_text("".join(lines))
    start = time.perf_counter()
    # --parallel draws its progress meter even with -s: send it to /dev/null.
    command = ["curl", "-sS", "--fail", "--parallel", "--parallel-max", str(concurrency)]
    subprocess.run([*command, "-K", str(config)], check=True, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def options(fsync: bool, args: argparse.Namespace) -> TransferOptions:
    return TransferOptions(
        fsync=fsync,
        segments=args.segments,
        segment_size=args.segment_size,
        chunk_size=args.chunk_size,
    )


async def ours_large(
    url: str, dest: Path, state: Path, fsync: bool, args: argparse.Namespace
) -> tuple[float, str]:
    connector = aiohttp.TCPConnector(limit=64, limit_per_host=64)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def refresh() -> str:
            return url

        t = Transferer(session, options(fsync, args), state)
        start = time.perf_counter()
        result = await t.fetch(ObjectRef("a", "large"), url, refresh, dest, PurePosixPath("l.bin"))
        elapsed = time.perf_counter() - start
    assert result.segmented or result.size < TransferOptions().segment_threshold
    return elapsed, result.sha256


async def ours_small(
    urls: list[tuple[str, str]],
    dest: Path,
    state: Path,
    concurrency: int,
    fsync: bool,
    args: argparse.Namespace,
) -> tuple[float, dict[str, str]]:
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        t = Transferer(session, options(fsync, args), state)
        digests: dict[str, str] = {}
        queue = list(enumerate(urls))
        queue.reverse()

        async def worker() -> None:
            while queue:
                index, (url, name) = queue.pop()

                async def refresh(url: str = url) -> str:
                    return url

                result = await t.fetch(
                    ObjectRef("s", f"d{index}"), url, refresh, dest, PurePosixPath(name)
                )
                digests[name] = result.sha256

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return elapsed, digests


class CpuMeter:
    """User and system CPU seconds spent inside the block by this process and by the children
    that ended in it (curl): the transfer's own cost, whatever the wall time says."""

    def __enter__(self) -> CpuMeter:
        self._start = self._now()
        self.user = self.sys = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._now()
        self.user, self.sys = end[0] - self._start[0], end[1] - self._start[1]

    @staticmethod
    def _now() -> tuple[float, float]:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + kids.ru_utime, me.ru_stime + kids.ru_stime


def run_loop(coro_factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run on uvloop, the engine's default loop (plain asyncio if uvloop is missing)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro_factory())
    return uvloop.run(coro_factory())


# ---- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.transfer_bench", description=__doc__
    )
    parser.add_argument("--size", default="1GiB", help="large file size (default 1GiB)")
    parser.add_argument("--small", type=int, default=2000, help="number of small files")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="rounds (medians are reported)")
    parser.add_argument("--segments", type=int, default=TransferOptions().segments)
    parser.add_argument("--segment-size", type=parse_size, default=TransferOptions().segment_size)
    parser.add_argument("--chunk-size", type=parse_size, default=TransferOptions().chunk_size)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--only",
        choices=["assetsync-large", "assetsync-small", "curl-large", "curl-small"],
        help="run one side only (for profiling)",
    )
    parser.add_argument("--fsync", action="store_true", help="with --only: fsync on")
    args = parser.parse_args(argv)
    if shutil.which("curl") is None:
        print("curl is not installed (apt-get install curl)", file=sys.stderr)
        return 2

    large_size = parse_size(args.size)
    base = args.workdir or Path(tempfile.mkdtemp(prefix="assetsync-transfer-bench-"))
    corpus = build_corpus(base / "store", large_size, args.small)
    # A fresh corpus is gigabytes of dirty pages: written back by the kernel half a minute
    # later, in the middle of the timed runs, unless flushed now (untimed).
    os.sync()
    warm(corpus.root)
    out = base / "out"
    times: dict[str, list[float]] = {}
    cpu: dict[str, list[tuple[float, float]]] = {}

    def record(name: str, seconds: float, meter: CpuMeter) -> None:
        times.setdefault(name, []).append(seconds)
        cpu.setdefault(name, []).append((meter.user, meter.sys))

    try:
        with NginxServer(corpus.root) as nginx:
            large_url = nginx.signed_url(corpus.large, ttl=TTL)
            small_urls = [(nginx.signed_url(name, ttl=TTL), name) for name, _, _ in corpus.small]
            want = {name: sha for name, _, sha in corpus.small}

            def run_curl_large() -> None:
                with CpuMeter() as meter:
                    seconds = curl_large(large_url, out / "curl" / "l.bin")
                record("curl large", seconds, meter)
                # What curl leaves unchecked, checked the way its users would: the same file
                # (in the page cache) through sha256sum, timed on top of curl's own run.
                with CpuMeter() as hash_meter:
                    hashing, digest = sha256sum(out / "curl" / "l.bin")
                assert digest == corpus.large_sha
                hash_meter.user += meter.user
                hash_meter.sys += meter.sys
                record("curl large + sha256sum", seconds + hashing, hash_meter)
                clean(out)

            def run_ours_large(fsync: bool) -> None:
                with CpuMeter() as meter:
                    seconds, digest = run_loop(
                        lambda: ours_large(large_url, out / "ours", out / "state", fsync, args)
                    )
                assert digest == corpus.large_sha == sha256_file(out / "ours" / "l.bin")
                record(f"assetsync large{' fsync' if fsync else ''}", seconds, meter)
                clean(out)

            def run_curl_small() -> None:
                pairs = [(url, out / "curl" / name) for url, name in small_urls]
                with CpuMeter() as meter:
                    seconds = curl_small(pairs, args.concurrency, base)
                record("curl small", seconds, meter)
                for name, _, sha in corpus.small[:50]:
                    assert sha256_file(out / "curl" / name) == sha
                clean(out)

            def run_ours_small(fsync: bool) -> None:
                with CpuMeter() as meter:
                    seconds, digests = run_loop(
                        lambda: ours_small(
                            small_urls, out / "ours", out / "state", args.concurrency, fsync, args
                        )
                    )
                assert digests == want
                for name, _, sha in corpus.small[:50]:
                    assert sha256_file(out / "ours" / name) == sha
                record(f"assetsync small{' fsync' if fsync else ''}", seconds, meter)
                clean(out)

            if args.only:
                runs = {
                    "assetsync-large": lambda: run_ours_large(args.fsync),
                    "assetsync-small": lambda: run_ours_small(args.fsync),
                    "curl-large": run_curl_large,
                    "curl-small": run_curl_small,
                }
                for _ in range(args.repeat):
                    runs[args.only]()
            else:
                for _ in range(args.repeat):
                    run_curl_large()
                    run_ours_large(False)
                    run_ours_large(True)
                    run_curl_small()
                    run_ours_small(False)
                    run_ours_small(True)
    finally:
        if args.workdir is None:
            shutil.rmtree(base, ignore_errors=True)

    report(times, cpu, corpus, args)
    return 0


def report(
    times: dict[str, list[float]],
    cpu: dict[str, list[tuple[float, float]]],
    corpus: Corpus,
    args: argparse.Namespace,
) -> None:
    print(
        f"\nloopback, nginx secure_link; large {corpus.large_size / MiB:.0f} MiB, "
        f"{len(corpus.small)} small files ({corpus.small_bytes / MiB:.0f} MiB), "
        f"concurrency {args.concurrency}, segments {args.segments} x "
        f"{args.segment_size // MiB} MiB, chunk {args.chunk_size // 1024} KiB, "
        f"{args.repeat} round(s), medians\n"
    )
    rates: dict[str, float] = {}
    print(f"{'run':<26}{'seconds':>10}{'MB/s':>10}{'files/s':>10}{'user s':>9}{'sys s':>9}")
    for name, values in times.items():
        seconds = statistics.median(values)
        large = "large" in name
        size = corpus.large_size if large else corpus.small_bytes
        rates[name] = size / seconds
        files = f"{'':>10}" if large else f"{len(corpus.small) / seconds:10.0f}"
        user = statistics.median(u for u, _ in cpu[name])
        system = statistics.median(s for _, s in cpu[name])
        rate = size / seconds / 1e6
        print(f"{name:<26}{seconds:10.3f}{rate:10.0f}{files}{user:9.2f}{system:9.2f}")
    print()
    for ours, theirs in (
        ("assetsync large", "curl large"),
        ("assetsync large fsync", "curl large"),
        ("assetsync large fsync", "curl large + sha256sum"),
        ("assetsync small", "curl small"),
        ("assetsync small fsync", "curl small"),
    ):
        if ours in rates and theirs in rates:
            print(f"ratio {ours} / {theirs}: {rates[ours] / rates[theirs]:.2f}")
    # Every round, not only the median: runs on a shared 2-core VM vary, and a reader should
    # see by how much.
    print("\nMB/s of each round, in order:")
    for name, values in times.items():
        size = corpus.large_size if "large" in name else corpus.small_bytes
        print(f"  {name:<24}" + " ".join(f"{size / v / 1e6:6.0f}" for v in values))


if __name__ == "__main__":
    sys.exit(main())
