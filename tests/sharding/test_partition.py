"""The machine shard: the partition of a version by asset id, and ``--shard`` / ``auto``."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import UsageError
from engine.sharding import (
    COUNT_VARIABLE,
    MAX_SHARDS,
    AssetShard,
    _jump,
    detect_shard,
    resolve_shard,
    shard_of,
)

ids = st.text(st.characters(codec="utf-8"), max_size=40)  # lone surrogates included
counts = st.integers(1, 300)


# --- the partition --------------------------------------------------------------------------


@given(asset_id=ids, count=counts)
def test_every_id_is_in_exactly_one_shard(asset_id, count):
    owners = [k for k in range(count) if AssetShard(k, count).holds(asset_id)]
    assert owners == [shard_of(asset_id, count)]


@settings(max_examples=40)
@given(seed=st.integers(0, 2**32), count=st.integers(2, 64), kind=st.sampled_from(["uuid", "seq"]))
def test_random_ids_spread_evenly(seed, count, kind):
    rng = random.Random(seed)
    total = 20_000
    if kind == "uuid":  # the platform's ids
        listing = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(total)]
    else:  # ids that differ in one place only
        start = rng.randrange(10**9)
        listing = [f"asset-{start + i:012d}" for i in range(total)]
    sizes = Counter(shard_of(asset_id, count) for asset_id in listing)
    expected = total / count
    sigma = (expected * (1 - 1 / count)) ** 0.5
    # Six standard deviations of a binomial: a fair partition exceeds it about once in 10^8.
    assert all(abs(sizes[k] - expected) <= 6 * sigma for k in range(count)), sizes


@given(asset_id=ids, small=st.integers(1, 200), grow=st.integers(1, 200))
def test_more_shards_only_move_assets_to_the_new_ones(asset_id, small, grow):
    before, after = shard_of(asset_id, small), shard_of(asset_id, small + grow)
    assert after == before or after >= small


def test_a_growth_moves_only_the_new_shards_share():
    rng = random.Random(7)
    listing = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(20_000)]
    moved = sum(shard_of(a, 8) != shard_of(a, 10) for a in listing)
    # Jump hashing moves 2/10 of the assets from 8 to 10 shards; `hash % N` would move 80%.
    assert abs(moved / len(listing) - 0.2) < 0.02


def test_the_jump_hash_is_the_papers():
    # Published vectors of Lamping & Veach's JumpConsistentHash (Go's and Rust's ports test the
    # same numbers): a port that rounded differently would split a version differently.
    golden100 = [0, 55, 62, 8, 45, 59, 86, 97, 82, 59, 73, 37, 17, 56, 86, 21, 90, 37, 38, 83]
    assert [_jump(key, 100) for key in range(20)] == golden100
    assert _jump(10863919174838991, 11) == 6
    assert _jump(2016238256797177309, 11) == 3
    assert _jump(1673758223894951030, 11) == 5
    assert [_jump(2, 100001), _jump(2201, 100001), _jump(2202, 100001)] == [80343, 22152, 15018]
    assert [_jump(0xDEADBEEF, n) for n in range(1, 20)] == [
        0, 1, 2, 3, 3, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 16, 16, 16
    ]  # fmt: skip


# Pinned: shard numbers written down once; if they change, machines of one job running two
# versions of assetsync would split a version two ways (an asset fetched twice or never).
PINNED = {
    "00000000-0000-4000-8000-000000000000": {2: 1, 3: 1, 8: 6, 1000: 997},
    "4b8e1a52-3c2f-4d7e-9a61-0c5d2f8e7b13": {2: 1, 3: 2, 8: 6, 1000: 872},
    "asset-1": {2: 1, 3: 2, 8: 7, 1000: 501},
    "é/日本.jpg": {2: 0, 3: 0, 8: 7, 1000: 145},
}


def test_shards_are_pinned():
    assert {a: {n: shard_of(a, n) for n in row} for a, row in PINNED.items()} == PINNED


def test_other_processes_agree_whatever_their_hash_seed():
    rng = random.Random(3)
    listing = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(500)]
    here = [shard_of(a, 7) for a in listing]
    code = (
        "import json, sys\nfrom engine.sharding import shard_of\n"
        "print(json.dumps([shard_of(a, 7) for a in json.loads(sys.stdin.read())]))"
    )
    for hash_seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(listing),
            capture_output=True,
            text=True,
            env=env,
            check=True,
            timeout=60,
        )
        assert json.loads(done.stdout) == here


def test_one_shard_is_the_whole_version():
    assert AssetShard().is_whole and AssetShard(0, 1).holds("anything")
    assert shard_of("anything", 1) == 0


def test_the_module_is_pure():
    code = (
        "import sys, engine.sharding\n"
        "print(sorted(m for m in ('sqlite3', 'asyncio', 'aiohttp', 'socket') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


# --- K/N --------------------------------------------------------------------------------------


@given(count=st.integers(1, MAX_SHARDS), data=st.data())
def test_k_of_n_round_trips(count, data):
    index = data.draw(st.integers(0, count - 1))
    shard = AssetShard.parse(f" {index}/{count} ")
    assert (shard.index, shard.count, str(shard)) == (index, count, f"{index}/{count}")
    assert resolve_shard(f"{index}/{count}", {}).source == "given"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("4/4", "shard 4/4: K counts from 0 and must be below N (0 to 3)"),
        ("0/0", "shard 0/0: N must be between 1 and 1,000,000"),
        ("0/1000001", "shard 0/1000001: N must be between 1 and 1,000,000"),
        ("", "shard '': expected K/N with 0 <= K < N (e.g. 0/4), or auto"),
        ("-1/4", "shard '-1/4': expected K/N with 0 <= K < N (e.g. 0/4), or auto"),
        ("1-4", "shard '1-4': expected K/N"),
        ("1/4/2", "shard '1/4/2': expected K/N"),
        ("\u0661/\u0664", "expected K/N"),  # Arabic-Indic digits, which int() would accept
        ("1_0/20", "expected K/N"),  # underscores, which int() would accept
        ("one/four", "expected K/N"),
    ],
)
def test_bad_k_of_n_is_one_line_and_exit_2(text, message):
    with pytest.raises(UsageError) as caught:
        resolve_shard(text, {})
    assert message in str(caught.value)
    assert "\n" not in str(caught.value) and caught.value.exit_code == 2


# --- auto -------------------------------------------------------------------------------------


def slurm(task, count, low=None, high=None, step=None):
    env = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": str(count)}
    for name, value in (("MIN", low), ("MAX", high), ("STEP", step)):
        if value is not None:
            env[f"SLURM_ARRAY_TASK_{name}"] = str(value)
    return env


@pytest.mark.parametrize(
    ("environ", "expected", "source"),
    [
        ({"JOB_COMPLETION_INDEX": "0", COUNT_VARIABLE: "4"}, (0, 4), "kubernetes"),
        ({"JOB_COMPLETION_INDEX": "3", COUNT_VARIABLE: " 4\n"}, (3, 4), "kubernetes"),
        ({"JOB_COMPLETION_INDEX": "0", COUNT_VARIABLE: "1"}, (0, 1), "kubernetes"),
        (slurm(0, 8, 0, 7, 1), (0, 8), "slurm"),  # --array=0-7
        (slurm(7, 8, 0, 7, 1), (7, 8), "slurm"),
        (slurm(1, 8, 1, 8, 1), (0, 8), "slurm"),  # --array=1-8
        (slurm(8, 8, 1, 8, 1), (7, 8), "slurm"),
        (slurm(5, 4, 1, 7, 2), (2, 4), "slurm"),  # --array=1-7:2 (1, 3, 5, 7)
        (slurm(14, 8, 0, 14, 2), (7, 8), "slurm"),  # --array=0-14:2
        (slurm(10, 3, 10, 12, 1), (0, 3), "slurm"),  # --array=10-12%1 (throttled)
        (slurm(3, 4), (3, 4), "slurm"),  # no MIN/MAX/STEP: from 0 by 1
        (slurm(0, 1, 0, 0, 1), (0, 1), "slurm"),  # --array=0
        (slurm(6, 1, 6, 6, 1), (0, 1), "slurm"),  # --array=6
        # Unrelated variables of either world change nothing.
        ({**slurm(2, 4, 0, 3, 1), "SLURM_JOB_ID": "9", "KUBERNETES_SERVICE_HOST": "10.0.0.1"},
         (2, 4), "slurm"),
    ],
)  # fmt: skip
def test_auto_detects(environ, expected, source):
    found = resolve_shard("auto", environ)
    assert (found.shard.index, found.shard.count) == expected
    assert found.source == source
    named = "JOB_COMPLETION_INDEX" if source == "kubernetes" else "SLURM_ARRAY_TASK_ID"
    assert named in found.describe() and found.describe().startswith(f"shard {found.shard} (")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "no shard in the environment"),
        ({"PATH": "/bin"}, "no shard in the environment"),
        ({COUNT_VARIABLE: "4"}, "is the Job's completionMode Indexed?"),
        ({"JOB_COMPLETION_INDEX": "2"}, f"{COUNT_VARIABLE} is not set"),
        ({"JOB_COMPLETION_INDEX": "4", COUNT_VARIABLE: "4"}, "not between 0 and 3"),
        ({"JOB_COMPLETION_INDEX": "-1", COUNT_VARIABLE: "4"}, "not between 0 and 3"),
        ({"JOB_COMPLETION_INDEX": "1", COUNT_VARIABLE: "0"}, f"{COUNT_VARIABLE}=0 must be"),
        ({"JOB_COMPLETION_INDEX": "x", COUNT_VARIABLE: "4"}, "JOB_COMPLETION_INDEX='x' is not"),
        ({"JOB_COMPLETION_INDEX": "1", COUNT_VARIABLE: "four"}, "'four' is not a whole number"),
        ({"JOB_COMPLETION_INDEX": "", COUNT_VARIABLE: "4"}, "is not a whole number"),
        ({"JOB_COMPLETION_INDEX": "1", COUNT_VARIABLE: "2000000"}, "N must be between"),
        ({**slurm(0, 2), "JOB_COMPLETION_INDEX": "0", COUNT_VARIABLE: "2"}, "both"),
        ({"SLURM_ARRAY_TASK_ID": "3"}, "SLURM_ARRAY_TASK_COUNT is not set"),
        (slurm(3, 4, 1, 7, 1), "not one range"),  # --array=1,3,5,7
        (slurm(20, 5, 0, 20, 4), "not one range"),  # --array=0-15:4,20
        (slurm(2, 3, 0, 2, 0), "not one range"),
        (slurm(4, 4, 1, 7, 2), "SLURM_ARRAY_TASK_ID=4 is not in the array 1-7:2"),
        (slurm(9, 4, 1, 7, 2), "SLURM_ARRAY_TASK_ID=9 is not in the array"),
        (slurm(0, 0, 0, 0, 1), "SLURM_ARRAY_TASK_COUNT=0 is not a number of tasks"),
        (slurm("1.5", 4), "SLURM_ARRAY_TASK_ID='1.5' is not a whole number"),
    ],
)
def test_auto_refuses_with_one_line(environ, message):
    with pytest.raises(UsageError) as caught:
        detect_shard(environ)
    text = str(caught.value)
    assert message in text, text
    assert "\n" not in text and caught.value.exit_code == 2


def test_a_long_bad_value_is_cut_in_the_message():
    with pytest.raises(UsageError) as caught:
        detect_shard({"JOB_COMPLETION_INDEX": "9" * 30 + "x" * 100, COUNT_VARIABLE: "4"})
    assert len(str(caught.value)) < 120


@settings(max_examples=200)
@given(
    low=st.integers(0, 10_000),
    step=st.integers(1, 50),
    count=st.integers(1, 500),
    data=st.data(),
)
def test_every_task_of_a_slurm_range_gets_its_own_shard(low, step, count, data):
    high = low + step * (count - 1)
    k = data.draw(st.integers(0, count - 1))
    found = detect_shard(slurm(low + k * step, count, low, high, step))
    assert (found.shard.index, found.shard.count) == (k, count)
