"""A prefetcher refused at its opening leaves the disk as it found it: nothing is created
before the platform has accepted the token, found the version and the filter's tags."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.emulator import Emulator
from engine.errors import AuthError, UsageError
from engine.prefetch import Prefetcher
from tests.prefetch.helpers import settings_for


@pytest.mark.parametrize("budget", [None, 10_000_000], ids=["shared", "budget"])
async def test_a_refused_prefetcher_creates_nothing(tmp_path: Path, budget: int | None) -> None:
    async with Emulator(assets=4, seed=101) as emu:
        with pytest.raises(AuthError):
            async with Prefetcher(
                settings_for(emu, tmp_path / "a", token="wrong"), max_bytes=budget
            ):
                pass
        with pytest.raises(UsageError, match="not found"):
            async with Prefetcher(
                settings_for(emu, tmp_path / "b", dataset_version="0" * 32), max_bytes=budget
            ):
                pass
        with pytest.raises(UsageError, match="unknown asset tag"):
            async with Prefetcher(
                settings_for(emu, tmp_path / "c", tags=("nope",)), max_bytes=budget
            ):
                pass
        assert list(tmp_path.iterdir()) == []
        # The same settings with a right token open, and create DEST then.
        async with Prefetcher(settings_for(emu, tmp_path / "a"), max_bytes=budget) as prefetcher:
            items = [item async for item in prefetcher]
        assert len(items) == 4
        assert (tmp_path / "a" / ".assetsync" / "manifest.sqlite").is_file()


async def test_a_dest_under_a_regular_file_is_refused(tmp_path: Path) -> None:
    regular = tmp_path / "file"
    regular.write_text("keep")
    async with Emulator(assets=2, seed=102) as emu:
        with pytest.raises(UsageError, match="is not a directory"):
            async with Prefetcher(settings_for(emu, regular / "d")):
                pass
    assert regular.read_text() == "keep"
