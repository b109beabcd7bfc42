"""Every storage fault the emulator can inject, against single streams and segmented transfers."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from engine.emulator import FaultRule
from engine.errors import StallError, TransientTransferError
from engine.settings import RetryPolicy, Timeouts
from engine.transfer import ProgressEvent

from .conftest import LARGE, MEDIUM, KiB, MiB, fast_options, harness, pick, settle

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("body_path")]


# Many seeds: which offsets the drops hit decides how batches, leftovers and retries
# interleave (seeds 5 and 9 once exposed a mis-ordered count of written bytes).
@pytest.mark.parametrize(
    ("kind", "fault_seed"),
    [(LARGE, seed) for seed in range(1, 13)] + [(MEDIUM, seed) for seed in range(1, 5)],
)
async def test_drops_mid_body_at_random_offsets(tmp_path: Path, kind: str, fault_seed: int) -> None:
    async with harness(tmp_path, fault_seed=fault_seed) as h:
        t = h.transferer()
        asset = pick(h, kind)
        url = await h.presign(asset.data_id)
        rule = h.emu.faults.add(FaultRule(target="storage", kind="drop", after_bytes=None, count=5))
        result = await h.fetch(t, asset, url=url)
        h.check(result, asset)
        assert rule.hits == 5
        assert result.retries == 5 and not result.restarts
        # Each attempt carried on from the bytes on disk: at most what was in flight when the
        # connection broke came twice.
        assert h.emu.counters.storage_bytes_for(asset.data_id) < asset.size + 5 * 2 * MiB


async def test_a_flaky_but_progressing_transfer_finishes(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        # Every response breaks after 100 KiB, more times than the retry budget allows in a
        # row; bytes arrive each time, which resets the budget.
        options = fast_options(retry=RetryPolicy(attempts=3, base_delay=0.0, max_delay=0.0))
        t = h.transferer(options)
        asset = pick(h, LARGE)
        url = await h.presign(asset.data_id)
        h.emu.faults.add(FaultRule(target="storage", kind="drop", after_bytes=100 * KiB))
        result = await h.fetch(t, asset, url=url)
        h.check(result, asset)
        assert result.retries > options.retry.attempts
        assert result.bytes_downloaded == asset.size


async def test_range_ignored_from_the_start_means_one_plain_stream(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        t = h.transferer()
        asset = pick(h, LARGE)
        url = await h.presign(asset.data_id)
        h.emu.faults.add(FaultRule(target="storage", kind="ignore_range"))
        h.emu.counters.reset()
        result = await h.fetch(t, asset, url=url)
        h.check(result, asset)
        assert not result.segmented
        assert h.emu.counters.storage_requests == 1
        # No sidecar was written: without ranges there is nothing to resume.
        assert result.bytes_downloaded == asset.size


async def test_range_ignored_after_a_drop_restarts_from_zero(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        t = h.transferer()
        asset = pick(h, MEDIUM)
        url = await h.presign(asset.data_id)
        h.emu.faults.add(FaultRule(target="storage", kind="ignore_range"))
        h.emu.faults.add(FaultRule(target="storage", kind="drop", after_bytes=200 * KiB, count=1))
        result = await h.fetch(t, asset, url=url)
        h.check(result, asset)
        assert result.retries == 1 and result.restarts == 1
        assert result.bytes_downloaded == asset.size + 200 * KiB
        assert any(e.kind == "restart" and e.delta == -200 * KiB for e in h.events)


@pytest.mark.parametrize("kind", [LARGE, MEDIUM])
async def test_range_ignored_on_a_resume_is_never_spliced(tmp_path: Path, kind: str) -> None:
    async with harness(tmp_path) as h:

        def on_progress(event: ProgressEvent) -> None:
            if event.kind == "retry" and not h.emu.faults.rules[1:]:
                h.emu.faults.add(FaultRule(target="storage", kind="ignore_range"))

        t = h.transferer(on_progress=on_progress)
        asset = pick(h, kind)
        url = await h.presign(asset.data_id)
        h.emu.faults.add(FaultRule(target="storage", kind="drop", after_bytes=100 * KiB, count=1))
        result = await h.fetch(t, asset, url=url)
        h.check(result, asset)
        # The 200 answer to "Range: bytes=N-" threw the partial away; the rest came as one
        # plain stream.
        assert result.restarts == 1
        assert not result.segmented


async def test_an_empty_object_gets_416_then_a_plain_get(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        t = h.transferer()
        asset = h.one(lambda a: a.size == 0)
        url = await h.presign(asset.data_id)
        h.emu.counters.reset()
        result = await h.fetch(t, asset, url=url)
        h.check(result, asset)
        assert h.emu.counters.storage_requests == 2  # bytes=0-… → 416 → GET → 200, 0 bytes
        assert result.sha256 == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize("kind", [LARGE, MEDIUM])
@pytest.mark.parametrize("status", [429, 503])
async def test_status_with_retry_after(tmp_path: Path, status: int, kind: str) -> None:
    async with harness(tmp_path) as h:
        t = h.transferer()
        asset = pick(h, kind)
        url = await h.presign(asset.data_id)
        rule = FaultRule(target="storage", kind="status", status=status, retry_after=0.05, count=2)
        h.emu.faults.add(rule)
        result = await h.fetch(t, asset, url=url)
        h.check(result, asset)
        assert rule.hits == 2 and result.retries == 2


async def test_status_in_the_middle_of_a_segmented_transfer(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        rule = FaultRule(target="storage", kind="status", status=503, retry_after=0.01, count=3)

        def on_progress(event: ProgressEvent) -> None:
            if event.kind == "bytes" and event.done >= MiB and not h.emu.faults.rules:
                h.emu.faults.add(rule)

        t = h.transferer(on_progress=on_progress)
        asset = pick(h, LARGE)
        result = await h.fetch(t, asset)
        h.check(result, asset)
        assert rule.hits == 3 and result.retries == 3
        assert result.bytes_downloaded == asset.size


async def test_a_permanent_5xx_exhausts_the_budget_then_resumes_later(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        options = fast_options()
        failing = FaultRule(target="storage", kind="status", status=500)

        def on_progress(event: ProgressEvent) -> None:
            if event.kind == "bytes" and event.done >= MiB and not failing.hits:
                h.emu.faults.add(failing)

        t = h.transferer(options, on_progress=on_progress)
        asset = pick(h, LARGE)
        with pytest.raises(TransientTransferError, match="500"):
            await h.fetch(t, asset)
        assert failing.hits >= options.retry.attempts
        assert h.partials()  # the bytes and their sidecar stay for later

        # Later in the same run: the store is back; only the missing bytes are fetched.
        h.emu.faults.clear()
        h.emu.counters.reset()
        result = await h.fetch(t, asset)
        h.check(result, asset)
        assert result.resumed and result.bytes_resumed >= MiB
        assert result.bytes_downloaded == asset.size - result.bytes_resumed
        assert h.emu.counters.storage_bytes_for(asset.data_id) == result.bytes_downloaded
        assert t.stats.resumes == 1


@pytest.mark.parametrize("kind", [LARGE, MEDIUM])
async def test_a_stall_is_detected_and_retried(tmp_path: Path, kind: str) -> None:
    async with harness(tmp_path) as h:
        options = fast_options(timeouts=Timeouts(connect=5.0, read=10.0, stall=0.3))
        stalls: list[ProgressEvent] = []
        t = h.transferer(options, on_progress=lambda e: e.kind == "retry" and stalls.append(e))
        asset = pick(h, kind)
        url = await h.presign(asset.data_id)
        rule = FaultRule(target="storage", kind="stall", after_bytes=64 * KiB, seconds=1.0, count=1)
        h.emu.faults.add(rule)
        result = await h.fetch(t, asset, url=url)
        h.check(result, asset)
        assert rule.hits == 1 and result.retries == 1 and len(stalls) == 1


async def test_a_stall_on_every_attempt_gives_up_with_stall_error(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        options = fast_options(
            timeouts=Timeouts(connect=5.0, read=10.0, stall=0.2),
            retry=RetryPolicy(attempts=2, base_delay=0.0, max_delay=0.0),
        )
        t = h.transferer(options)
        asset = pick(h, MEDIUM)
        url = await h.presign(asset.data_id)
        h.emu.faults.add(FaultRule(target="storage", kind="stall", after_bytes=0, seconds=0.6))
        with pytest.raises(StallError, match="stall"):
            await h.fetch(t, asset, url=url)


@pytest.mark.parametrize("kind", [LARGE, MEDIUM])
async def test_cancelled_mid_transfer_then_resumed(tmp_path: Path, kind: str) -> None:
    async with harness(tmp_path) as h:
        asset = pick(h, kind)
        stop_at = asset.size // 2
        with anyio.CancelScope() as scope:

            def on_progress(event: ProgressEvent) -> None:
                if event.kind == "bytes" and event.done >= stop_at:
                    scope.cancel()

            t = h.transferer(on_progress=on_progress)
            await h.fetch(t, asset)
        assert scope.cancelled_caught
        assert not (h.dest / "files").exists()  # never a truncated file at the final path
        await settle(h.emu)
        h.emu.counters.reset()
        t2 = h.transferer()
        result = await h.fetch(t2, asset)
        h.check(result, asset)
        assert result.resumed and result.bytes_resumed >= stop_at
        assert result.bytes_downloaded == asset.size - result.bytes_resumed
        assert h.emu.counters.storage_bytes_for(asset.data_id) == result.bytes_downloaded


async def test_a_416_in_the_middle_is_not_trusted(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        # A resume answered "unsatisfiable" means the object is not the one on disk any more:
        # the bytes are dropped and the download starts over (and succeeds).
        rule = FaultRule(target="storage", kind="status", status=416, count=1)

        def on_progress(event: ProgressEvent) -> None:
            if event.kind == "bytes" and event.done >= MiB and not rule.hits:
                h.emu.faults.add(rule)

        t = h.transferer(on_progress=on_progress)
        asset = pick(h, LARGE)
        result = await h.fetch(t, asset)
        h.check(result, asset)
        assert rule.hits == 1 and result.restarts == 1
        assert any(e.kind == "restart" and e.delta < 0 for e in h.events)


async def test_a_416_to_the_first_request_falls_back_to_a_plain_get(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        t = h.transferer()
        asset = pick(h, MEDIUM)
        url = await h.presign(asset.data_id)
        h.emu.faults.add(FaultRule(target="storage", kind="status", status=416, count=1))
        h.emu.counters.reset()
        result = await h.fetch(t, asset, url=url)
        h.check(result, asset)
        assert h.emu.counters.storage_requests == 2 and not result.segmented
