"""Results of one suite run: the records, ratios, targets, and the Markdown / JSON / PNG output.

Units: MB = 10^6 bytes; CPU = user + system seconds of the tool's process tree; peak RSS from
the kernel (``ru_maxrss``). Ratios are assetsync's throughput over the peer's (the peer's wall
time over assetsync's): above 1 means assetsync is faster.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BIG_PEERS = ("aria2c", "rclone", "wget2", "curl")  # the "best peer" of issue 6's targets


@dataclass
class ToolRun:
    tool: str
    corpus: str
    kind: str  # "copy" (into an empty folder) or "rerun" (no-change, on the complete folder)
    status: str  # "ok", "FAILED", "MISSING"
    reason: str = ""
    settings: str = ""
    wall: float | None = None
    user: float | None = None
    sys: float | None = None
    max_rss_mb: float | None = None
    first_file: float | None = None
    files: int = 0
    bytes: int = 0
    repeats: list[float] = field(default_factory=list)  # wall times of every repeat
    rss_exact: bool = True  # False: peak RSS includes the harness's size (no GNU time)

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.wall is not None and self.wall > 0

    @property
    def cpu(self) -> float | None:
        return None if self.user is None or self.sys is None else self.user + self.sys

    @property
    def files_per_s(self) -> float | None:
        return self.files / self.wall if self.ok and self.wall else None

    @property
    def mb_per_s(self) -> float | None:
        return self.bytes / 1e6 / self.wall if self.ok and self.wall else None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(cpu=self.cpu, files_per_s=self.files_per_s, mb_per_s=self.mb_per_s)
        return out


@dataclass
class CorpusInfo:
    name: str
    description: str
    files: int
    bytes: int
    url_source: str
    listing_seconds: float | None


@dataclass
class Results:
    started: str
    command: str
    machine: dict[str, str]
    versions: dict[str, str] = field(default_factory=dict)
    corpora: list[CorpusInfo] = field(default_factory=list)
    runs: list[ToolRun] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def run(self, tool: str, corpus: str, kind: str = "copy") -> ToolRun | None:
        for r in self.runs:
            if r.tool == tool and r.corpus == corpus and r.kind == kind:
                return r
        return None

    def ratio(self, peer: str, corpus: str, kind: str = "copy") -> float | None:
        ours, theirs = self.run("assetsync", corpus, kind), self.run(peer, corpus, kind)
        if ours is None or theirs is None or not ours.ok or not theirs.ok:
            return None
        assert ours.wall is not None and theirs.wall is not None
        return theirs.wall / ours.wall

    def targets(self) -> list[tuple[str, str, str]]:
        """Issue 6's targets: (target, measured, PASS / FAIL / n.a.)."""
        out: list[tuple[str, str, str]] = []

        def best(corpus: str) -> tuple[str, float] | None:
            peers = [self.run(p, corpus) for p in BIG_PEERS]
            ok = [(r.tool, r.wall) for r in peers if r is not None and r.ok and r.wall]
            return min(ok, key=lambda x: x[1]) if ok else None

        def judge(value: float | None, threshold: float) -> str:
            return "n.a." if value is None else ("PASS" if value >= threshold else "FAIL")

        ours_small = self.run("assetsync", "small")
        small_best = best("small")
        ratio = None
        if ours_small and ours_small.ok and small_best and ours_small.wall:
            ratio = small_best[1] / ours_small.wall
        shown = f"{ratio:.2f}x {small_best[0]}" if ratio and small_best else "-"
        out.append(("small: ≥ 1.2x files/s of the best of aria2c/rclone/wget2/curl", shown,
                    judge(ratio, 1.2)))  # fmt: skip
        sdk = self.ratio("picsellia-sdk", "small")
        out.append(("small: ≥ 5x the platform SDK", f"{sdk:.2f}x" if sdk else "-", judge(sdk, 5)))
        ours_large = self.run("assetsync", "large")
        large_best = best("large")
        ratio = None
        if ours_large and ours_large.ok and large_best and ours_large.wall:
            ratio = large_best[1] / ours_large.wall
        shown = f"{ratio:.0%} of {large_best[0]}" if ratio and large_best else "-"
        out.append(("large: ≥ 90% of the best peer's throughput", shown, judge(ratio, 0.9)))
        reruns = [c.name for c in self.corpora if self.ratio("rclone", c.name, "rerun")]
        for corpus in reruns:
            r = self.ratio("rclone", corpus, "rerun")
            out.append((f"{corpus}: no-change rerun faster than rclone sync",
                        f"{r:.2f}x" if r else "-", judge(r, 1.0 + 1e-9)))  # fmt: skip
        rss = [r.max_rss_mb for r in self.runs if r.tool == "assetsync" and r.max_rss_mb]
        peak = max(rss) if rss else None
        out.append(("assetsync peak RSS < 300 MB", f"{peak:.0f} MB" if peak else "-",
                    "n.a." if peak is None else ("PASS" if peak < 300 else "FAIL")))  # fmt: skip
        return out

    # -- output --------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "command": self.command,
            "machine": self.machine,
            "versions": self.versions,
            "units": {"MB": "10^6 bytes", "cpu": "user+sys seconds of the tool's process tree"},
            "corpora": [asdict(c) for c in self.corpora],
            "runs": [r.as_dict() for r in self.runs],
            "ratios": {
                c.name: {
                    r.tool: self.ratio(r.tool, c.name)
                    for r in self.runs
                    if r.corpus == c.name and r.kind == "copy" and r.tool != "assetsync"
                }
                for c in self.corpora
            },
            "targets": [{"target": t, "measured": m, "result": v} for t, m, v in self.targets()],
            "notes": self.notes,
        }

    def to_markdown(self) -> str:
        lines = [
            "# assetsync benchmark results",
            "",
            f"- date: {self.started}",
            f"- command: `{self.command}`",
            "- machine: " + ", ".join(f"{k} {v}" for k, v in self.machine.items()),
            "- tools: " + "; ".join(f"{k}: {v}" for k, v in self.versions.items()),
            "- MB = 10^6 bytes; CPU = user+sys s of the tool's process tree; RSS = peak"
            " (ru_maxrss); first file = seconds to the first complete file; ratio = assetsync's"
            " throughput ÷ the tool's (> 1: assetsync faster)",
            "",
        ]
        for corpus in self.corpora:
            listing = (
                f"; listing the URLs through the API took {corpus.listing_seconds:.2f} s"
                " (not in the peers' times)"
                if corpus.listing_seconds is not None
                else ""
            )
            lines += [
                f"## {corpus.name}: {corpus.description} ({corpus.bytes / 1e6:,.0f} MB)",
                "",
                f"URLs: {corpus.url_source}{listing}.",
                "",
                _table(self, corpus.name),
                "",
            ]
        targets = self.targets()
        lines += ["## Targets (issue 6)", "", "| target | measured | result |", "|---|---|---|"]
        lines += [f"| {t} | {m} | {v} |" for t, m, v in targets]
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def write(self, folder: Path, stem: str = "latest") -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        md, js = folder / f"{stem}.md", folder / f"{stem}.json"
        md.write_text(self.to_markdown(), encoding="utf-8")
        js.write_text(json.dumps(self.to_json(), indent=2, ensure_ascii=False), encoding="utf-8")
        written += [md, js]
        chart = folder / f"{stem}.png"
        if _chart(self, chart):
            written.append(chart)
        else:
            self.notes.append("no chart: matplotlib is missing (pip install -e '.[bench]')")
            md.write_text(self.to_markdown(), encoding="utf-8")
        return written


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _table(results: Results, corpus: str) -> str:
    head = (
        "| tool | run | status | wall s | files/s | MB/s | CPU s | CPU ms/file | peak RSS MB"
        " | first file s | ratio | settings |"
    )
    rows = [head, "|" + "---|" * 12]
    for r in results.runs:
        if r.corpus != corpus:
            continue
        ratio = None if r.tool == "assetsync" else results.ratio(r.tool, corpus, r.kind)
        per_file = r.cpu * 1000 / r.files if r.ok and r.cpu is not None and r.files else None
        status = r.status if r.ok or not r.reason else f"{r.status}: {r.reason}"
        rows.append(
            f"| {r.tool} | {r.kind} | {status.replace('|', '/')} | {_fmt(r.wall, '.2f')}"
            f" | {_fmt(r.files_per_s, ',.0f')} | {_fmt(r.mb_per_s, ',.0f')}"
            f" | {_fmt(r.cpu, '.2f')} | {_fmt(per_file, '.2f')} | {_fmt(r.max_rss_mb, '.0f')}"
            f" | {_fmt(r.first_file, '.3f')} | {_fmt(ratio, '.2f')} | {r.settings} |"
        )
    return "\n".join(rows)


def console_table(results: Results) -> str:
    out = []
    for corpus in results.corpora:
        out.append(f"\n{corpus.name}: {corpus.description}")
        out.append(f"  {'tool':15} {'run':6} {'wall s':>8} {'files/s':>9} {'MB/s':>8} "
                   f"{'CPU s':>7} {'RSS MB':>7} {'1st s':>7} {'ratio':>6}  status")  # fmt: skip
        for r in results.runs:
            if r.corpus != corpus.name:
                continue
            ratio = None if r.tool == "assetsync" else results.ratio(r.tool, corpus.name, r.kind)
            status = "ok" if r.ok else f"{r.status}: {r.reason}"[:110]
            out.append(
                f"  {r.tool:15} {r.kind:6} {_fmt(r.wall, '.2f'):>8}"
                f" {_fmt(r.files_per_s, ',.0f'):>9} {_fmt(r.mb_per_s, ',.0f'):>8}"
                f" {_fmt(r.cpu, '.2f'):>7} {_fmt(r.max_rss_mb, '.0f'):>7}"
                f" {_fmt(r.first_file, '.3f'):>7} {_fmt(ratio, '.2f'):>6}  {status}"
            )
    out.append("\ntargets (issue 6):")
    out += [f"  [{v:4}] {t}: {m}" for t, m, v in results.targets()]
    return "\n".join(out)


def _chart(results: Results, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    corpora = [c.name for c in results.corpora]
    tools: list[str] = []
    for r in results.runs:
        if r.kind == "copy" and r.tool not in tools:
            tools.append(r.tool)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    width = 0.8 / max(1, len(tools))
    for ax, metric, label in (
        (axes[0], "files_per_s", "files/s"),
        (axes[1], "mb_per_s", "MB/s (10^6 bytes)"),
    ):
        for i, tool in enumerate(tools):
            values = []
            for corpus in corpora:
                run = results.run(tool, corpus)
                value = getattr(run, metric) if run is not None else None
                values.append(value or 0.0)
            xs = [c + (i - (len(tools) - 1) / 2) * width for c in range(len(corpora))]
            ax.bar(xs, values, width, label=tool)
        ax.set_xticks(range(len(corpora)), corpora)
        ax.set_ylabel(label)
        ax.set_title(f"throughput, {label} (higher is better; 0 = failed or missing)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"assetsync benchmark, {results.started}, {results.machine.get('cpu', '')}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _first(path: str, prefix: str, sep: str) -> str:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(sep, 1)[1].strip().strip('"')
    return "?"


def filesystem_of(path: Path) -> str:
    """The file system type of ``path`` (from /proc/mounts: the longest matching mount point)."""
    target, best, kind = str(path.resolve()), -1, "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) < 3:
                continue
            mount = fields[1]
            inside = target == mount or target.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) > best:
                best, kind = len(mount), f"{fields[2]} on {fields[0]}"
    return kind


def machine_info() -> dict[str, str]:
    mem = _first("/proc/meminfo", "MemTotal:", ":")
    with contextlib.suppress(ValueError, IndexError):
        mem = f"{int(mem.split()[0]) / 1024 / 1024:.0f} GiB"
    distro = _first("/etc/os-release", "PRETTY_NAME=", "=")
    return {
        "cpu": _first("/proc/cpuinfo", "model name", ":"),
        "cores": str(os.cpu_count()),
        "memory": mem,
        "os": f"{distro}, Linux {platform.release()}",
        "python": platform.python_version(),
    }
