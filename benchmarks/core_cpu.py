"""CPU per small file of the transfer core alone: ``Transferer.fetch`` x N against curl (issue 13).

    .venv/bin/python -m benchmarks.core_cpu [--files 2000] [--rounds 3] [--batch 256]
        [--modes nofsync,fsync,group-syncfs,group-files] [--perf] [--dest-root /dev/shm]

:mod:`benchmarks.per_file_cpu` measures the whole ``mirror`` (start-up, API, planning, the
manifest); this measures the part of it that :mod:`engine.transfer` owns. The suite's ``small``
corpus (N x 64 KiB) is served by nginx with secure_link on 127.0.0.1; every run is a child
process (``--child``) with one event loop (uvloop), one storage pool of ``--concurrency``
connections and one :class:`~engine.transfer.Transferer`, whose ``--concurrency`` workers fetch
the signed URLs in turn into a fresh DEST. Modes:

* ``nofsync``: ``transfer.fsync = false`` (no durability at all);
* ``fsync``: ``transfer.fsync = true``, each file durable on its own (fsync of the file and of
  its folder before ``fetch`` returns): what a caller that does not take part in group commit
  gets;
* ``group-syncfs`` / ``group-files``: ``fsync = true`` with group commit: small files are placed
  without fsync and every ``--batch`` files one task calls ``Transferer.sync_placed()``, with
  ``transfer.barrier`` = ``syncfs`` or ``files`` (a final barrier covers the last ones).

Figures per mode, medians over the rounds (modes alternate within a round, curl too): CPU
milliseconds per file of the child between the first request and the last barrier (rusage of
the whole process, every thread; interpreter start-up and imports excluded), wall seconds,
files/s. curl (``--parallel --parallel-max C``) is measured on the same URLs for scale, its CPU
from ``os.wait4`` (whole process: curl's start-up is a few ms). ``--perf``: one more child per
mode under ``perf stat`` with the kernel's syscall tracepoints (counted without slowing the
calls, unlike strace), minus a child of the same mode that fetches nothing: syscalls per file
of the fetches alone.

``--size``: another file size (the default is the suite's ``small`` corpus, 64 KiB).

``--base DIR``: the same modes (those it supports) also run with the engine of another checkout,
e.g. ``git archive <commit> | tar -x -C DIR``, alternating with this one's: before and after
a change, measured under the same load. This script is copied into ``DIR/benchmarks/`` for
its child.

Every fetch's SHA-256 is checked against the corpus; files are read back for a sample. DESTs
are fresh per run and deleted at exit only (see :mod:`benchmarks.per_file_cpu` on why: ext4
without a journal makes creating files right after deleting thousands slow).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Any

from benchmarks.corpus import KIB, Corpus, CorpusSpec, build, warm
from benchmarks.per_file_cpu import parse_perf_stat, perf_events

ROOT = Path(__file__).resolve().parent
MODES = ("nofsync", "fsync", "group-syncfs", "group-files")
MAX_FILES = 200_000
TTL = 6 * 3600.0


# -- the child: one run of the transfer core ------------------------------------------------------


async def _child(config: dict[str, Any]) -> dict[str, Any]:
    from engine.settings import TransferOptions
    from engine.transfer import ObjectRef, Transferer
    from engine.transfer.http1 import StorageHttp

    mode: str = config["mode"]
    urls: list[tuple[str, str]] = config["urls"]
    concurrency: int = config["concurrency"]
    batch: int = config["batch"]
    group = mode.startswith("group-")
    values: dict[str, Any] = {"fsync": mode != "nofsync"}
    if group:
        values["barrier"] = mode.removeprefix("group-")
    options = TransferOptions(**values)
    http = StorageHttp(limit=concurrency, limit_per_host=concurrency)
    kwargs: dict[str, Any] = {"group_commit": True} if group else {}
    dest = Path(config["dest"])
    digests: dict[str, str] = {}
    t = Transferer(http, options, dest / ".assetsync", **kwargs)
    queue = list(reversed(range(len(urls))))
    placed = 0
    wake = asyncio.Event()
    finished = False
    barriers = 0

    async def worker() -> None:
        nonlocal placed
        while queue:
            index = queue.pop()
            url, name = urls[index]

            async def refresh(url: str = url) -> str:
                return url

            result = await t.fetch(
                ObjectRef("core", f"d{index}"), url, refresh, dest, PurePosixPath(name)
            )
            digests[name] = result.sha256
            if group and getattr(result, "awaits_barrier", False):
                placed += 1
                if placed >= batch:
                    wake.set()

    async def barrier_task() -> None:
        # As a pipeline's joiner would: one barrier per `batch` placed files, never two at once.
        nonlocal placed, barriers
        while not finished:
            await wake.wait()
            wake.clear()
            placed = 0
            await t.sync_placed()
            barriers += 1

    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    async with t:
        syncer = asyncio.create_task(barrier_task()) if group else None
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        if syncer is not None:
            finished = True
            wake.set()
            await syncer
            await t.sync_placed()  # whatever came after the last full batch
            barriers += 1
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    http.close()
    return {
        "mode": mode,
        "files": len(digests),
        "wall": wall,
        "user": r1.ru_utime - r0.ru_utime,
        "sys": r1.ru_stime - r0.ru_stime,
        "barriers": barriers,
        "digests": digests,
    }


def child_main(config_path: str) -> int:
    config = json.loads(Path(config_path).read_text())
    try:
        import uvloop

        result = uvloop.run(_child(config))
    except ImportError:  # pragma: no cover - uvloop is a dependency
        result = asyncio.run(_child(config))
    Path(config["out"]).write_text(json.dumps(result))
    return 0


# -- the parent -----------------------------------------------------------------------------------


class Runs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0

    def fresh(self, name: str) -> Path:
        self.count += 1
        path = self.root / f"{name}-{self.count}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path


def run_child(
    mode: str,
    urls: list[tuple[str, str]],
    dest: Path,
    args: argparse.Namespace,
    perf_out: Path | None = None,
) -> dict[str, Any]:
    mode, _, variant = mode.partition("@")
    cwd = ROOT.parent if not variant else args.base
    work = dest.parent / f"{dest.name}.cfg"
    config = {
        "mode": mode,
        "urls": urls,
        "concurrency": args.concurrency,
        "batch": args.batch,
        "dest": str(dest),
        "out": str(work.with_suffix(".out")),
    }
    work.write_text(json.dumps(config))
    argv = [sys.executable, "-m", "benchmarks.core_cpu", "--child", str(work)]
    if perf_out is not None:
        argv = [
            "perf",
            "stat",
            "-x",
            ";",
            "-o",
            str(perf_out),
            "-e",
            ",".join(perf_events()),
            "--",
            *argv,
        ]
    subprocess.run(argv, check=True, cwd=cwd, timeout=600)
    result: dict[str, Any] = json.loads(Path(config["out"]).read_text())
    if variant:
        result["mode"] += f"@{variant}"
    return result


def run_curl(urls: list[tuple[str, str]], dest: Path, concurrency: int) -> dict[str, Any]:
    config = dest.parent / f"{dest.name}.curl"
    config.write_text("".join(f'url = "{u}"\noutput = "{dest / n}"\n' for u, n in urls))
    argv = ["curl", "-sS", "--fail", "--parallel", "--parallel-max", str(concurrency)]
    t0 = time.perf_counter()
    proc = subprocess.Popen([*argv, "-K", str(config)], stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError("curl failed")
    return {
        "mode": "curl",
        "files": len(urls),
        "wall": wall,
        "user": usage.ru_utime,
        "sys": usage.ru_stime,
    }


def check(result: dict[str, Any], corpus: Corpus, dest: Path) -> None:
    want = {f.name: f.sha256 for f in corpus.files}
    got = result.get("digests")
    if got is not None and got != want:
        raise RuntimeError(f"{result['mode']}: digests differ from the corpus")
    for f in corpus.sample(50):
        if hashlib.sha256((dest / f.name).read_bytes()).hexdigest() != f.sha256:
            raise RuntimeError(f"{result['mode']}: {f.name} differs on disk")


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.core_cpu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--files", type=int, default=2000, help="N files (2000)")
    p.add_argument("--size", type=int, default=64 * KIB, help="bytes per file (64 KiB)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, alternating modes (3)")
    p.add_argument("--concurrency", type=int, default=32, help="fetches in flight (32)")
    p.add_argument("--batch", type=int, default=256, help="files per barrier (256)")
    p.add_argument("--modes", default="nofsync,fsync", help=f"comma-separated of {MODES}")
    p.add_argument("--no-curl", action="store_true", help="do not run curl")
    p.add_argument("--perf", action="store_true", help="perf stat syscall counts (extra runs)")
    p.add_argument("--work", type=Path, default=ROOT / ".work", help="corpus and scratch")
    p.add_argument("--dest-root", type=Path, default=None, help="where DESTs go (tmpfs: /dev/shm)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument("--base", type=Path, default=None, help="another checkout to compare with")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child_main(args.child)
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in MODES for m in modes):
        p.error(f"--modes: choose from {', '.join(MODES)}")
    if not 1 <= args.files <= MAX_FILES or not 1 <= args.rounds <= 50:
        p.error(f"--files in 1..{MAX_FILES}, --rounds in 1..50")
    if args.base is not None:
        args.base = args.base.resolve()
        if not (args.base / "engine" / "transfer").is_dir():
            p.error(f"--base {args.base}: not a checkout of this project")
        shutil.copyfile(Path(__file__), args.base / "benchmarks" / "core_cpu.py")
        grouped = (args.base / "engine" / "transfer" / "durability.py").exists()
        modes += [f"{m}@base" for m in modes if grouped or not m.startswith("group-")]

    from engine.emulator.nginx import NginxServer

    # The suite's (and per_file_cpu's) spelling: a corpus is rebuilt when its spec differs.
    if args.size == 64 * KIB:
        spec = CorpusSpec("small", args.files, args.size, 1, f"{args.files:,} x 64 KiB")
    else:
        spec = CorpusSpec("sized", args.files, args.size, 1, f"{args.files:,} x {args.size:,} B")
    corpus = build(spec, args.work)
    warm(corpus)
    dest_root = Path(tempfile.mkdtemp(prefix="core-cpu-", dir=args.dest_root or args.work))
    runs = Runs(dest_root)
    results: dict[str, list[dict[str, Any]]] = {}
    perf: dict[str, dict[str, float]] = {}
    print(f"# core_cpu {time.strftime('%Y-%m-%d %H:%M:%S')}; load average before: {_loadavg()}")
    print(
        f"# {args.files} x {args.size} B, concurrency {args.concurrency}, batch {args.batch}, "
        f"DEST under {dest_root}"
    )
    try:
        with NginxServer(corpus.root, worker_processes="auto") as nginx:
            urls = [(nginx.signed_url(f.name, ttl=TTL), f.name) for f in corpus.files]
            for r in range(args.rounds):
                order = list(modes) + ([] if args.no_curl else ["curl"])
                if r % 2:
                    order.reverse()
                for mode in order:
                    os.sync()
                    dest = runs.fresh(mode)
                    if mode == "curl":
                        res = run_curl(urls, dest, args.concurrency)
                    else:
                        res = run_child(mode, urls, dest, args)
                    check(res, corpus, dest)
                    res.pop("digests", None)
                    results.setdefault(mode, []).append(res)
                    cpu = res["user"] + res["sys"]
                    print(
                        f"round {r + 1} {mode:14} wall {res['wall']:6.2f} s  cpu {cpu:6.2f} s"
                        f"  {1e3 * cpu / res['files']:6.3f} ms/file",
                        flush=True,
                    )
            if args.perf:
                for mode in modes:
                    counts = []
                    for subset in (urls, []):
                        os.sync()
                        dest = runs.fresh(f"perf-{mode}")
                        out = dest.parent / f"{dest.name}.perf"
                        run_child(mode, subset, dest, args, perf_out=out)
                        counts.append(dict(parse_perf_stat(out.read_text())))
                    full, empty = counts
                    perf[mode] = {k: (v - empty.get(k, 0)) / len(urls) for k, v in full.items()}
    finally:
        shutil.rmtree(dest_root, ignore_errors=True)

    print(f"\n# load average after: {_loadavg()}")
    print(
        f"{'mode':16}{'CPU ms/file':>12}{'(min-max)':>16}{'user':>7}{'sys':>7}"
        f"{'wall s':>8}{'files/s':>9}{'x curl CPU':>11}"
    )
    summary: dict[str, Any] = {}
    curl_cpu = None
    if "curl" in results:
        curl_cpu = statistics.median((x["user"] + x["sys"]) / x["files"] for x in results["curl"])
    for mode, rows in results.items():
        per = [1e3 * (x["user"] + x["sys"]) / x["files"] for x in rows]
        med = statistics.median(per)
        user = statistics.median(1e3 * x["user"] / x["files"] for x in rows)
        system = statistics.median(1e3 * x["sys"] / x["files"] for x in rows)
        wall = statistics.median(x["wall"] for x in rows)
        ratio = f"{med / (1e3 * curl_cpu):10.1f}x" if curl_cpu else ""
        print(
            f"{mode:16}{med:12.3f}{f'{min(per):.3f}-{max(per):.3f}':>16}{user:7.3f}"
            f"{system:7.3f}{wall:8.2f}{rows[0]['files'] / wall:9.0f}{ratio:>11}"
        )
        summary[mode] = {"ms_per_file": per, "wall": [x["wall"] for x in rows]}
    if perf:
        names = [
            "all",
            "futex",
            "context-switches",
            "getpid",
            "openat",
            "close",
            "flock",
            "fsync",
            "fdatasync",
            "renameat",
            "pwritev2",
            "pwrite64",
            "read",
            "write",
            "epoll_pwait",
            "io_uring_enter",
            "newfstatat",
        ]
        print("\nper file, perf stat (a run of N files minus a run of none, same mode):")
        print(f"{'':18}" + "".join(f"{m:>14}" for m in perf))
        for name in names:
            print(f"{name:18}" + "".join(f"{perf[m].get(name, 0.0):14.2f}" for m in perf))
        summary["perf"] = perf
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
