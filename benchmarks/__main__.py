"""``python -m benchmarks run [--quick] [--only CORPUS] [--tools ...]``: the benchmark suite.

Builds the corpora under ``benchmarks/.work/`` (reused when present), serves each with nginx
(secure_link) and the emulator as the platform API, runs assetsync and its peers into fresh
folders, checks every output, and writes ``benchmarks/results/latest.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from benchmarks.corpus import specs
from benchmarks.peers import TOOL_NAMES
from benchmarks.report import console_table
from benchmarks.runner import Options, new_results, run

ROOT = Path(__file__).resolve().parent


def _split(values: list[str] | None) -> list[str]:
    return [v for item in values or [] for v in item.split(",") if v]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the suite")
    r.add_argument("--quick", action="store_true", help="small corpora: seconds per tool")
    r.add_argument(
        "--only",
        action="append",
        metavar="CORPUS",
        help=f"corpora to run (repeatable or comma-separated): {', '.join(specs(False))}",
    )
    r.add_argument(
        "--tools",
        action="append",
        metavar="TOOL",
        help=f"tools to run (repeatable or comma-separated): {', '.join(TOOL_NAMES)}",
    )
    r.add_argument(
        "--repeat", type=int, default=None, help="runs per tool, median shown (3 quick, 1 full)"
    )
    r.add_argument("--concurrency", type=int, default=32, help="transfers in parallel (32)")
    r.add_argument("--nginx-workers", default="auto", help="nginx worker_processes (auto)")
    r.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds per tool run (default: from the corpus size)",
    )
    r.add_argument("--no-install", action="store_true", help="do not apt-get missing peers")
    r.add_argument("--no-rerun", action="store_true", help="skip the no-change reruns")
    r.add_argument(
        "--assetsync-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `assetsync mirror` (repeatable)",
    )
    r.add_argument("--sdk-workers", type=int, default=None, help="SDK max_workers (its default)")
    r.add_argument(
        "--dest-root",
        type=Path,
        default=None,
        help="where the tools write (default: under --work, on disk; e.g. /dev/shm for tmpfs)",
    )
    r.add_argument("--work", type=Path, default=ROOT / ".work", help="corpora and scratch")
    r.add_argument("--results", type=Path, default=ROOT / "results", help="where reports go")
    return parser


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Unwind like Ctrl-C: every context manager stops what it started.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    only = _split(args.only)
    unknown = [c for c in only if c not in specs(args.quick)]
    if unknown:
        print(f"unknown corpus {unknown}; choose from {list(specs(False))}", file=sys.stderr)
        return 2
    tools = _split(args.tools) or list(TOOL_NAMES)
    if any(t not in TOOL_NAMES for t in tools):
        print(f"unknown tool in {tools}; choose from {TOOL_NAMES}", file=sys.stderr)
        return 2
    repeat = args.repeat if args.repeat is not None else (3 if args.quick else 1)
    if repeat < 1 or args.concurrency < 1:
        print("--repeat and --concurrency must be >= 1", file=sys.stderr)
        return 2
    opts = Options(
        quick=args.quick,
        only=only,
        tools=tools,
        repeat=repeat,
        concurrency=args.concurrency,
        work=args.work,
        results=args.results,
        install=not args.no_install,
        nginx_workers=args.nginx_workers,
        timeout=args.timeout,
        assetsync_args=args.assetsync_arg,
        sdk_workers=args.sdk_workers,
        rerun=not args.no_rerun,
        dest_root=args.dest_root,
    )
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Also when started with SIGINT ignored (a background job of a non-interactive shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    results = new_results()
    code = 0
    try:
        run(opts, results, log=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print("\ninterrupted: every server and tool was stopped", file=sys.stderr)
        code = 130
    print(console_table(results))
    # An interrupted run does not replace the last complete one.
    for path in results.write(opts.results, "latest" if code == 0 else "partial"):
        print(f"wrote {path}")
    return code


if __name__ == "__main__":
    sys.exit(main())
