"""What a prefetcher's run records as its outcome when the consumer stops early."""

from __future__ import annotations

from pathlib import Path

from engine.emulator import Emulator
from engine.manifest import Manifest
from engine.prefetch import Prefetcher
from tests.prefetch.helpers import settings_for


def _outcomes(dest: Path) -> list[str | None]:
    with Manifest.open(dest) as manifest:
        rows = manifest._connection().execute("SELECT outcome FROM runs ORDER BY run_id")
        return [row[0] for row in rows]


def test_a_break_out_of_the_loop_is_not_a_failure(tmp_path: Path):
    with Emulator(assets=30, seed=81).in_thread() as emu:
        dest = tmp_path / "d"
        settings = settings_for(emu, dest)
        for item in Prefetcher(settings, window=4):  # one epoch, its own session
            if item.index == 2:
                break
        with Prefetcher(settings, window=4) as prefetcher:  # an open session
            for item in prefetcher:
                if item.index == 2:
                    break
        assert _outcomes(dest) == ["ok", "ok"]
