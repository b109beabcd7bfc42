"""Micro benchmark of the manifest's hot path (not a test: prints per-row costs).

Run from the repository root: ``.venv/bin/python -m benchmarks.manifest_bench``. It applies
10,000 updates in batches of 500 for several mixes and times rows(), mark_seen() and export.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from engine.manifest import AssetUpdate, Manifest
from tests.manifest.helpers import update

N, BATCH = 10_000, 500


def asset_id(i: int) -> str:
    return f"{i:08d}-0000-4000-8000-000000000000"


class _Discard:
    def write(self, text: str) -> int:
        return len(text)


def _line(label: str, seconds: float, rows: int) -> None:
    print(f"{label:56s} {seconds / rows * 1e6:7.1f} us/row")


def bench(
    label: str,
    make: Callable[[int], AssetUpdate],
    before: Callable[[int], AssetUpdate] | None = None,
    extras: bool = False,
) -> None:
    with tempfile.TemporaryDirectory() as tmp, Manifest.open(Path(tmp)) as m:
        run = m.begin_run("dv", "http://127.0.0.1", {})
        if before is not None:
            for start in range(0, N, BATCH):
                m.apply([before(i) for i in range(start, start + BATCH)], run)
        batches = [[make(i) for i in range(s, s + BATCH)] for s in range(0, N, BATCH)]
        started = time.perf_counter()
        for batch in batches:
            m.apply(batch, run)
        _line(f"apply: {label}", time.perf_counter() - started, N)
        if not extras:
            return
        ids = [asset_id(i) for i in range(N)]
        started = time.perf_counter()
        for start in range(0, N, 1000):
            m.rows(ids[start : start + 1000])
        _line("rows(): 1000 ids a call", time.perf_counter() - started, N)
        second = m.begin_run("dv", "http://127.0.0.1", {})
        started = time.perf_counter()
        for start in range(0, N, 1000):
            m.mark_seen(second, ids[start : start + 1000])
        _line("mark_seen(): 1000 ids a call", time.perf_counter() - started, N)
        started = time.perf_counter()
        count = m.export(_Discard(), "jsonl")
        _line("export jsonl", time.perf_counter() - started, count)


def main() -> None:
    bench(
        "new, no annotations (file, 2 tags, 1 data tag)",
        lambda i: update(asset_id(i), annotations=None),
        extras=True,
    )
    bench("new, 1 annotation of 5 shapes", lambda i: update(asset_id(i), gen=0), extras=True)
    bench("new, 3 annotations of 5 shapes", lambda i: update(asset_id(i), gen=2))
    bench(
        "unchanged re-apply, 1 annotation",
        lambda i: update(asset_id(i), gen=0),
        before=lambda i: update(asset_id(i), gen=0),
    )
    bench(
        "tags and annotations changed (3 -> 1)",
        lambda i: update(asset_id(i), gen=3),
        before=lambda i: update(asset_id(i), gen=2),
    )
    bench(
        "metadata only (no file, no annotations)",
        lambda i: update(asset_id(i), with_file=False, annotations=None),
        before=lambda i: update(asset_id(i)),
    )


if __name__ == "__main__":
    main()
