"""CPU per small file: ``assetsync mirror`` against ``curl --parallel`` on one corpus (issue 13).

    .venv/bin/python -m benchmarks.per_file_cpu [--files 2000] [--rounds 3] [--no-fsync]
        [--strace] [--no-change] [--dest-root /dev/shm] [--json OUT]

One corpus of N x 64 KiB (the suite's ``small`` corpus, built or reused under
``benchmarks/.work/``), served as the suite serves it (:func:`benchmarks.servers.serve`): nginx
with secure_link on 127.0.0.1 holds the bytes, the emulator in a thread of this harness is the
platform API and hands out the signed URLs. Per round, in this order, each into a fresh empty
DEST after a ``sync``:

* ``assetsync mirror`` with its defaults (subprocess, token in ``PICSELLIA_TOKEN``, ``--quiet``);
* ``curl --parallel --parallel-max C`` on the same signed URLs (from the emulator's listing,
  untimed, as the suite does);
* with ``--no-fsync``: ``assetsync mirror --no-fsync``.

Every output is checked (count, bytes, SHA-256 of a sample) before it is counted. Printed per
tool: medians over the rounds and the spread (min-max) of wall seconds, CPU seconds (user + sys
of the tool's process tree, from ``os.wait4``'s rusage), CPU ms per file, files/s, the ratios to
curl, and the CPU the servers spent meanwhile: the emulator (this harness's own CPU; ~0 for curl,
which does not use the API) and nginx (its workers' utime + stime from ``/proc``).

``--strace``: after the timed rounds, one more run of each tool under ``strace -f -c`` (its
times are not reported: strace slows every syscall); the top syscalls with their counts per file.

``--no-change``: the no-change rerun. assetsync mirrors once (untimed), then reruns on the
complete DEST; rclone (installed with apt-get when missing and root) copies from nginx's
unsigned ``/plain/`` index once, then runs ``rclone sync``; alternating, medians of the rounds.

Figures from a shared machine are noisy: the load average before and after is printed; prefer
the CPU and syscall figures to the wall times. Everything started (nginx, the emulator, the
tools, in their own process groups) is stopped on exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shlex
import shutil
import signal
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

from benchmarks.corpus import KIB, Corpus, CorpusSpec, build, warm
from benchmarks.install import ensure_installed
from benchmarks.measure import Measurement, run_measured
from benchmarks.peers import Invocation, Platform, RunContext, Tool
from benchmarks.peers.assetsync import Assetsync
from benchmarks.peers.curl import Curl
from benchmarks.peers.rclone import Rclone
from benchmarks.report import filesystem_of, machine_info
from benchmarks.servers import serve
from benchmarks.verify import verify

ROOT = Path(__file__).resolve().parent
FILE_SIZE = 64 * KIB
MAX_FILES = 200_000  # a bound on the corpus (and on every loop over it)
MAX_ROUNDS = 50
STRACE_TOP = 14

Log = Callable[[str], None]


@dataclass
class Sample:
    """One measured run of one tool."""

    wall: float
    cpu: float  # user + sys of the tool's process tree
    user: float
    sys: float
    emulator_cpu: float  # this harness's CPU meanwhile: the emulator thread, mostly
    nginx_cpu: float | None  # nginx workers' CPU meanwhile (None: /proc unreadable)


@dataclass
class Series:
    name: str
    settings: str
    samples: list[Sample] = field(default_factory=list)
    failed: str | None = None
    strace: list[tuple[str, int, float]] = field(default_factory=list)  # syscall, calls, seconds

    def median(self, key: Callable[[Sample], float | None]) -> float | None:
        values = [v for v in (key(s) for s in self.samples) if v is not None]
        return statistics.median(values) if values else None

    def spread(self, key: Callable[[Sample], float | None]) -> tuple[float, float] | None:
        values = [v for v in (key(s) for s in self.samples) if v is not None]
        return (min(values), max(values)) if values else None


# -- the servers' CPU ---------------------------------------------------------------------------


def _proc_cpu(pid: int) -> float | None:
    """utime + stime of one process, in seconds (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime: fields 14 and 15


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _nginx_pids() -> list[int]:
    """This harness's nginx: the master (our child) and its workers (the master's children).
    Other agents' nginx processes on the machine are not counted."""
    me = os.getpid()
    nginx: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm", encoding="ascii") as fh:
                if fh.read().strip() == "nginx":
                    nginx.append(int(entry))
        except OSError:
            continue
    masters = {pid for pid in nginx if _ppid(pid) == me}
    return [pid for pid in nginx if pid in masters or _ppid(pid) in masters]


def _nginx_cpu(pids: Sequence[int]) -> float | None:
    total = 0.0
    for pid in pids:
        value = _proc_cpu(pid)
        if value is None:
            return None
        total += value
    return total


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- one run ------------------------------------------------------------------------------------


def _fresh(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def _timeout(corpus: Corpus, factor: float = 1.0) -> float:
    # A hung tool must not stall the benchmark: 10 MB/s plus 50 ms a file, 2 minutes at least.
    return factor * max(120.0, corpus.total_bytes / 10e6 + 0.05 * len(corpus.files))


def _measure(
    inv: Invocation, ctx: RunContext, logs: Path, timeout: float, nginx: Sequence[int]
) -> tuple[Measurement, float, float | None]:
    """Run ``inv`` once; its measurement, and the emulator's and nginx's CPU meanwhile."""
    os.sync()
    emu0, ngx0 = _self_cpu(), _nginx_cpu(nginx)
    m = run_measured(inv.argv, env=inv.env, log_dir=logs, timeout=timeout, cwd=ctx.scratch)
    emu1, ngx1 = _self_cpu(), _nginx_cpu(nginx)
    ngx = None if ngx0 is None or ngx1 is None else ngx1 - ngx0
    return m, emu1 - emu0, ngx


def _problem(m: Measurement, ctx: RunContext, *, check: bool = True) -> str | None:
    if m.timed_out:
        return "timed out"
    if m.returncode != 0:
        return f"exit {m.returncode}: {m.log_tail(300)}"
    if check:
        result = verify(ctx.dest, ctx.corpus)
        if not result.ok:
            return f"output check: {result.reason}"
    return None


def run_copy(
    series: Series,
    tool: Tool,
    ctx: RunContext,
    logs: Path,
    nginx: Sequence[int],
    log: Log,
) -> None:
    """One timed run of ``tool`` into an empty DEST, appended to ``series`` when it checks."""
    if series.failed:
        return
    _fresh(ctx.dest)
    inv = tool.command(ctx)
    m, emu, ngx = _measure(inv, ctx, logs, _timeout(ctx.corpus), nginx)
    problem = _problem(m, ctx)
    if problem is not None:
        series.failed = problem
        log(f"  {series.name:24} FAILED: {problem}")
        return
    series.samples.append(Sample(m.wall, m.cpu, m.user, m.sys, emu, ngx))
    n = len(ctx.corpus.files)
    log(
        f"  {series.name:24} wall {m.wall:6.2f} s  cpu {m.cpu:6.2f} s"
        f"  {1e3 * m.cpu / n:6.3f} ms/file"
    )


# -- strace -------------------------------------------------------------------------------------


def parse_strace_summary(text: str) -> list[tuple[str, int, float]]:
    """(syscall, calls, seconds) from ``strace -c`` output, most calls first."""
    rows = []
    for line in text.splitlines():
        parts = line.split()
        # "% time  seconds  usecs/call  calls  [errors]  syscall"
        if len(parts) not in (5, 6) or parts[-1] == "total" or parts[-1] == "syscall":
            continue
        try:
            seconds = float(parts[1])
            calls = int(parts[3])
        except ValueError:
            continue
        rows.append((parts[-1], calls, seconds))
    rows.sort(key=lambda r: -r[1])
    return rows


def run_strace(series: Series, tool: Tool, ctx: RunContext, logs: Path, log: Log) -> None:
    strace = shutil.which("strace")
    if strace is None:
        series.strace = []
        log("  strace is not installed (apt-get install strace): no syscall counts")
        return
    _fresh(ctx.dest)
    inv = tool.command(ctx)
    logs.mkdir(parents=True, exist_ok=True)
    out = logs / "strace-c.txt"
    argv = [strace, "-f", "-c", "-o", str(out), "--", *inv.argv]
    m = run_measured(argv, env=inv.env, log_dir=logs, timeout=_timeout(ctx.corpus, 5))
    problem = _problem(m, ctx)
    if problem is not None:
        log(f"  {series.name:24} under strace FAILED: {problem}")
        return
    try:
        series.strace = parse_strace_summary(out.read_text())
    except OSError as exc:
        log(f"  {series.name:24} strace output unreadable: {exc}")


# -- no-change rerun ----------------------------------------------------------------------------


def run_no_change(
    tools: dict[str, Tool],
    ctxs: dict[str, RunContext],
    rounds: int,
    work: Path,
    nginx: Sequence[int],
    log: Log,
) -> list[Series]:
    """Fill each tool's DEST once (untimed), then rerun each on it, alternating."""
    series = {name: Series(f"{name} no-change", "") for name in tools}
    for name, tool in tools.items():
        ctx = ctxs[name]
        _fresh(ctx.dest)
        inv = tool.command(ctx)
        m = run_measured(
            inv.argv,
            env=inv.env,
            log_dir=work / f"logs-{name}-fill",
            timeout=_timeout(ctx.corpus),
            cwd=ctx.scratch,
        )
        problem = _problem(m, ctx)
        if problem is not None:
            series[name].failed = f"first copy: {problem}"
            log(f"  {name} first copy FAILED: {problem}")
    for i in range(rounds):
        for name, tool in tools.items():
            s, ctx = series[name], ctxs[name]
            if s.failed:
                continue
            rerun = tool.rerun_command(ctx)
            assert rerun is not None
            s.settings = rerun.settings
            logs = work / f"logs-{name}-rerun-{i}"
            m, emu, ngx = _measure(rerun, ctx, logs, _timeout(ctx.corpus), nginx)
            problem = _problem(m, ctx)
            if problem is not None:
                s.failed = problem
                log(f"  {s.name:24} FAILED: {problem}")
                continue
            s.samples.append(Sample(m.wall, m.cpu, m.user, m.sys, emu, ngx))
            log(f"  {s.name:24} wall {m.wall:6.2f} s  cpu {m.cpu:6.2f} s")
    return list(series.values())


# -- report -------------------------------------------------------------------------------------


def _loadavg() -> str:
    try:
        with open("/proc/loadavg", encoding="ascii") as fh:
            return " ".join(fh.read().split()[:3])
    except OSError:
        return "?"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _range(series: Series, key: Callable[[Sample], float | None], spec: str) -> str:
    spread = series.spread(key)
    if spread is None:
        return "-"
    return f"{format(spread[0], spec)}-{format(spread[1], spec)}"


def report_copy(all_series: list[Series], files: int, log: Log) -> None:
    curl = next((s for s in all_series if s.name == "curl" and s.samples), None)
    curl_cpu = curl.median(lambda s: s.cpu) if curl else None
    curl_wall = curl.median(lambda s: s.wall) if curl else None
    log("")
    header = (
        f"{'tool':<24}{'wall s':>8}{'(min-max)':>13}{'CPU s':>8}{'(min-max)':>13}"
        f"{'CPU ms/file':>12}{'files/s':>9}{'CPU x curl':>11}{'files/s x curl':>15}"
        f"{'API CPU s':>10}{'nginx CPU s':>12}"
    )
    log(header)
    for s in all_series:
        if s.failed and not s.samples:
            log(f"{s.name:<24}FAILED: {s.failed}")
            continue
        wall = s.median(lambda x: x.wall)
        cpu = s.median(lambda x: x.cpu)
        per_file = None if cpu is None else 1e3 * cpu / files
        rate = None if not wall else files / wall
        cpu_ratio = None if cpu is None or not curl_cpu else cpu / curl_cpu
        rate_ratio = None if not wall or not curl_wall else curl_wall / wall
        log(
            f"{s.name:<24}{_fmt(wall, '8.2f')}{_range(s, lambda x: x.wall, '.2f'):>13}"
            f"{_fmt(cpu, '8.2f')}{_range(s, lambda x: x.cpu, '.2f'):>13}"
            f"{_fmt(per_file, '12.3f')}{_fmt(rate, '9.0f')}"
            f"{_fmt(cpu_ratio, '10.1f')}x{_fmt(rate_ratio, '14.2f')}x"
            f"{_fmt(s.median(lambda x: x.emulator_cpu), '10.2f')}"
            f"{_fmt(s.median(lambda x: x.nginx_cpu), '12.2f')}"
        )
        if s.failed:
            log(f"{'':<24}(a later round FAILED: {s.failed})")
    log("")
    log("CPU: user + sys of the tool's process tree (os.wait4 rusage), median of the rounds;")
    log("CPU x curl: the tool's CPU over curl's (lower is better); files/s x curl: the tool's")
    log("rate over curl's (above 1: faster). API CPU: this harness (the emulator thread) during")
    log("the run; nginx CPU: its processes' utime + stime from /proc during the run.")


def report_strace(all_series: list[Series], files: int, log: Log) -> None:
    traced = [s for s in all_series if s.strace]
    if not traced:
        return
    log("")
    log(f"syscalls per file under strace -f -c (one run each; top {STRACE_TOP} by calls):")
    for s in traced:
        total = sum(calls for _, calls, _ in s.strace)
        seconds = sum(sec for _, _, sec in s.strace)
        log(
            f"  {s.name}: {total:,} calls ({total / files:.1f} per file), "
            f"{seconds:.3f} s in syscalls as strace counts them"
        )
        for name, calls, sec in s.strace[:STRACE_TOP]:
            log(f"    {name:<18}{calls:>10,}{calls / files:>9.2f}/file{sec:>10.3f} s")


def report_no_change(all_series: list[Series], log: Log) -> None:
    if not all_series:
        return
    log("")
    log(f"{'no-change rerun':<26}{'wall s':>8}{'(min-max)':>13}{'CPU s':>8}{'(min-max)':>13}")
    for s in all_series:
        if not s.samples:
            log(f"{s.name:<26}FAILED: {s.failed}")
            continue
        log(
            f"{s.name:<26}{_fmt(s.median(lambda x: x.wall), '8.2f')}"
            f"{_range(s, lambda x: x.wall, '.2f'):>13}"
            f"{_fmt(s.median(lambda x: x.cpu), '8.2f')}{_range(s, lambda x: x.cpu, '.2f'):>13}"
        )
    ours = next((s for s in all_series if s.name.startswith("assetsync") and s.samples), None)
    theirs = next((s for s in all_series if s.name.startswith("rclone") and s.samples), None)
    if ours and theirs:
        a, b = ours.median(lambda x: x.wall), theirs.median(lambda x: x.wall)
        if a and b:
            log(f"assetsync rerun / rclone sync wall time: {a / b:.2f}x (target: at most 1.5x)")


# -- main ---------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.per_file_cpu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--files", type=int, default=2000, help="N files of 64 KiB (2000)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, alternating tools (3)")
    p.add_argument("--concurrency", type=int, default=32, help="transfers in flight (32)")
    p.add_argument("--no-fsync", action="store_true", help="also `assetsync mirror --no-fsync`")
    p.add_argument("--strace", action="store_true", help="syscall counts (one extra run each)")
    p.add_argument("--no-change", action="store_true", help="no-change rerun vs rclone sync")
    p.add_argument("--nginx-workers", default="auto", help="nginx worker_processes (auto)")
    p.add_argument(
        "--assetsync-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for every `assetsync mirror` (repeatable)",
    )
    p.add_argument("--work", type=Path, default=ROOT / ".work", help="corpus and scratch")
    p.add_argument(
        "--dest-root",
        type=Path,
        default=None,
        help="where DESTs go (default: under --work; /dev/shm for tmpfs)",
    )
    p.add_argument("--no-install", action="store_true", help="do not apt-get rclone")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return p


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwind: every context manager stops what it started


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 1 <= args.files <= MAX_FILES or not 1 <= args.rounds <= MAX_ROUNDS:
        print(f"--files must be 1..{MAX_FILES}, --rounds 1..{MAX_ROUNDS}", file=sys.stderr)
        return 2
    if args.concurrency < 1:
        print("--concurrency must be >= 1", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def log(line: str) -> None:
        print(line, flush=True)

    command = "python -m benchmarks.per_file_cpu " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    machine = machine_info()
    load_before = _loadavg()
    curl, ours = Curl(), Assetsync(list(args.assetsync_arg))
    tools: list[tuple[str, Tool]] = [("assetsync", ours), ("curl", curl)]
    if args.no_fsync:
        tools.append(("assetsync --no-fsync", Assetsync([*args.assetsync_arg, "--no-fsync"])))
    rclone = Rclone()
    ensure_installed(
        [curl, *([rclone] if args.no_change else [])], allow=not args.no_install, log=log
    )
    if curl.resolved() is None:
        log("curl is not installed (apt-get install curl)")
        return 2

    spec = CorpusSpec("small", args.files, FILE_SIZE, 1, f"{args.files:,} x 64 KiB")
    scratch = args.work / "per-file-cpu"
    dest_root = args.dest_root or scratch
    log(f"# per-file CPU, {started}")
    log(f"# command: {command}")
    log("# machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()))
    log(f"# load average before: {load_before}")
    copy_series = [Series(name, "") for name, _ in tools]
    strace_runs: list[Series] = []
    no_change: list[Series] = []
    code = 0
    try:
        corpus = build(spec, args.work, log)
        warm(corpus)
        dest_root.mkdir(parents=True, exist_ok=True)
        log(f"# corpus: {spec.description} ({corpus.total_bytes / 1e6:.0f} MB) in {corpus.root}")
        log(f"# destinations: {dest_root.resolve()} ({filesystem_of(dest_root)})")
        with serve(corpus, args.work, nginx_workers=args.nginx_workers, log=log) as platform:
            _check_platform(platform)
            nginx = _nginx_pids()
            log(
                f"# nginx processes: {len(nginx)}; listing (untimed): "
                f"{platform.listing_seconds or 0:.2f} s; concurrency {args.concurrency}"
            )

            def context(name: str) -> RunContext:
                safe = name.replace(" ", "").replace("-", "")
                work = scratch / "runs" / safe
                _fresh(work)
                return RunContext(
                    corpus, platform, dest_root / f"dest-{safe}", work, args.concurrency
                )

            ctxs = {name: context(name) for name, _ in tools}
            try:
                for i in range(args.rounds):
                    log(f"round {i + 1}/{args.rounds}")
                    for (name, tool), series in zip(tools, copy_series, strict=True):
                        series.settings = tool.command(ctxs[name]).settings
                        logs = scratch / "logs" / f"{name.replace(' ', '')}-{i}"
                        run_copy(series, tool, ctxs[name], logs, nginx, log)
                if args.strace:
                    log("strace runs (times not reported)")
                    for (name, tool), series in zip(tools, copy_series, strict=True):
                        logs = scratch / "logs" / f"{name.replace(' ', '')}-strace"
                        run_strace(series, tool, ctxs[name], logs, log)
                if args.no_change:
                    log("no-change reruns")
                    rerun_tools: dict[str, Tool] = {"assetsync": ours}
                    reason = rclone.missing(platform)
                    if reason is None:
                        rerun_tools["rclone"] = rclone
                        ctxs["rclone"] = context("rclone")
                    else:
                        log(f"  rclone MISSING: {reason}")
                    no_change = run_no_change(
                        rerun_tools, ctxs, args.rounds, scratch / "logs", nginx, log
                    )
            finally:
                for ctx in ctxs.values():
                    shutil.rmtree(ctx.dest, ignore_errors=True)
    except KeyboardInterrupt:
        log("interrupted: every server and tool was stopped; the figures below are partial")
        code = 130
    strace_runs = [s for s in copy_series if s.strace]
    report_copy(copy_series, args.files, log)
    report_strace(strace_runs, args.files, log)
    report_no_change(no_change, log)
    log("")
    log(
        f"# load average before: {load_before}; after: {_loadavg()} (2 cores shared: wall times"
        " move with the load, CPU and syscall counts much less)"
    )
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "started": started,
                    "command": command,
                    "machine": machine,
                    "load_before": load_before,
                    "load_after": _loadavg(),
                    "files": args.files,
                    "copy": [asdict(s) for s in copy_series],
                    "no_change": [asdict(s) for s in no_change],
                },
                indent=1,
            )
        )
        log(f"wrote {args.json}")
    if code == 0 and any(s.failed for s in copy_series + no_change):
        code = 1
    return code


def _check_platform(platform: Platform) -> None:
    if platform.api_url is None:
        raise SystemExit("the emulator is not available: assetsync has no API to list from")


if __name__ == "__main__":
    sys.exit(main())
