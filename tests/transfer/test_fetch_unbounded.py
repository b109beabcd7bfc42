"""Storage bodies without ``Content-Length`` (chunked transfer-encoding), against the emulator.

With ``chunked`` and ``ignore_range`` the emulator answers 200 with a body of unannounced
length: the core reads it to its end, hashing as it goes, and can never resume it (a cut body
starts over from zero, without ``Range``). With ``chunked`` alone the 206 answers still carry
``Content-Range``, so ranged and segmented transfers go on as usual, reading chunk by chunk.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.emulator import FaultRule

from .conftest import LARGE, MEDIUM, SMALL, KiB, harness, pick, settle

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("kind", [LARGE, MEDIUM, SMALL])
async def test_a_body_of_unannounced_length_is_read_to_its_end(tmp_path: Path, kind: str) -> None:
    async with harness(tmp_path) as h:
        asset = pick(h, kind)
        url = await h.presign(asset.data_id)
        h.emu.faults.add(FaultRule(target="storage", kind="chunked"))
        ignored = h.emu.faults.add(FaultRule(target="storage", kind="ignore_range"))
        h.emu.counters.reset()
        result = await h.fetch(h.transferer(), asset, url=url)
        h.check(result, asset)  # no partial left: nothing of it was kept for a resume
        assert result.etag == asset.etag and not result.segmented and not result.resumed
        assert ignored.hits == 1
        # One request, one 200, each byte once.
        assert dict(h.emu.counters.storage_statuses) == {200: 1}
        assert result.bytes_downloaded == asset.size
        await settle(h.emu)
        assert h.emu.counters.storage_bytes_for(asset.data_id) == asset.size
        assert sum(e.delta for e in h.events if e.kind == "bytes") == asset.size


@pytest.mark.parametrize("kind", [LARGE, MEDIUM])
async def test_a_cut_body_of_unannounced_length_starts_over_without_range(
    tmp_path: Path, kind: str
) -> None:
    async with harness(tmp_path) as h:
        asset = pick(h, kind)
        url = await h.presign(asset.data_id)
        h.emu.faults.add(FaultRule(target="storage", kind="chunked"))
        ignored = h.emu.faults.add(FaultRule(target="storage", kind="ignore_range"))
        drop = h.emu.faults.add(
            FaultRule(target="storage", kind="drop", after_bytes=100 * KiB, count=1)
        )
        h.emu.counters.reset()
        result = await h.fetch(h.transferer(), asset, url=url)
        h.check(result, asset)
        assert drop.hits == 1 and result.retries == 1 and not result.resumed
        # The retry asked for the whole object (no Range: ignore_range had nothing to ignore).
        assert ignored.hits == 1
        assert dict(h.emu.counters.storage_statuses) == {200: 2}
        assert result.bytes_downloaded == 100 * KiB + asset.size
        await settle(h.emu)
        assert h.emu.counters.storage_bytes_for(asset.data_id) == 100 * KiB + asset.size


@pytest.mark.parametrize("kind", [LARGE, MEDIUM])
async def test_ranged_answers_without_content_length(tmp_path: Path, kind: str) -> None:
    async with harness(tmp_path) as h:
        asset = pick(h, kind)
        url = await h.presign(asset.data_id)
        rule = h.emu.faults.add(FaultRule(target="storage", kind="chunked"))
        h.emu.counters.reset()
        result = await h.fetch(h.transferer(), asset, url=url)
        h.check(result, asset)
        assert result.segmented == (kind == LARGE)
        assert rule.hits == h.emu.counters.storage_requests > 1
        assert set(h.emu.counters.storage_statuses) == {206}
        assert result.bytes_downloaded == asset.size
        await settle(h.emu)
        assert h.emu.counters.storage_bytes_for(asset.data_id) == asset.size


@pytest.mark.parametrize("kind", [LARGE, MEDIUM])
async def test_a_cut_ranged_answer_without_content_length_resumes(
    tmp_path: Path, kind: str
) -> None:
    async with harness(tmp_path) as h:
        asset = pick(h, kind)
        url = await h.presign(asset.data_id)
        h.emu.faults.add(FaultRule(target="storage", kind="chunked"))
        drop = h.emu.faults.add(
            FaultRule(target="storage", kind="drop", after_bytes=100 * KiB, count=1)
        )
        h.emu.counters.reset()
        result = await h.fetch(h.transferer(), asset, url=url)
        h.check(result, asset)
        assert drop.hits == 1 and result.retries == 1 and result.restarts == 0
        # The bytes before the cut were kept: each byte crossed the wire once.
        assert result.bytes_downloaded == asset.size
        await settle(h.emu)
        assert h.emu.counters.storage_bytes_for(asset.data_id) == asset.size


async def test_a_cut_body_of_unannounced_length_is_counted_once_in_progress(
    tmp_path: Path,
) -> None:
    async with harness(tmp_path) as h:
        asset = pick(h, MEDIUM)
        url = await h.presign(asset.data_id)
        h.emu.faults.add(FaultRule(target="storage", kind="chunked"))
        h.emu.faults.add(FaultRule(target="storage", kind="ignore_range"))
        h.emu.faults.add(FaultRule(target="storage", kind="drop", after_bytes=100 * KiB, count=1))
        result = await h.fetch(h.transferer(), asset, url=url)
        h.check(result, asset)
        # What a progress bar shows: new bytes, minus what a restart threw away.
        live = sum(e.delta for e in h.events if e.kind in ("bytes", "restart"))
        assert live == asset.size
