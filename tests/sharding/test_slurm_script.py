"""The Slurm array script with the real ``assetsync`` against the emulator: every array task of
both layouts mirrors its shard, and the tasks together mirror the whole version.

(tests/sharding/test_deploy_configs.py checks the script's arguments with a stand-in binary; a
stand-in cannot notice that a variable the script reads is also one of assetsync's settings.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.emulator import Emulator
from engine.sharding import shard_of
from engine.state_folder import StateFolder
from tests.command import command_env

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "config" / "slurm" / "mirror-array.sbatch"


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(assets=24, seed=61, nasty_filenames=False).in_thread() as running:
        yield running


def _task(emu: Emulator, tmp_path: Path, task: int, **extra: str) -> dict[str, object]:
    token = tmp_path / "token"
    token.write_text(emu.token + "\n")
    token.chmod(0o600)
    env = command_env(
        None,
        HOME=str(tmp_path),
        USER="someone",
        ASSETSYNC_BIN=str(Path(sys.executable).parent / "assetsync"),
        ASSETSYNC_TOKEN_FILE=str(token),
        ASSETSYNC_API_URL=emu.api_url,
        ASSETSYNC_DATASET_VERSION=emu.dataset_version_id,
        ASSETSYNC_LOCAL_ROOT=str(tmp_path / "scratch"),
        SLURM_ARRAY_TASK_ID=str(task),
        SLURM_ARRAY_TASK_COUNT="2",
        SLURM_ARRAY_TASK_MIN="0",
        SLURM_ARRAY_TASK_MAX="1",
        SLURM_ARRAY_TASK_STEP="1",
        **extra,
    )
    env["PATH"] = os.environ["PATH"]
    done = subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert isinstance(summary, dict)
    return summary


@pytest.mark.parametrize("layout", ["local", "shared"])
def test_the_array_mirrors_the_version_in_both_layouts(
    emu: Emulator, tmp_path: Path, layout: str
) -> None:
    shared = tmp_path / "lustre" / "mirror"
    extra = {"ASSETSYNC_SHARD_DESTS": layout}
    if layout == "shared":
        extra["ASSETSYNC_DEST"] = str(shared)
    downloaded = 0
    for task in range(2):
        summary = _task(emu, tmp_path, task, **extra)
        assert summary["shard"] == {
            "index": task,
            "count": 2,
            "source": "slurm",
            "detail": f"Slurm array: SLURM_ARRAY_TASK_ID={task} of 0-1:1, 2 tasks",
        }
        downloaded += int(summary["downloaded"])  # type: ignore[call-overload]
    ids = list(emu.dataset.asset_ids())
    assert downloaded == len(ids)
    if layout == "shared":
        assert [str(f.shard) for f in StateFolder(shared).manifests()] == ["0/2", "1/2"]
    else:
        for k in range(2):
            dest = tmp_path / "scratch" / emu.dataset_version_id / f"shard-{k}"
            assert [str(f.shard) for f in StateFolder(dest).manifests()] == [f"{k}/2"]
    assert all(shard_of(a, 2) in (0, 1) for a in ids)
