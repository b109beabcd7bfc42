"""A 206 whose ``Content-Range`` is not what was asked for: refused, never written, retried.

The emulator's ``misrange`` fault serves other bytes than asked (``shift``, with a header that
says so) or announces another total size (``total_shift``). The core must not take a single byte
of such an answer: ``bytes_downloaded`` (what the core read from the wire) equals the object's
size, the progress events add up to it, and the file matches its checksum.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.emulator import FaultRule
from engine.emulator.dataset import ExpectedAsset
from engine.errors import TransientTransferError
from engine.transfer import ProgressEvent, TransferResult

from .conftest import LARGE, MEDIUM, SMALL, Harness, KiB, harness, pick

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("body_path")]

SEGMENT = 256 * KiB  # fast_options().segment_size
MISRANGES = [
    pytest.param({"shift": 1000}, id="later"),
    pytest.param({"shift": -1}, id="earlier"),
    pytest.param({"total_shift": 1}, id="bigger"),
    pytest.param({"total_shift": -1}, id="smaller"),
]


def refused_once(h: Harness, result: TransferResult, asset: ExpectedAsset, rule: FaultRule) -> None:
    h.check(result, asset)
    assert rule.hits == 1
    assert result.retries == 1 and result.restarts == 0
    # Not one byte of the misranged body was read, let alone written.
    assert result.bytes_downloaded == asset.size
    assert sum(e.delta for e in h.events if e.kind in ("bytes", "restart")) == asset.size
    assert set(h.emu.counters.storage_statuses) == {206}


@pytest.mark.parametrize("kind", [LARGE, MEDIUM])
@pytest.mark.parametrize("fault", MISRANGES)
async def test_a_misranged_segment_is_refused_and_retried(
    tmp_path: Path, kind: str, fault: dict[str, int]
) -> None:
    async with harness(tmp_path) as h:
        asset = pick(h, kind)
        rule = FaultRule(target="storage", kind="misrange", count=1, **fault)

        def on_progress(event: ProgressEvent) -> None:
            # Once the first segment is in: the next answer is a later segment's.
            if event.kind == "bytes" and event.done >= SEGMENT and not h.emu.faults.rules:
                h.emu.faults.add(rule)

        result = await h.fetch(h.transferer(on_progress=on_progress), asset)
        refused_once(h, result, asset, rule)


@pytest.mark.parametrize("kind", [LARGE, MEDIUM, SMALL])
@pytest.mark.parametrize("shift", [1, 1000])  # the first answer starts at 0: only later
async def test_a_misranged_first_answer_is_refused_and_retried(
    tmp_path: Path, kind: str, shift: int
) -> None:
    async with harness(tmp_path) as h:
        asset = pick(h, kind)
        url = await h.presign(asset.data_id)
        rule = h.emu.faults.add(FaultRule(target="storage", kind="misrange", shift=shift, count=1))
        h.emu.counters.reset()
        result = await h.fetch(h.transferer(), asset, url=url)
        refused_once(h, result, asset, rule)


async def test_a_store_that_always_misranges_is_given_up_on(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        asset = pick(h, MEDIUM)
        url = await h.presign(asset.data_id)
        h.emu.faults.add(FaultRule(target="storage", kind="misrange", shift=SEGMENT))
        with pytest.raises(TransientTransferError, match="asked for bytes from 0"):
            await h.fetch(h.transferer(), asset, url=url)
        assert not (h.dest / "files").exists()
        assert sum(e.delta for e in h.events if e.kind == "bytes") == 0


@pytest.mark.parametrize("kind", [LARGE, MEDIUM])
@pytest.mark.parametrize("total_shift", [4321, -4321], ids=["bigger", "smaller"])
async def test_a_wrong_total_on_the_first_answer_is_not_trusted(
    tmp_path: Path, kind: str, total_shift: int
) -> None:
    async with harness(tmp_path) as h:
        asset = pick(h, kind)
        url = await h.presign(asset.data_id)
        rule = FaultRule(target="storage", kind="misrange", total_shift=total_shift, count=1)
        h.emu.faults.add(rule)
        try:
            result = await h.fetch(h.transferer(), asset, url=url)
        except TransientTransferError as exc:
            pytest.fail(f"the first answer's total was trusted: {exc}")
        h.check(result, asset)
        assert rule.hits == 1
