"""A SIGKILL at any moment leaves a manifest the next run trusts: whole batches or nothing."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from engine.manifest import Manifest, annotations_digest, tags_digest
from tests.manifest.crash_child import BATCH, SLOTS
from tests.manifest.helpers import annotation

ROOT = Path(__file__).resolve().parents[2]


def run_child_until_killed(
    dest: Path, first_gen: int, rnd: random.Random
) -> tuple[list[int], bool]:
    """Start the child, let it commit a few batches, SIGKILL it somewhere.

    Returns the generations it reported committed, and whether it was killed inside ``apply``.
    """
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.manifest.crash_child", str(dest), str(first_gen)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    committed: list[int] = []
    inside_apply = False
    try:
        assert child.stdout is not None
        wanted = rnd.randint(1, 4)
        while len(committed) < wanted:
            line = child.stdout.readline()
            assert line, "the child died on its own"
            if line.startswith("committed"):
                committed.append(int(line.split()[1]))
        # Aim at the next apply: wait until the child announces it, then vary where in it the
        # kill lands (this is not a timing assertion; under load a kill may still land after
        # the apply, which the caller tolerates by trying again).
        while not (line := child.stdout.readline()).startswith("applying"):
            assert line, "the child died on its own"
            if line.startswith("committed"):
                committed.append(int(line.split()[1]))
        time.sleep(rnd.random() * 0.02)
        os.kill(child.pid, signal.SIGKILL)
        rest, _ = child.communicate()
        lines = rest.splitlines()
        committed += [int(line.split()[1]) for line in lines if line.startswith("committed")]
        # The last line the child printed, ours from the loop above included.
        inside_apply = (lines[-1] if lines else line).startswith("applying")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    return committed, inside_apply


def check_whole(m: Manifest, committed: list[int]) -> int:
    """Every asset complete and consistent, every slot from one batch; return the newest gen."""
    assert m.check() == []
    conn = m._connection()
    gens_by_slot: dict[str, set[int]] = defaultdict(set)
    rows = list(m.iter_rows())
    for row in rows:
        gen = int(row.data_id.rsplit("-", 1)[1])
        slot = row.asset_id.split("-")[0]
        gens_by_slot[slot].add(gen)
        assert (row.state, row.size, row.last_seen_run is not None) == ("ok", 1000 + gen, True)
        assert row.path == f"{slot[1:]}/{int(row.asset_id.split('-')[1])}-{gen % 2}.jpg"
        tags, data_tags = m.tags(row.asset_id)
        assert (tags, data_tags) == (("g" + str(gen), "train"), ("raw",))
        assert row.tags_digest == tags_digest(tags, data_tags)
        expected = [annotation(row.asset_id, i) for i in range(gen % 3 + 1)]
        assert m.annotations(row.asset_id) == expected
        assert row.annotations_digest == annotations_digest(expected)
        shapes = conn.execute("SELECT count(*) FROM shapes WHERE asset_id = ?", (row.asset_id,))
        assert shapes.fetchone()[0] == 5 * len(expected)
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        counts[row.asset_id.split("-")[0]] += 1
    for slot, gens in gens_by_slot.items():
        assert len(gens) == 1, f"slot {slot} mixes batches {sorted(gens)}: a half-applied batch"
        assert counts[slot] == BATCH
    # What the child reported as committed survived the kill.
    for gen in committed:
        assert max(gens_by_slot[f"s{gen % SLOTS}"]) >= gen
    return max((max(g) for g in gens_by_slot.values()), default=-1)


@pytest.mark.slow
def test_sigkill_while_applying_never_leaves_a_half_applied_batch(tmp_path: Path) -> None:
    rnd = random.Random(1234)
    dest = tmp_path / "dest"
    gen = 0
    killed_inside_apply = 0
    kills = 0
    # At least 6 kills, and more (bounded) until 3 of them landed inside a transaction.
    while kills < 6 or (killed_inside_apply < 3 and kills < 30):
        kills += 1
        committed, inside = run_child_until_killed(dest, gen, rnd)
        killed_inside_apply += inside
        with Manifest.open(dest) as m:
            newest = check_whole(m, committed)
            assert newest >= max(committed)
            last = m.last_run()
            assert last is not None
            assert last.outcome is None  # killed: it never finished
        gen = newest + 1
    # The child spends most of its time in apply, so kills do land inside transactions.
    assert killed_inside_apply >= 3
    with Manifest.open(dest) as m:
        assert m.count_assets() == SLOTS * BATCH
        run = m.begin_run("dv", "http://127.0.0.1", {})
        runs = m._connection().execute("SELECT outcome FROM runs ORDER BY run_id").fetchall()
        assert runs == [("unfinished",)] * kills + [(None,)]
        m.finish_run(run, "ok", {})
