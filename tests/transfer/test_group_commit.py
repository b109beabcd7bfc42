"""Group commit: small files placed without fsync, made durable by ``sync_placed``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.transfer import Transferer

from .conftest import Harness, KiB, MiB, fast_options, harness, sha256_of

pytestmark = pytest.mark.anyio


def _group(h: Harness, **overrides: object) -> Transferer:
    options = fast_options(fsync=True, **overrides)
    return Transferer(h.session, options, h.state_dir, clock=h.emu.now, group_commit=True)


@pytest.mark.parametrize("barrier", ["files", "syncfs"])
async def test_small_files_await_the_barrier_and_large_ones_do_not(
    tmp_path: Path, barrier: str
) -> None:
    async with harness(tmp_path) as h:
        t = _group(h, barrier=barrier)
        small = h.assets(lambda a: a.size <= 64 * KiB)
        large = h.one(lambda a: a.size >= 3 * MiB)
        assert len(small) >= 3
        for asset in small:
            result = await h.fetch(t, asset, rel=f"sub/{asset.asset_id}.bin")
            h.check(result, asset)
            assert result.awaits_barrier
        assert t.awaiting_barrier == len(small)
        # Larger objects are synced before their rename: durable when fetch returns.
        result = await h.fetch(t, large)
        h.check(result, large)
        assert not result.awaits_barrier
        assert await t.sync_placed() == len(small)
        assert t.awaiting_barrier == 0
        assert await t.sync_placed() == 0  # nothing new: nothing to do
        for asset in small:
            assert sha256_of(h.dest / "sub" / f"{asset.asset_id}.bin") == asset.sha256
        t.close()


async def test_without_fsync_there_is_no_barrier(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        t = Transferer(
            h.session, fast_options(fsync=False), h.state_dir, clock=h.emu.now, group_commit=True
        )
        asset = h.one(lambda a: 0 < a.size <= 64 * KiB)
        result = await h.fetch(t, asset)
        h.check(result, asset)
        assert not result.awaits_barrier
        assert t.awaiting_barrier == 0
        assert await t.sync_placed() == 0
        t.close()


async def test_without_group_commit_every_file_is_durable_on_return(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        t = h.transferer(fast_options(fsync=True))
        for asset in h.assets(lambda a: a.size <= 64 * KiB)[:3]:
            result = await h.fetch(t, asset, rel=f"a/b/{asset.asset_id}.bin")
            h.check(result, asset)
            assert not result.awaits_barrier
        assert t.awaiting_barrier == 0
        assert await t.sync_placed() == 0
        t.close()


async def test_a_barrier_covers_what_was_placed_before_it_was_called(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        t = _group(h)
        small = h.assets(lambda a: a.size <= 64 * KiB)
        first, rest = small[:2], small[2:]
        for asset in first:
            await h.fetch(t, asset)
        barrier = asyncio.ensure_future(t.sync_placed())
        await asyncio.sleep(0)  # the barrier took its files; the next ones are the next's
        for asset in rest:
            await h.fetch(t, asset)
        assert await barrier == len(first)
        assert await t.sync_placed() == len(rest)
        t.close()


async def test_a_cancelled_barrier_loses_no_file(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        t = _group(h)
        small = h.assets(lambda a: a.size <= 64 * KiB)
        for asset in small[:2]:
            await h.fetch(t, asset)
        # Cancelled before it ran: its files stay for the next barrier.
        early = asyncio.ensure_future(t.sync_placed())
        early.cancel()
        with pytest.raises(asyncio.CancelledError):
            await early
        assert t.awaiting_barrier == 2
        # Cancelled while its worker thread runs: the thread finishes first, the files are
        # synced, and the next barrier has nothing left to do.
        running = asyncio.ensure_future(t.sync_placed())
        await asyncio.sleep(0)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert t.awaiting_barrier == 0
        assert await t.sync_placed() == 0
        t.close()
