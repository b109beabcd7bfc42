"""An object rewritten under the same URL while it is being downloaded: never spliced.

The emulator's ``rewrite_object`` gives an object new bytes, ETag and Last-Modified under the
same name and URL. A faithful store then answers a resume's ``If-Range`` (the old ETag) with 200
and the whole new object; a store with the ``ignore_if_range`` fault answers 206 of the new
object instead, and only the ETag of that 206 gives the change away. Either way the core must
discard the old bytes and restart: every test checks that the file holds exactly the new bytes.

Where the change lands:

* before the first byte of a resume (an interrupted download, the object rewritten, a new
  transferer picks the partial up);
* mid-body: a connection drop, and the object rewritten before the retry;
* between two segments: the object rewritten once a segment's worth of bytes is in, so a
  later segment's request meets the new version while the responses under way still carry the
  old one (a response keeps the version it started with, as on a real store).
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from engine.emulator import FaultRule
from engine.emulator.dataset import ExpectedAsset
from engine.errors import TransientTransferError
from engine.transfer import ProgressEvent, TransferResult

from .conftest import LARGE, MEDIUM, Harness, KiB, fast_options, harness, pick, settle

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("body_path")]

SEGMENT = 256 * KiB  # fast_options().segment_size


async def interrupted(h: Harness, asset: ExpectedAsset) -> None:
    """Download half of ``asset``, then cancel; storage is quiet afterwards."""
    stop_at = asset.size // 2
    reached = 0
    with anyio.CancelScope() as scope:

        def on_progress(event: ProgressEvent) -> None:
            nonlocal reached
            if event.kind == "bytes" and event.done >= stop_at:
                reached = event.done
                scope.cancel()

        await h.fetch(h.transferer(on_progress=on_progress), asset)
    assert scope.cancelled_caught and reached >= stop_at
    assert h.partials()  # the bytes and their sidecar are kept for a resume
    await settle(h.emu)


def restarted_once(h: Harness, result: TransferResult, new: ExpectedAsset) -> None:
    """The file holds the new bytes, fetched whole after exactly one restart."""
    h.check(result, new)
    assert result.etag == new.etag
    assert result.restarts == 1
    assert not result.resumed and result.bytes_resumed == 0
    # What the core took from the wire: the new object once (the stale answer's body unread).
    assert result.bytes_downloaded == new.size
    restarts = [e for e in h.events if e.kind == "restart"]
    assert len(restarts) == 1 and restarts[0].delta < 0
    assert h.emu.counters.storage_bytes_for(new.data_id) >= new.size


# ----- a faithful store: If-Range with the old ETag gets 200 ---------------------------------


@pytest.mark.parametrize("kind", [LARGE, MEDIUM])
@pytest.mark.parametrize(
    "new_size", [None, 12345, 3 * 1024 * 1024 + 777], ids=["same-size", "smaller", "larger"]
)
async def test_resume_meets_a_rewritten_object_before_its_first_byte(
    tmp_path: Path, kind: str, new_size: int | None
) -> None:
    async with harness(tmp_path) as h:
        asset = pick(h, kind)
        await interrupted(h, asset)
        new = h.emu.rewrite_object(asset.data_id, size=new_size)
        assert new.sha256 != asset.sha256 and new.etag != asset.etag
        h.emu.counters.reset()
        t = h.transferer()
        result = await h.fetch(t, asset)
        restarted_once(h, result, new)
        assert t.stats.resumes == 1 and t.stats.restarts == 1
        # The resume asked with If-Range: the store answered 200 (one per segment in flight),
        # the rest came as ranges of the new object.
        statuses = dict(h.emu.counters.storage_statuses)
        assert 1 <= statuses.pop(200) <= fast_options().segments
        assert set(statuses) == {206}


@pytest.mark.parametrize("kind", [LARGE, MEDIUM])
async def test_object_rewritten_between_a_drop_and_its_retry(tmp_path: Path, kind: str) -> None:
    async with harness(tmp_path) as h:
        asset = pick(h, kind)
        changed: list[ExpectedAsset] = []

        def on_progress(event: ProgressEvent) -> None:
            if event.kind == "retry" and not changed:
                changed.append(h.emu.rewrite_object(asset.data_id))

        t = h.transferer(on_progress=on_progress)
        url = await h.presign(asset.data_id)
        drop = h.emu.faults.add(
            FaultRule(target="storage", kind="drop", after_bytes=100 * KiB, count=1)
        )
        result = await h.fetch(t, asset, url=url)
        (new,) = changed
        assert drop.hits == 1 and result.retries == 1
        h.check(result, new)
        assert result.restarts == 1 and result.etag == new.etag
        # 100 KiB of the old object, then the new one whole (segmented: other workers may
        # also have taken old bytes before the retry met the new version).
        if kind == MEDIUM:
            assert result.bytes_downloaded == 100 * KiB + new.size
        else:
            assert result.bytes_downloaded >= 100 * KiB + new.size
        assert h.emu.counters.storage_statuses[200] >= 1  # the retry's If-Range: 200


@pytest.mark.parametrize("kind", [LARGE, MEDIUM])
async def test_object_rewritten_between_two_segments(tmp_path: Path, kind: str) -> None:
    async with harness(tmp_path) as h:
        asset = pick(h, kind)
        changed: list[ExpectedAsset] = []

        def on_progress(event: ProgressEvent) -> None:
            if event.kind == "bytes" and event.done >= SEGMENT and not changed:
                changed.append(h.emu.rewrite_object(asset.data_id))

        t = h.transferer(on_progress=on_progress)
        result = await h.fetch(t, asset)
        (new,) = changed
        h.check(result, new)
        assert result.restarts == 1 and result.etag == new.etag
        assert result.retries == 0
        assert h.emu.counters.storage_statuses[200] >= 1  # the next segment's If-Range: 200
        # Old bytes came in (at least one segment), were dropped, then the new object whole.
        assert result.bytes_downloaded >= SEGMENT + new.size


# ----- a store that ignores If-Range: the 206's ETag is all that tells ----------------------


@pytest.mark.parametrize("kind", [LARGE, MEDIUM])
async def test_resume_gets_a_206_of_the_rewritten_object(tmp_path: Path, kind: str) -> None:
    async with harness(tmp_path) as h:
        asset = pick(h, kind)
        await interrupted(h, asset)
        new = h.emu.rewrite_object(asset.data_id)  # same size: Content-Range looks right
        rule = h.emu.faults.add(FaultRule(target="storage", kind="ignore_if_range"))
        h.emu.counters.reset()
        t = h.transferer()
        result = await h.fetch(t, asset)
        restarted_once(h, result, new)
        assert rule.hits >= 1  # the resume's If-Range was ignored: a 206 of the new version
        assert set(h.emu.counters.storage_statuses) == {206}  # never a 200
        assert t.stats.resumes == 1


@pytest.mark.parametrize("kind", [LARGE, MEDIUM])
async def test_segment_gets_a_206_of_the_rewritten_object(tmp_path: Path, kind: str) -> None:
    async with harness(tmp_path) as h:
        asset = pick(h, kind)
        rule = h.emu.faults.add(FaultRule(target="storage", kind="ignore_if_range"))
        changed: list[ExpectedAsset] = []

        def on_progress(event: ProgressEvent) -> None:
            if event.kind == "bytes" and event.done >= SEGMENT and not changed:
                changed.append(h.emu.rewrite_object(asset.data_id))

        result = await h.fetch(h.transferer(on_progress=on_progress), asset)
        (new,) = changed
        h.check(result, new)
        assert result.restarts == 1 and result.etag == new.etag
        assert rule.hits >= 1
        assert set(h.emu.counters.storage_statuses) == {206}


@pytest.mark.parametrize("kind", [LARGE, MEDIUM])
async def test_resume_gets_a_206_of_a_resized_object(tmp_path: Path, kind: str) -> None:
    async with harness(tmp_path) as h:
        asset = pick(h, kind)
        await interrupted(h, asset)
        new = h.emu.rewrite_object(asset.data_id, size=asset.size + 4321)
        h.emu.faults.add(FaultRule(target="storage", kind="ignore_if_range"))
        h.emu.counters.reset()
        try:
            result = await h.fetch(h.transferer(), asset)
        except TransientTransferError as exc:
            pytest.fail(f"retried instead of restarting: {exc}")
        restarted_once(h, result, new)
