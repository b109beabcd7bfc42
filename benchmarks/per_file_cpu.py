"""CPU per small file: ``assetsync mirror`` against ``curl --parallel`` on one corpus (issue 13).

    .venv/bin/python -m benchmarks.per_file_cpu [--files 2000] [--rounds 3] [--no-fsync]
        [--strace] [--perf] [--no-change] [--dest-root /dev/shm] [--json OUT]

One corpus of N x 64 KiB (the suite's ``small`` corpus, built or reused under
``benchmarks/.work/``), served as the suite serves it (:func:`benchmarks.servers.serve`): nginx
with secure_link on 127.0.0.1 holds the bytes, the emulator in a thread of this harness is the
platform API and hands out the signed URLs. Each round runs, in this order, each into a fresh
DEST after a ``sync``:

* ``assetsync mirror`` with its defaults (subprocess, token in ``PICSELLIA_TOKEN``, ``--quiet``);
* ``curl --parallel --parallel-max C`` on the same signed URLs (from the emulator's listing,
  untimed, as the suite does);
* with ``--no-fsync``: ``assetsync mirror --no-fsync``;
* with ``--rclone``: ``rclone copy`` as the suite runs it (:class:`benchmarks.peers.Rclone`);
* with ``--barrier files|syncfs``: ``assetsync mirror`` with group commit on and that barrier
  (``transfer.group_commit = true``, ``transfer.barrier``, by a ``--config`` file): ``syncfs``
  of DEST's file system or fdatasync of each file;
* ``assetsync mirror --help``: the start-up every run pays (interpreter, imports, CLI).

Every output is checked (count, bytes, SHA-256 of a sample) before it is counted. Printed per
tool: medians over the rounds and the spread (min-max) of wall seconds and CPU seconds (user +
sys of the tool's process tree, from ``os.wait4``'s rusage), CPU ms per file (and, for
assetsync, net of the start-up), files/s, the ratios to curl, and the CPU the servers spent
meanwhile: the emulator (this harness's own CPU; ~0 for curl, which does not use the API) and
nginx (its workers' utime + stime from ``/proc``).

``--strace``: one more run of each tool under ``strace -f -c`` (times not reported: strace slows
every syscall, and it changes what it counts: with 16 threads contending for the GIL, futex calls
per file grow about 3-4x under strace); the top syscalls with their counts per file.
``--perf``: one more run of each tool under ``perf stat`` with the kernel's syscall tracepoints,
which count without slowing the calls (needs perf and root); prefer these counts.

``--no-change``: the no-change rerun. assetsync mirrors once (untimed), then reruns on the
complete DEST; rclone (installed with apt-get when missing and root) copies from nginx's
unsigned ``/plain/`` index once, then runs ``rclone sync``; alternating, medians of the rounds.

Destinations are never reused nor deleted during the measurements, only at exit: on an ext4
without a journal (this benchmark machine's), creating files soon after thousands were deleted
makes the kernel skip the recently deleted inodes one by one (``recently_deleted`` in
``ext4_new_inode``), which cost up to 0.4 ms of system time per created file in our runs, for
whichever tool came next. ``--dest-root /dev/shm`` measures the tools without the disk.

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
from benchmarks.peers.assetsync import ASSETSYNC, Assetsync
from benchmarks.peers.curl import Curl
from benchmarks.peers.rclone import Rclone
from benchmarks.report import filesystem_of, machine_info
from benchmarks.servers import serve
from benchmarks.verify import verify

ROOT = Path(__file__).resolve().parent
FILE_SIZE = 64 * KIB
MAX_FILES = 200_000  # a bound on the corpus (and on every loop over it)
MAX_ROUNDS = 50
SYSCALLS_SHOWN = 16
STARTUP = "assetsync start-up"
PERF_SYSCALLS = (
    "futex",
    "getpid",
    "openat",
    "close",
    "flock",
    "fsync",
    "fdatasync",
    "renameat",
    "pwrite64",
    "pwritev2",
    "pread64",
    "write",
    "read",
    "recvfrom",
    "sendto",
    "epoll_pwait",
    "epoll_wait",
    "io_uring_enter",
    "newfstatat",
    "mmap",
    "munmap",
    "poll",
    "rt_sigaction",
)

Log = Callable[[str], None]


@dataclass
class Sample:
    """One measured run of one tool."""

    wall: float
    cpu: float  # user + sys of the tool's process tree
    user: float
    sys: float
    emulator_cpu: float  # this harness's CPU meanwhile: the emulator thread, mostly
    nginx_cpu: float | None  # nginx's CPU meanwhile (None: /proc unreadable)


@dataclass
class Series:
    name: str
    settings: str
    samples: list[Sample] = field(default_factory=list)
    failed: str | None = None
    strace: list[tuple[str, int, float]] = field(default_factory=list)  # syscall, calls, seconds
    perf: list[tuple[str, int]] = field(default_factory=list)  # event, count

    def median(self, key: Callable[[Sample], float | None]) -> float | None:
        values = [v for v in (key(s) for s in self.samples) if v is not None]
        return statistics.median(values) if values else None

    def spread(self, key: Callable[[Sample], float | None]) -> tuple[float, float] | None:
        values = [v for v in (key(s) for s in self.samples) if v is not None]
        return (min(values), max(values)) if values else None


class Destinations:
    """Fresh destination folders, never reused; all deleted by :meth:`cleanup` (at exit)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.made: list[Path] = []

    def fresh(self, name: str) -> Path:
        path = self.root / f"{name}-{len(self.made)}"
        shutil.rmtree(path, ignore_errors=True)  # a leftover of an interrupted run
        self.made.append(path)
        path.mkdir(parents=True)  # empty, as the suite gives every tool (curl needs it to exist)
        return path

    def cleanup(self) -> None:
        for path in self.made:
            shutil.rmtree(path, ignore_errors=True)
        self.made.clear()


# -- the servers' CPU ---------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _proc_cpu(pid: int) -> float | None:
    """utime + stime of one process, in seconds (None once it is gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _nginx_pids() -> list[int]:
    """This harness's nginx: the master (our child) and its workers (the master's children).
    Other agents' nginx processes on the machine are not counted."""
    me = os.getpid()
    nginx: list[tuple[int, int]] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm", encoding="ascii") as fh:
                if fh.read().strip() != "nginx":
                    continue
        except OSError:
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            nginx.append((int(entry), int(fields[1])))
    masters = {pid for pid, ppid in nginx if ppid == me}
    return [pid for pid, ppid in nginx if pid in masters or ppid in masters]


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


def _timeout(corpus: Corpus, factor: float = 1.0) -> float:
    # A hung tool must not stall the benchmark: 10 MB/s plus 50 ms a file, 2 minutes at least.
    return factor * max(120.0, corpus.total_bytes / 10e6 + 0.05 * len(corpus.files))


def _with_dest(ctx: RunContext, dest: Path) -> RunContext:
    return RunContext(ctx.corpus, ctx.platform, dest, ctx.scratch, ctx.concurrency)


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


def _problem(m: Measurement, ctx: RunContext | None) -> str | None:
    if m.timed_out:
        return "timed out"
    if m.returncode != 0:
        return f"exit {m.returncode}: {m.log_tail(300)}"
    if ctx is not None:
        result = verify(ctx.dest, ctx.corpus)
        if not result.ok:
            return f"output check: {result.reason}"
    return None


def _record(
    series: Series, m: Measurement, emu: float, ngx: float | None, files: int, log: Log
) -> None:
    series.samples.append(Sample(m.wall, m.cpu, m.user, m.sys, emu, ngx))
    log(
        f"  {series.name:24} wall {m.wall:6.2f} s  cpu {m.cpu:6.2f} s"
        f"  {1e3 * m.cpu / files:6.3f} ms/file"
    )


def run_copy(
    series: Series,
    tool: Tool,
    ctx: RunContext,
    logs: Path,
    nginx: Sequence[int],
    log: Log,
) -> None:
    """One timed run of ``tool`` into a fresh DEST, appended to ``series`` when it checks."""
    if series.failed:
        return
    inv = tool.command(ctx)
    m, emu, ngx = _measure(inv, ctx, logs, _timeout(ctx.corpus), nginx)
    problem = _problem(m, ctx)
    if problem is not None:
        series.failed = problem
        log(f"  {series.name:24} FAILED: {problem}")
        return
    _record(series, m, emu, ngx, len(ctx.corpus.files), log)


def run_startup(series: Series, ctx: RunContext, logs: Path, log: Log) -> None:
    """``assetsync mirror --help``: interpreter, imports and CLI, what every run pays first."""
    if series.failed:
        return
    inv = Invocation([ASSETSYNC, "mirror", "--help"], ctx.env())
    m = run_measured(inv.argv, env=inv.env, log_dir=logs, timeout=120, cwd=ctx.scratch)
    problem = _problem(m, None)
    if problem is not None:
        series.failed = problem
        log(f"  {series.name:24} FAILED: {problem}")
        return
    _record(series, m, 0.0, None, len(ctx.corpus.files), log)


# -- syscall counts -----------------------------------------------------------------------------


def parse_strace_summary(text: str) -> list[tuple[str, int, float]]:
    """(syscall, calls, seconds) from ``strace -c`` output, most calls first."""
    rows = []
    for line in text.splitlines():
        parts = line.split()
        # "% time  seconds  usecs/call  calls  [errors]  syscall"
        if len(parts) not in (5, 6) or parts[-1] in ("total", "syscall"):
            continue
        try:
            seconds = float(parts[1])
            calls = int(parts[3])
        except ValueError:
            continue
        rows.append((parts[-1], calls, seconds))
    rows.sort(key=lambda r: -r[1])
    return rows


def parse_perf_stat(text: str) -> list[tuple[str, int]]:
    """(event, count) from ``perf stat -x ';'`` output; syscall tracepoints by syscall name."""
    rows = []
    for line in text.splitlines():
        parts = line.split(";")
        if len(parts) < 3 or not parts[0].strip().replace(".", "", 1).isdigit():
            continue
        name = parts[2].replace("syscalls:sys_enter_", "").replace("raw_syscalls:sys_enter", "all")
        rows.append((name, round(float(parts[0]))))
    rows.sort(key=lambda r: -r[1])
    return rows


def perf_events() -> list[str]:
    """The perf events counted: context switches and the syscalls this kernel can trace."""
    tracing = Path("/sys/kernel/tracing/events")
    events = ["context-switches"]
    if (tracing / "raw_syscalls" / "sys_enter").exists():
        events.append("raw_syscalls:sys_enter")
    events += [
        f"syscalls:sys_enter_{name}"
        for name in PERF_SYSCALLS
        if (tracing / "syscalls" / f"sys_enter_{name}").exists()
    ]
    return events


def run_counted(
    series: Series, tool: Tool, ctx: RunContext, logs: Path, how: str, log: Log
) -> None:
    """One untimed run of ``tool`` under ``strace -f -c`` (``how="strace"``) or ``perf stat``."""
    binary = shutil.which(how)
    if binary is None:
        log(f"  {how} is not installed (apt-get install {how}): no syscall counts")
        return
    inv = tool.command(ctx)
    logs.mkdir(parents=True, exist_ok=True)
    out = logs / f"{how}.txt"
    if how == "strace":
        argv = [binary, "-f", "-c", "-o", str(out), "--", *inv.argv]
    else:
        argv = [
            binary,
            "stat",
            "-x",
            ";",
            "-o",
            str(out),
            "-e",
            ",".join(perf_events()),
            "--",
            *inv.argv,
        ]
    m = run_measured(argv, env=inv.env, log_dir=logs, timeout=_timeout(ctx.corpus, 5))
    problem = _problem(m, ctx)
    if problem is not None:
        log(f"  {series.name:24} under {how} FAILED: {problem}")
        return
    try:
        text = out.read_text()
    except OSError as exc:
        log(f"  {series.name:24} {how} output unreadable: {exc}")
        return
    if how == "strace":
        series.strace = parse_strace_summary(text)
    else:
        series.perf = parse_perf_stat(text)
        if not series.perf:
            log(f"  {series.name:24} perf stat counted nothing (no tracepoints, not root?)")


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


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    if value is None:
        width = int(spec.split(".")[0] or 0)
        return "-".rjust(width + len(suffix))
    return format(value, spec) + suffix


def _range(series: Series, key: Callable[[Sample], float | None], spec: str) -> str:
    spread = series.spread(key)
    if spread is None:
        return "-"
    return f"{format(spread[0], spec)}-{format(spread[1], spec)}"


def report_copy(all_series: list[Series], files: int, log: Log) -> None:
    curl = next((s for s in all_series if s.name == "curl" and s.samples), None)
    startup = next((s for s in all_series if s.name == STARTUP and s.samples), None)
    curl_cpu = curl.median(lambda s: s.cpu) if curl else None
    curl_wall = curl.median(lambda s: s.wall) if curl else None
    start_cpu = startup.median(lambda s: s.cpu) if startup else None
    log("")
    log(
        f"{'tool':<22}{'wall s':>7}{'(min-max)':>12}{'CPU s':>7}{'(min-max)':>12}"
        f"{'user':>6}{'sys':>6}{'CPU ms/file':>12}{'net':>7}{'files/s':>8}{'CPU x curl':>11}"
        f"{'files/s x curl':>15}{'API CPU':>8}{'nginx':>6}"
    )
    for s in all_series:
        if s.failed and not s.samples:
            log(f"{s.name:<22}FAILED: {s.failed}")
            continue
        wall = s.median(lambda x: x.wall)
        cpu = s.median(lambda x: x.cpu)
        is_run = s.name != STARTUP
        per_file = None if cpu is None else 1e3 * cpu / files
        net = None
        if s.name.startswith("assetsync") and cpu is not None and start_cpu is not None:
            net = 1e3 * (cpu - start_cpu) / files
        rate = files / wall if wall and is_run else None
        cpu_ratio = cpu / curl_cpu if cpu is not None and curl_cpu and is_run else None
        rate_ratio = curl_wall / wall if wall and curl_wall and is_run else None
        log(
            f"{s.name:<22}{_fmt(wall, '7.2f')}{_range(s, lambda x: x.wall, '.2f'):>12}"
            f"{_fmt(cpu, '7.2f')}{_range(s, lambda x: x.cpu, '.2f'):>12}"
            f"{_fmt(s.median(lambda x: x.user), '6.2f')}{_fmt(s.median(lambda x: x.sys), '6.2f')}"
            f"{_fmt(per_file if is_run else None, '12.3f')}{_fmt(net, '7.3f')}"
            f"{_fmt(rate, '8.0f')}{_fmt(cpu_ratio, '10.1f', 'x')}{_fmt(rate_ratio, '14.2f', 'x')}"
            f"{_fmt(s.median(lambda x: x.emulator_cpu) if is_run else None, '8.2f')}"
            f"{_fmt(s.median(lambda x: x.nginx_cpu), '6.2f')}"
        )
        if s.failed:
            log(f"{'':<22}(a later round FAILED: {s.failed})")
    log("")
    log("CPU: user + sys of the tool's process tree (os.wait4 rusage), median of the rounds;")
    log("net: CPU ms per file after taking off the start-up row's CPU (`assetsync mirror")
    log("--help`: interpreter, imports, CLI). CPU x curl: the tool's CPU over curl's (lower is")
    log("better); files/s x curl: the tool's rate over curl's (above 1: faster). API CPU: this")
    log("harness (the emulator thread) during the run; nginx: its processes' utime + stime.")


def _show_counts(name: str, rows: Sequence[tuple[str, int]], files: int, log: Log) -> None:
    total = dict(rows).get("all", sum(c for n, c in rows if n != "context-switches"))
    log(f"  {name}: {total:,} syscalls ({total / files:.1f} per file)")
    for event, calls in [r for r in rows if r[0] != "all"][:SYSCALLS_SHOWN]:
        log(f"    {event:<18}{calls:>10,}{calls / files:>9.2f}/file")


def report_syscalls(all_series: list[Series], files: int, log: Log) -> None:
    perf = [s for s in all_series if s.perf]
    if perf:
        log("")
        log("syscalls per file, perf stat with syscall tracepoints (one run each, not slowed):")
        for s in perf:
            _show_counts(s.name, s.perf, files, log)
    traced = [s for s in all_series if s.strace]
    if traced:
        log("")
        log("syscalls per file under strace -f -c (one run each; strace slows every syscall, so")
        log("threads contend longer for the GIL: futex counts are inflated several times):")
        for s in traced:
            _show_counts(s.name, [(n, c) for n, c, _ in s.strace], files, log)


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
    p.add_argument(
        "--barrier",
        choices=("files", "syncfs"),
        help="also `assetsync mirror` with group commit and this barrier (a --config file)",
    )
    p.add_argument("--rclone", action="store_true", help="also `rclone copy` (the suite's peer)")
    p.add_argument("--strace", action="store_true", help="strace -f -c counts (one extra run)")
    p.add_argument("--perf", action="store_true", help="perf stat syscall counts (one extra run)")
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


def _runs_planned(args: argparse.Namespace, tools: int) -> int:
    return (
        int(args.rounds) * tools
        + (tools if args.strace else 0)
        + (tools if args.perf else 0)
        + (2 if args.no_change else 0)
    )


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
    if args.barrier:
        config = args.work / "per-file-cpu" / f"barrier-{args.barrier}.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(f'[transfer]\ngroup_commit = true\nbarrier = "{args.barrier}"\n')
        tools.append(
            (
                f"assetsync group {args.barrier}",
                Assetsync([*args.assetsync_arg, "--config", str(config)]),
            )
        )
    rclone = Rclone()
    if args.rclone:
        tools.append(("rclone", rclone))
    ensure_installed(
        [curl, *([rclone] if args.no_change or args.rclone else [])],
        allow=not args.no_install,
        log=log,
    )
    if curl.resolved() is None:
        log("curl is not installed (apt-get install curl)")
        return 2

    spec = CorpusSpec("small", args.files, FILE_SIZE, 1, f"{args.files:,} x 64 KiB")
    scratch = args.work / "per-file-cpu"
    dest_root = args.dest_root or scratch / "dest"
    dest_root.mkdir(parents=True, exist_ok=True)
    need = _runs_planned(args, len(tools)) * args.files * FILE_SIZE * 1.1
    free = shutil.disk_usage(dest_root).free
    if need > free * 0.8:
        log(
            f"not enough space under {dest_root}: fresh destinations for every run need "
            f"{need / 1e9:.1f} GB, {free / 1e9:.1f} GB free (fewer --files or --rounds)"
        )
        return 2
    dests = Destinations(dest_root)
    log(f"# per-file CPU, {started}")
    log(f"# command: {command}")
    log("# machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()))
    log(f"# load average before: {load_before}")
    copy_series = [Series(name, "") for name, _ in tools]
    startup = Series(STARTUP, "mirror --help")
    no_change: list[Series] = []
    code = 0
    try:
        corpus = build(spec, args.work, log)
        warm(corpus)
        log(f"# corpus: {spec.description} ({corpus.total_bytes / 1e6:.0f} MB) in {corpus.root}")
        log(
            f"# destinations: {dest_root.resolve()} ({filesystem_of(dest_root)}), a fresh "
            f"folder per run ({need / 1e9:.1f} GB at most), deleted at exit"
        )
        with serve(corpus, args.work, nginx_workers=args.nginx_workers, log=log) as platform:
            _check_platform(platform)
            nginx = _nginx_pids()
            log(
                f"# nginx processes: {len(nginx)}; listing (untimed): "
                f"{platform.listing_seconds or 0:.2f} s; concurrency {args.concurrency}"
            )
            base: dict[str, RunContext] = {}
            for name, _ in tools:
                work = scratch / "runs" / name.replace(" ", "").replace("-", "")
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir(parents=True)
                base[name] = RunContext(corpus, platform, dest_root, work, args.concurrency)

            def fresh(name: str) -> RunContext:
                safe = name.replace(" ", "").replace("-", "")
                return _with_dest(base[name], dests.fresh(safe))

            for i in range(args.rounds):
                log(f"round {i + 1}/{args.rounds}")
                for (name, tool), series in zip(tools, copy_series, strict=True):
                    ctx = fresh(name)
                    series.settings = tool.command(ctx).settings
                    logs = scratch / "logs" / f"{name.replace(' ', '')}-{i}"
                    run_copy(series, tool, ctx, logs, nginx, log)
                run_startup(startup, base["assetsync"], scratch / "logs" / f"startup-{i}", log)
            for how in [h for h in ("perf", "strace") if getattr(args, h)]:
                log(f"{how} runs (times not reported)")
                for (name, tool), series in zip(tools, copy_series, strict=True):
                    logs = scratch / "logs" / f"{name.replace(' ', '')}-{how}"
                    run_counted(series, tool, fresh(name), logs, how, log)
            if args.no_change:
                log("no-change reruns")
                rerun_tools: dict[str, Tool] = {"assetsync": ours}
                ctxs = {"assetsync": fresh("assetsync")}
                reason = rclone.missing(platform)
                if reason is None:
                    rerun_tools["rclone"] = rclone
                    work = scratch / "runs" / "rclone"
                    work.mkdir(parents=True, exist_ok=True)
                    ctxs["rclone"] = RunContext(
                        corpus, platform, dests.fresh("rclone"), work, args.concurrency
                    )
                else:
                    log(f"  rclone MISSING: {reason}")
                no_change = run_no_change(
                    rerun_tools, ctxs, args.rounds, scratch / "logs", nginx, log
                )
    except KeyboardInterrupt:
        log("interrupted: every server and tool was stopped; the figures below are partial")
        code = 130
    finally:
        dests.cleanup()
    report_copy([*copy_series, startup], args.files, log)
    report_syscalls(copy_series, args.files, log)
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
                    "copy": [asdict(s) for s in [*copy_series, startup]],
                    "no_change": [asdict(s) for s in no_change],
                },
                indent=1,
            )
        )
        log(f"wrote {args.json}")
    if code == 0 and any(s.failed for s in [*copy_series, startup, *no_change]):
        code = 1
    return code


def _check_platform(platform: Platform) -> None:
    if platform.api_url is None:
        raise SystemExit("the emulator is not available: assetsync has no API to list from")


if __name__ == "__main__":
    sys.exit(main())
