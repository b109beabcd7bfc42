"""SIGKILL at any moment of fetch, barrier and record: every recorded file is whole."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from engine.emulator.dataset import ExpectedAsset

from .conftest import KiB, harness, settle, sha256_of

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
KILLS = 8
# The child's events, in the order a batch goes through them.
STEPS = ("fetched", "barrier", "durable", "recorded")


@pytest.mark.slow
@pytest.mark.parametrize("barrier", ["files", "syncfs"])
async def test_a_killed_process_recorded_only_whole_files(tmp_path: Path, barrier: str) -> None:
    rng = random.Random(f"group-commit-{barrier}")
    async with harness(
        tmp_path, assets=48, large_share=0.0, empty_share=0.0, min_size=1000, max_size=64 * KiB
    ) as h:
        assets = h.assets(lambda a: True)
        by_rel = {f"d{i % 3}/{a.asset_id}.bin": a for i, a in enumerate(assets)}
        objects = [
            [a.asset_id, a.data_id, await h.presign(a.data_id), rel] for rel, a in by_rel.items()
        ]
        checked = 0
        for kill in range(KILLS):
            run = tmp_path / f"run{kill}"
            args = {
                "objects": objects,
                "dest": str(run / "dest"),
                "state_dir": str(run / "dest" / ".assetsync"),
                "record": str(run / "recorded.txt"),
                "batch": 5,
                "workers": 4,
                "barrier": barrier,
            }
            config = run / "args.json"
            run.mkdir()
            config.write_text(json.dumps(args))
            # The kill aims at an event, not at a line count: how many files are fetched before
            # the first barrier is durable depends on the disk (with a slow fsync all 48 were
            # fetched first, and eight kills aimed by line number all came before any record).
            # Each step is aimed at in turn; a run has at least two barriers (batch 5 of 48).
            kind = STEPS[kill % len(STEPS)]
            nth = rng.randrange(1, len(objects) + 1) if kind == "fetched" else rng.randrange(1, 3)
            async with await anyio.open_process(
                [sys.executable, "-m", "tests.transfer.child_group_commit", str(config)],
                cwd=REPO,
                stderr=subprocess.STDOUT,
            ) as child:
                assert child.stdout is not None
                seen = ""
                with anyio.fail_after(60):
                    async for chunk in child.stdout:
                        seen += chunk.decode()
                        assert "Traceback" not in seen, seen
                        if _occurrences(seen, kind) >= nth:
                            # Sometimes at once, sometimes a little later: mid-step.
                            await anyio.sleep(rng.choice([0, 0, 0.0005, 0.002]))
                            child.send_signal(signal.SIGKILL)
                            break
                    assert await child.wait() == -signal.SIGKILL, (kind, nth, seen)
                assert "finished" not in seen
            recorded = _check(run, by_rel)
            if kind == "recorded":
                assert recorded > 0, (nth, seen)
            checked += recorded
            await settle(h.emu)
        assert checked > 0, "no kill came after a record: the test checked nothing"


def _occurrences(output: str, kind: str) -> int:
    """How many whole event lines of ``kind`` the child has printed."""
    lines = output.splitlines(keepends=True)
    return sum(1 for line in lines if line.startswith(kind) and line.endswith("\n"))


def _check(run: Path, by_rel: dict[str, ExpectedAsset]) -> int:
    """Every recorded file is in place, whole; and no file at a final path is cut short."""
    recorded = run / "recorded.txt"
    lines = recorded.read_text().splitlines(keepends=True) if recorded.exists() else []
    whole_lines = [line.split() for line in lines if line.endswith("\n")]
    for rel, sha, size in whole_lines:
        asset = by_rel[rel]
        path = run / "dest" / rel
        assert path.stat().st_size == int(size) == asset.size
        assert sha256_of(path) == sha == asset.sha256
    dest = run / "dest"
    for path in dest.rglob("*"):
        rel = path.relative_to(dest).as_posix()
        if path.is_file() and not rel.startswith(".assetsync/"):
            assert sha256_of(path) == by_rel[rel].sha256, rel
    return len(whole_lines)
