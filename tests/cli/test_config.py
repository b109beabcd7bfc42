"""The shipped cron example, as cron would run it, with the token in the environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.emulator import Emulator
from tests.cli.helpers import ASSETSYNC, env_for, run_pipe

pytestmark = pytest.mark.slow

CRON_CONFIG = Path(__file__).parent.parent.parent / "config" / "cron-sync.toml"


def test_cron_sync_config_with_a_token_from_the_environment(tmp_path: Path) -> None:
    with Emulator(assets=20, seed=111, large_share=0.0).in_thread() as emu:
        args = [
            *ASSETSYNC,
            "mirror",
            "--config",
            str(CRON_CONFIG),
            "--api-url",
            emu.api_url,
            "--dataset-version",
            emu.dataset_version_id,
            "--dest",
            str(tmp_path / "d"),
            "--json",
            "-q",
        ]
        done = run_pipe(args, env_for(emu.token))
        train = [a for a in emu.dataset.asset_ids() if "train" in emu.dataset.expected(a).tags]
    assert done.code == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["outcome"] == "ok"
    assert summary["listed"] == len(train) > 0  # the file's tags = ["train"] applied
