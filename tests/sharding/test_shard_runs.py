"""Shards as real ``assetsync mirror --shard K/N`` processes against one emulator.

Each test runs the shards at the same time, into a DEST each or into one shared DEST, and checks
what a user would: the union is what one machine mirrors, storage sent every object once, a
shard killed and restarted fetches only what its own part still lacks, and a change of N is
refused, then adopted without a download.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.emulator import Emulator, FaultRule
from engine.manifest import Manifest
from engine.sharding import shard_of
from engine.state_folder import StateFolder
from tests.command import ASSETSYNC, command_env, mirror_command
from tests.mirror.helpers import files_under, sha256_of

pytestmark = pytest.mark.slow

COUNT = 3
_VOLATILE = ("fetched_at",)  # when a file came differs between two mirrors, nothing else may


@pytest.fixture
def emu() -> Iterator[Emulator]:
    emulator = Emulator(assets=60, seed=14, nasty_filenames=False)
    with emulator.in_thread() as running:
        yield running


def _args(emu: Emulator, dest: Path, *more: str) -> list[str]:
    return mirror_command(emu, dest, "-q", "--json", "--no-fsync", *more)


def _start(args: list[str], **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        args,
        env=env or None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> tuple[int, dict[str, Any], str]:
    out, err = proc.communicate(timeout=180)
    summary = json.loads(out) if out.strip() else {}
    return proc.returncode, summary, err


def _run_shards(emu: Emulator, dests: list[Path], *more: str) -> list[dict[str, Any]]:
    """All COUNT shards at once; each its DEST (``dests[k]``, or one DEST for all)."""
    env = command_env(emu.token)
    procs = [
        subprocess.Popen(
            _args(emu, dests[k % len(dests)], "--shard", f"{k}/{COUNT}", *more),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(COUNT)
    ]
    summaries = []
    for k, proc in enumerate(procs):
        code, summary, err = _finish(proc)
        assert code == 0, (k, err[-2000:])
        assert f"shard {k}/{COUNT} (given as {k}/{COUNT})" in err
        summaries.append(summary)
    return summaries


def _on_dest(*args: str) -> subprocess.CompletedProcess[str]:
    """An ``assetsync`` command that reads DEST only (no token, no platform)."""
    return subprocess.run(
        [*ASSETSYNC, *args], env=command_env(None), capture_output=True, text=True, timeout=60
    )


def _export(dest: Path) -> dict[str, dict[str, Any]]:
    """``assetsync manifest export`` of DEST (all its manifests), by asset id."""
    done = _on_dest("manifest", "export", "--dest", str(dest))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    ids = [row["asset_id"] for row in rows]
    assert ids == sorted(ids), "an export of shards comes merged in asset id order"
    assert len(set(ids)) == len(ids), "an asset is in one shard's manifest only"
    return {row["asset_id"]: {k: v for k, v in row.items() if k not in _VOLATILE} for row in rows}


def _status(dest: Path) -> dict[str, Any]:
    done = _on_dest("status", "--dest", str(dest), "--json")
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert isinstance(payload, dict)
    return payload


def _single_machine(emu: Emulator, dest: Path) -> dict[str, dict[str, Any]]:
    done = subprocess.run(
        _args(emu, dest), env=command_env(emu.token), capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    return _export(dest)


def _assert_each_object_sent_once(emu: Emulator) -> None:
    for asset_id in emu.dataset.asset_ids():
        expected = emu.dataset.expected(asset_id)
        assert emu.counters.storage_bytes_for(expected.data_id) == expected.size, asset_id


def _assert_files_match(dest: Path, rows: dict[str, dict[str, Any]]) -> None:
    for asset_id, row in rows.items():
        assert row["state"] == "ok", (asset_id, row["error"])
        assert sha256_of(dest / row["path"]) == row["sha256"]
    assert files_under(dest) == {row["path"] for row in rows.values()}


def _manifest_ids(path: Path, dest: Path) -> set[str]:
    with Manifest.open(dest, create=False, read_only=True, path=path) as manifest:
        return {row.asset_id for row in manifest.iter_rows()}


def test_shards_into_a_dest_each_make_one_mirror_fetching_every_object_once(
    emu: Emulator, tmp_path: Path
) -> None:
    dests = [tmp_path / f"node{k}" for k in range(COUNT)]
    summaries = _run_shards(emu, dests)
    _assert_each_object_sent_once(emu)

    union: dict[str, dict[str, Any]] = {}
    for k, dest in enumerate(dests):
        rows = _export(dest)
        assert all(shard_of(asset_id, COUNT) == k for asset_id in rows)
        assert summaries[k]["downloaded"] == len(rows) > 0
        assert summaries[k]["shard"]["index"] == k
        assert summaries[k]["warnings"] == []
        _assert_files_match(dest, rows)
        assert not set(union) & set(rows)
        union.update(rows)

    emu.counters.reset()
    single = _single_machine(emu, tmp_path / "single")
    assert union == single
    # status names a node's shard; a DEST mirrored whole has no shards to list.
    assert [part["shard"] for part in _status(dests[1])["shards"]] == [f"1/{COUNT}"]
    assert "shards" not in _status(tmp_path / "single")


def test_shards_into_one_shared_dest_make_one_mirror(emu: Emulator, tmp_path: Path) -> None:
    dest = tmp_path / "shared"
    summaries = _run_shards(emu, [dest])
    _assert_each_object_sent_once(emu)
    # Names could collide between shards: a run that sees other shards' manifests says so. The
    # last to finish sees them all (every other shard opened before it ended); one that ends
    # before another has even started cannot know (a race under load the suite met once).
    warned = [any("use --layout id" in w for w in summary["warnings"]) for summary in summaries]
    assert any(warned), summaries

    state = StateFolder(dest)
    found = state.manifests()
    assert [str(files.shard) for files in found] == [f"{k}/{COUNT}" for k in range(COUNT)]
    for files in found:
        assert files.manifest.name == f"shard-{files.shard.index}-of-{COUNT}.sqlite"
        ids = _manifest_ids(files.manifest, dest)
        assert ids and all(files.shard.holds(asset_id) for asset_id in ids)
    assert not state.manifest.exists()

    rows = _export(dest)
    _assert_files_match(dest, rows)
    status = _status(dest)
    assert status["assets"] == len(rows) == len(list(emu.dataset.asset_ids()))
    assert [part["shard"] for part in status["shards"]] == [f"{k}/{COUNT}" for k in range(COUNT)]
    assert sum(part["assets"] for part in status["shards"]) == len(rows)

    # verify reads every shard's manifest: one damaged file of shard 2 is found and marked.
    victim = next(a for a, row in rows.items() if shard_of(a, COUNT) == 2)
    (dest / rows[victim]["path"]).write_bytes(b"damaged")
    verified = _on_dest("verify", "--dest", str(dest), "--json")
    assert verified.returncode == 1, verified.stderr
    report = json.loads(verified.stdout)
    assert report["checked"] == len(rows)
    assert [p["asset_id"] for p in report["details"]] == [victim]

    emu.counters.reset()
    single = _single_machine(emu, tmp_path / "single")
    rows = _export(dest)
    rows[victim]["state"], rows[victim]["error"] = "ok", None
    assert rows == single


def _wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_shard_killed_and_restarted_completes_only_its_own_part(
    emu: Emulator, tmp_path: Path
) -> None:
    dest = tmp_path / "shared"
    ids = list(emu.dataset.asset_ids())
    mine = [a for a in ids if shard_of(a, 2) == 0]
    theirs = [a for a in ids if shard_of(a, 2) == 1]
    my_bytes = sum(emu.dataset.expected(a).size for a in mine)
    env = command_env(emu.token)
    other = _start(_args(emu, dest, "--shard", "1/2"), **env)
    code, _, err = _finish(other)
    assert code == 0, err

    emu.counters.reset()
    emu.faults.add(FaultRule(target="storage", kind="throttle", bytes_per_second=400_000))
    victim = _start(_args(emu, dest, "--shard", "0/2", "--concurrency", "2"), **env)
    try:
        _wait_for(lambda: emu.counters.storage_bytes > my_bytes * 0.4)
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    files = StateFolder(dest).shard_files(StateFolder(dest).manifests()[0].shard)
    assert str(files.shard) == "0/2"
    committed = _manifest_ids(files.manifest, dest)
    assert 0 < len(committed) < len(mine)

    emu.faults.clear()
    time.sleep(0.5)  # responses to the dead client drain into the kernel
    emu.counters.reset()
    code, summary, err = _finish(_start(_args(emu, dest, "--shard", "0/2"), **env))
    assert code == 0, err
    # A file the killed run put in place without its row is adopted from the placed journal
    # when the next run opens (engine.pipeline.placed_journal): not downloaded, not skipped, but
    # updated (its tags and annotations are recorded by this run).
    assert summary["downloaded"] + summary["skipped"] + summary["updated"] == len(mine)
    assert summary["skipped"] >= len(committed)
    for asset_id in theirs:  # the other shard's part is not touched
        assert emu.counters.storage_bytes_for(emu.dataset.expected(asset_id).data_id) == 0
    for asset_id in committed:
        assert emu.counters.storage_bytes_for(emu.dataset.expected(asset_id).data_id) == 0
    assert emu.counters.storage_bytes <= my_bytes

    rows = _export(dest)
    _assert_files_match(dest, rows)
    assert set(rows) == set(ids)


def test_delete_acts_on_the_shards_own_assets_only(emu: Emulator, tmp_path: Path) -> None:
    dest = tmp_path / "shared"
    env = command_env(emu.token)
    for k in range(2):
        code, _, err = _finish(_start(_args(emu, dest, "--shard", f"{k}/2"), **env))
        assert code == 0, err
    rows = _export(dest)
    gone = next(a for a in rows if shard_of(a, 2) == 1)
    emu.delete_assets([gone])

    code, summary, err = _finish(_start(_args(emu, dest, "--shard", "0/2", "--delete"), **env))
    assert code == 0, err
    assert summary["deleted"] == 0
    assert (dest / rows[gone]["path"]).exists(), "shard 0 deleted a file of shard 1"

    code, summary, err = _finish(_start(_args(emu, dest, "--shard", "1/2", "--delete"), **env))
    assert code == 0, err
    assert summary["deleted"] == 1
    assert not (dest / rows[gone]["path"]).exists()
    assert set(_export(dest)) == set(rows) - {gone}


def test_a_change_of_n_is_refused_then_reshard_adopts_without_a_download(
    emu: Emulator, tmp_path: Path
) -> None:
    dest = tmp_path / "shared"
    env = command_env(emu.token)
    for k in range(2):
        code, _, err = _finish(_start(_args(emu, dest, "--shard", f"{k}/2"), **env))
        assert code == 0, err
    before = _export(dest)

    for more in (["--shard", "0/3"], []):
        code, summary, err = _finish(_start(_args(emu, dest, *more), **env))
        assert code == 2, err
        assert "shards of N=2" in err and "--reshard" in err
    assert _export(dest) == before  # nothing on disk changed

    emu.counters.reset()
    procs = [_start(_args(emu, dest, "--shard", f"{k}/3", "--reshard"), **env) for k in range(3)]
    for proc in procs:
        code, summary, err = _finish(proc)
        assert code == 0, err
        assert summary["downloaded"] == 0
    assert emu.counters.storage_bytes == 0
    assert [str(f.shard) for f in StateFolder(dest).manifests()] == ["0/3", "1/3", "2/3"]
    assert _export(dest) == before

    # N=3 is now the DEST's count: a run of it needs no flag, N=2 is refused.
    code, summary, err = _finish(_start(_args(emu, dest, "--shard", "1/3"), **env))
    assert code == 0 and summary["skipped"] > 0, err
    code, _, err = _finish(_start(_args(emu, dest, "--shard", "1/2"), **env))
    assert code == 2 and "N=3" in err


@pytest.mark.parametrize(
    ("variables", "said"),
    [
        (
            {"JOB_COMPLETION_INDEX": "1", "ASSETSYNC_SHARD_COUNT": "2"},
            "shard 1/2 (Kubernetes Indexed Job: JOB_COMPLETION_INDEX=1, ASSETSYNC_SHARD_COUNT=2)",
        ),
        (
            {
                "SLURM_ARRAY_TASK_ID": "5",
                "SLURM_ARRAY_TASK_COUNT": "2",
                "SLURM_ARRAY_TASK_MIN": "4",
                "SLURM_ARRAY_TASK_MAX": "5",
                "SLURM_ARRAY_TASK_STEP": "1",
            },
            "shard 1/2 (Slurm array: SLURM_ARRAY_TASK_ID=5 of 4-5:1, 2 tasks)",
        ),
    ],
)
def test_auto_takes_the_orchestrators_shard_and_says_so(
    emu: Emulator, tmp_path: Path, variables: dict[str, str], said: str
) -> None:
    dest = tmp_path / "node"
    code, summary, err = _finish(
        _start(_args(emu, dest, "--shard", "auto"), **command_env(emu.token, **variables))
    )
    assert code == 0, err
    assert said in err
    assert summary["shard"]["index"] == 1 and summary["shard"]["count"] == 2
    rows = _export(dest)
    assert set(rows) == {a for a in emu.dataset.asset_ids() if shard_of(a, 2) == 1}


def test_auto_without_an_orchestrator_is_exit_2(emu: Emulator, tmp_path: Path) -> None:
    code, _, err = _finish(
        _start(_args(emu, tmp_path / "d", "--shard", "auto"), **command_env(emu.token))
    )
    assert code == 2
    assert "no shard in the environment" in err
    assert not (tmp_path / "d").exists()
