"""One suite run: for each corpus, serve it, run every tool into a fresh folder, check, record.

Order per corpus: build or reuse the corpus, read it once (hot page cache on the server side),
start nginx and the emulator, list the URLs, then for each tool: empty destination, ``sync``
(so one tool's dirty pages are not written back during the next one's run), run and measure,
verify; for assetsync and rclone a no-change rerun on the complete folder. Destinations are
deleted after each tool. Everything started is stopped on the way out, Ctrl-C included.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.corpus import Corpus, build, specs, warm
from benchmarks.install import ensure_installed
from benchmarks.measure import FirstFileProbe, Measurement, run_measured
from benchmarks.peers import Invocation, Platform, RunContext, Tool, make_tools
from benchmarks.report import CorpusInfo, Results, ToolRun, filesystem_of, machine_info
from benchmarks.servers import serve
from benchmarks.verify import verify
from engine.emulator.nginx import DEFAULT_NGINX

Log = Callable[[str], None]


@dataclass
class Options:
    quick: bool = False
    only: list[str] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    repeat: int = 1
    concurrency: int = 32
    work: Path = Path("benchmarks/.work")
    results: Path = Path("benchmarks/results")
    install: bool = True
    nginx_workers: str = "auto"
    timeout: float | None = None  # seconds per tool run; None: from the corpus size
    assetsync_args: list[str] = field(default_factory=list)
    sdk_workers: int | None = None
    rerun: bool = True
    dest_root: Path | None = None  # where destinations go (default: under work, on disk)


def _nginx_version() -> str:
    try:
        out = subprocess.run(
            [DEFAULT_NGINX, "-v"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return "missing"
    return out.stderr.strip().replace("nginx version: ", "")


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _failed(tool: Tool, corpus: str, kind: str, inv: Invocation, reason: str) -> ToolRun:
    return ToolRun(tool.name, corpus, kind, "FAILED", reason, inv.settings)


def _record(
    tool: Tool, corpus: Corpus, kind: str, inv: Invocation, measured: list[Measurement]
) -> ToolRun:
    walls = [m.wall for m in measured]
    # The median run (the lower middle one for an even count) stands for all: its wall time,
    # CPU and first file come from one and the same run; peak RSS is the worst of all.
    median = sorted(measured, key=lambda m: m.wall)[(len(measured) - 1) // 2]
    return ToolRun(
        tool=tool.name,
        corpus=corpus.spec.name,
        kind=kind,
        status="ok",
        settings=inv.settings,
        wall=median.wall,
        user=median.user,
        sys=median.sys,
        max_rss_mb=max(m.max_rss_kib for m in measured) * 1024 / 1e6,
        first_file=median.first_file,
        files=len(corpus.files),
        bytes=corpus.total_bytes,
        repeats=walls,
        rss_exact=all(m.rss_exact for m in measured),
    )


def _measure_once(
    tool: Tool, ctx: RunContext, inv: Invocation, logs: Path, opts: Options, probe: bool
) -> Measurement | str:
    os.sync()
    # A hung tool must not stall the suite: allow 10 MB/s plus 50 ms a file, 2 minutes at least.
    corpus = ctx.corpus
    timeout = opts.timeout or max(120.0, corpus.total_bytes / 10e6 + 0.05 * len(corpus.files))
    names = tool.output_names(ctx) or {}
    sizes = {names.get(f.name, f.name): f.size for f in ctx.corpus.files}
    m = run_measured(
        inv.argv,
        env=inv.env,
        log_dir=logs,
        timeout=timeout,
        cwd=ctx.scratch,
        probe=FirstFileProbe(ctx.dest, sizes) if probe else None,
    )
    if m.timed_out:
        return f"timed out after {timeout:.0f} s"
    if m.returncode != 0:
        return f"exit {m.returncode}: {m.log_tail(300)}"
    check = verify(ctx.dest, ctx.corpus, names)
    if not check.ok:
        return f"output check: {check.reason}"
    return m


def run_tool(
    tool: Tool, corpus: Corpus, platform: Platform, opts: Options, log: Log
) -> list[ToolRun]:
    name = corpus.spec.name
    reason = tool.missing(platform)
    if reason is not None:
        log(f"  {tool.name:14} MISSING: {reason}")
        return [ToolRun(tool.name, name, "copy", "MISSING", reason)]
    base = opts.work / "runs" / name / tool.name
    dest = (opts.dest_root or base) / (f"{name}-{tool.name}" if opts.dest_root else "dest")
    ctx = RunContext(corpus, platform, dest, _fresh(base / "scratch"), opts.concurrency)
    out: list[ToolRun] = []
    measured: list[Measurement] = []
    inv = Invocation([], {})
    try:
        for i in range(opts.repeat):
            _fresh(ctx.dest)
            inv = tool.command(ctx)
            got = _measure_once(tool, ctx, inv, base / f"logs-copy-{i}", opts, probe=True)
            if isinstance(got, str):
                log(f"  {tool.name:14} FAILED: {got}")
                return [_failed(tool, name, "copy", inv, got)]
            measured.append(got)
        out.append(_record(tool, corpus, "copy", inv, measured))
        log(f"  {tool.name:14} {out[-1].wall:8.2f} s  ({inv.settings})")
        rerun = tool.rerun_command(ctx) if opts.rerun else None
        if rerun is not None:
            again: list[Measurement] = []
            for i in range(opts.repeat):
                got = _measure_once(tool, ctx, rerun, base / f"logs-rerun-{i}", opts, probe=False)
                if isinstance(got, str):
                    log(f"  {tool.name:14} rerun FAILED: {got}")
                    out.append(_failed(tool, name, "rerun", rerun, got))
                    return out
                again.append(got)
            out.append(_record(tool, corpus, "rerun", rerun, again))
            log(f"  {tool.name:14} {out[-1].wall:8.2f} s  no-change rerun")
        return out
    finally:
        shutil.rmtree(ctx.dest, ignore_errors=True)


def new_results() -> Results:
    command = "python -m benchmarks " + shlex.join(sys.argv[1:])
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return Results(started=started, command=command, machine=machine_info())


def run(opts: Options, results: Results, log: Log = print) -> Results:
    """Fill ``results`` (partially, when interrupted) with the runs ``opts`` asks for."""
    tools = make_tools(opts.tools, assetsync_args=opts.assetsync_args, sdk_workers=opts.sdk_workers)
    ensure_installed(tools, allow=opts.install, log=log)
    results.versions = {t.name: t.version() for t in tools}
    results.versions["nginx"] = _nginx_version()
    dest_root = opts.dest_root or opts.work
    dest_root.mkdir(parents=True, exist_ok=True)
    results.machine["destination"] = f"{dest_root.resolve()} ({filesystem_of(dest_root)})"
    all_specs = specs(opts.quick)
    opts.work.mkdir(parents=True, exist_ok=True)
    try:
        for name in opts.only or list(all_specs):
            corpus = build(all_specs[name], opts.work, log)
            warm(corpus)
            log(f"{name}: {corpus.spec.description}, {corpus.total_bytes / 1e6:,.0f} MB")
            with serve(corpus, opts.work, nginx_workers=opts.nginx_workers, log=log) as platform:
                results.corpora.append(
                    CorpusInfo(
                        name,
                        corpus.spec.description,
                        len(corpus.files),
                        corpus.total_bytes,
                        platform.url_source,
                        platform.listing_seconds,
                    )
                )
                for tool in tools:
                    results.runs.extend(run_tool(tool, corpus, platform, opts, log))
    except KeyboardInterrupt:
        results.notes.append("interrupted: the results are partial")
        raise
    finally:
        if any(not r.rss_exact for r in results.runs if r.ok):
            results.notes.append(
                "peak RSS without /usr/bin/time: each figure includes the harness's own size"
            )
        results.notes.append(
            f"{opts.concurrency} transfers in parallel for every tool; nginx"
            f" worker_processes={opts.nginx_workers}, access_log off, sendfile on; the emulator"
            " (API) runs in a thread of the harness; repeats per tool: "
            f"{opts.repeat} (median shown)"
        )
        results.notes.append(
            "aria2c, wget2, curl and the naive baseline get the URL list from the emulator's"
            " listing before they start; assetsync and the SDK list through the API themselves"
            " (their times include it). rclone reads nginx's unsigned /plain/ index: it cannot"
            " use per-object signed URLs at all."
        )
    return results
