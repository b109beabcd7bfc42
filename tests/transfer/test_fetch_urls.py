"""Signed URL expiry during a transfer, in each signing style.

Two ways a URL runs out, both tested:

* ``known``: the transferer's clock is the emulator's, so it sees the expiry coming and refreshes
  *before* the request (storage never refuses anything);
* ``skewed``: the transferer's clock lags the storage's, so the URL looks valid, storage answers
  its style's "expired" error (403 AccessDenied / 400 ExpiredToken / 403 AuthenticationFailed),
  and the transfer refreshes and carries on from the bytes on disk.

Time moves with the emulator's clock hook (``advance_clock``), never with sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest

from engine.emulator import FaultRule
from engine.errors import NotFoundError, TransientTransferError
from engine.signed_urls import SignedUrl
from engine.transfer import ObjectRef, ProgressEvent, Transferer

from .conftest import Harness, KiB, MiB, fast_options, harness

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("body_path")]

STYLES = ["s3", "gcs", "azure"]
MODES = ["known", "skewed"]
TTL = 600.0


def make_transferer(
    h: Harness, mode: str, on_progress: Callable[[ProgressEvent], None] | None = None
) -> Transferer:
    # "skewed": real time, while the emulator's clock jumps ahead.
    clock = h.emu.now if mode == "known" else time.time
    return h.transferer(fast_options(url_margin=30.0), clock=clock, on_progress=on_progress)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("signing", STYLES)
async def test_expiry_before_the_first_byte(tmp_path: Path, signing: str, mode: str) -> None:
    async with harness(tmp_path, signing=signing, url_ttl=TTL) as h:
        t = make_transferer(h, mode)
        asset = h.one(lambda a: 0 < a.size < 64 * KiB)
        url = await h.presign(asset.data_id)  # the listing's URL
        h.emu.advance_clock(TTL + 60)
        h.emu.counters.reset()
        result = await h.fetch(t, asset, url=url)
        h.check(result, asset)
        assert result.refreshes == 1
        # Known expiry: refreshed before asking storage. Skewed: storage refused once.
        assert h.emu.counters.storage_requests == (1 if mode == "known" else 2)


@pytest.mark.parametrize("workers", [1, 4])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("signing", STYLES)
async def test_expiry_between_segments(
    tmp_path: Path, signing: str, mode: str, workers: int
) -> None:
    async with harness(tmp_path, signing=signing, url_ttl=TTL) as h:
        advanced = False

        def on_progress(event: ProgressEvent) -> None:
            nonlocal advanced
            if event.kind == "bytes" and event.done >= MiB and not advanced:
                advanced = True
                h.emu.advance_clock(TTL + 60)

        clock = h.emu.now if mode == "known" else time.time
        options = fast_options(url_margin=30.0, segments=workers)
        t = h.transferer(options, clock=clock, on_progress=on_progress)
        asset = h.one(lambda a: a.size >= 3 * MiB)
        url = await h.presign(asset.data_id)
        h.emu.counters.reset()
        result = await h.fetch(t, asset, url=url)
        h.check(result, asset)
        assert advanced
        assert result.segmented == (workers > 1)
        assert result.refreshes == 1
        assert result.bytes_downloaded == asset.size  # carried on, nothing fetched twice
        segments = -(-asset.size // options.segment_size)
        refused = h.emu.counters.storage_requests - segments
        if workers == 1:
            # One request at a time: the expiry falls between two of them.
            assert refused == (0 if mode == "known" else 1)
        else:
            # Requests already on their way when the clock jumped are refused, in either mode;
            # each worker is refused at most once.
            assert 0 <= refused <= workers


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("signing", STYLES)
async def test_expiry_between_a_failure_and_its_retry(
    tmp_path: Path, signing: str, mode: str
) -> None:
    async with harness(tmp_path, signing=signing, url_ttl=TTL) as h:

        def on_progress(event: ProgressEvent) -> None:
            if event.kind == "retry":
                h.emu.advance_clock(TTL + 60)

        t = make_transferer(h, mode, on_progress)
        asset = h.one(lambda a: 300 * KiB < a.size < MiB)
        url = await h.presign(asset.data_id)
        h.emu.faults.add(FaultRule(target="storage", kind="drop", after_bytes=100 * KiB, count=1))
        h.emu.counters.reset()
        result = await h.fetch(t, asset, url=url)
        h.check(result, asset)
        assert result.retries == 1 and result.refreshes == 1
        # The retry resumed from the bytes on disk: only the lost tail was sent twice.
        sent = h.emu.counters.storage_bytes_for(asset.data_id)
        assert sent <= asset.size + 100 * KiB


@pytest.mark.parametrize("signing", STYLES)
async def test_urls_shorter_lived_than_the_margin_are_used_for_half_their_life(
    tmp_path: Path, signing: str
) -> None:
    """The one freshness rule (engine.signed_urls.usable): a URL signed for less than the
    margin is used while it has half its lifetime left, then refreshed before the request."""
    async with harness(tmp_path, signing=signing) as h:
        h.emu.faults.url_ttl = 8.0  # below the 30 s margin
        t = h.transferer(clock=h.emu.now)
        asset = h.one(lambda a: a.size >= 3 * MiB)
        result = await h.fetch(t, asset, url=await h.presign(asset.data_id))
        h.check(result, asset)
        assert result.refreshes == 0  # fresh: used as it came
        # As the pipeline hands it over: parsed when obtained, so its lifetime is known.
        url = SignedUrl.parse(await h.presign(asset.data_id), h.emu.now(), 300.0)
        h.emu.advance_clock(5.0)  # less than half of its 7-8 s left
        result = await h.fetch(t, asset, url=url, rel="again.bin")  # type: ignore[arg-type]
        assert result.refreshes == 1
        assert (h.dest / "again.bin").stat().st_size == asset.size


async def test_refresh_errors_reach_the_caller(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        t = h.transferer()
        asset = h.one(lambda a: a.size > 0)
        ref = ObjectRef(asset.asset_id, asset.data_id)

        async def gone() -> str:
            raise NotFoundError("data deleted", status=404)

        with pytest.raises(NotFoundError):
            await t.fetch(ref, None, gone, h.dest, PurePosixPath("a"))

        async def broken() -> str:
            raise RuntimeError("provider bug with a https://x?sig=SECRET in it")

        with pytest.raises(TransientTransferError) as caught:
            await t.fetch(ref, None, broken, h.dest, PurePosixPath("a"))
        assert "SECRET" not in str(caught.value)
