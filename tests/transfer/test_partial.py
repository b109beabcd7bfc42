"""engine.transfer.partial and hashing: what a later process may trust, and the prefix hasher.

These drive the partial file and its sidecar directly (no network): the reboot case cannot be
produced by a test any other way, and a corrupt or foreign sidecar must never be trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import anyio
import pytest

from engine.errors import TransientTransferError
from engine.transfer import partial as partial_module
from engine.transfer.hashing import PrefixHasher
from engine.transfer.partial import Partial, PartialDir, Validator

pytestmark = pytest.mark.anyio

SEG = 1000
VALIDATOR = Validator(size=3500, etag='"abc"', last_modified=None, content_type="image/jpeg")


def _started(tmp_path: Path, asset: str = "a1", data: str = "d1") -> Partial:
    part = Partial(PartialDir(tmp_path), asset, data)
    assert part.open() is None  # nothing there yet, and nothing created
    assert not part.path.exists()
    part.begin(VALIDATOR, SEG, 4, sidecar=True)
    return part


def test_done_counts_survive_a_new_process_of_the_same_boot(tmp_path: Path) -> None:
    part = _started(tmp_path)
    part.write(b"x" * 1000, 0)
    part.record(0, 1000)
    part.write(b"y" * 300, 2000)
    part.record(2, 300)
    part.close()

    again = Partial(PartialDir(tmp_path), "a1", "d1")
    state = again.open()
    assert state is not None
    assert state.validator == VALIDATOR
    assert state.segment_size == SEG
    assert state.done == [1000, 0, 300, 0]
    again.close()


def test_records_beyond_the_file_are_not_trusted(tmp_path: Path) -> None:
    part = _started(tmp_path)
    part.write(b"x" * 500, 0)
    part.record(0, 900)  # claims more than was written (cannot happen, must not matter)
    part.close()
    again = Partial(PartialDir(tmp_path), "a1", "d1")
    state = again.open()
    assert state is not None and state.done == [500, 0, 0, 0]
    again.close()


def test_after_a_reboot_only_synced_bytes_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    part = _started(tmp_path)
    part.write(b"x" * 1000, 0)
    part.record(0, 1000)
    part.checkpoint([(0, 1000)])  # durable up to here
    part.write(b"y" * 1000, 1000)
    part.record(1, 1000)  # only in the page cache: a reboot may lose it
    part.close()

    monkeypatch.setattr(partial_module, "boot_id", lambda: "another-boot")
    again = Partial(PartialDir(tmp_path), "a1", "d1")
    state = again.open()
    assert state is not None and state.done == [1000, 0, 0, 0]
    again.close()
    # The sidecar now speaks for this boot.
    third = Partial(PartialDir(tmp_path), "a1", "d1")
    state = third.open()
    assert state is not None and state.done == [1000, 0, 0, 0]
    third.close()


def test_without_fsync_nothing_survives_a_reboot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    part = _started(tmp_path)
    part.write(b"x" * 1000, 0)
    part.record(0, 1000)
    part.close()
    monkeypatch.setattr(partial_module, "boot_id", lambda: "another-boot")
    again = Partial(PartialDir(tmp_path), "a1", "d1")
    state = again.open()
    assert state is not None and state.done == [0, 0, 0, 0]
    again.close()


@pytest.mark.parametrize(
    "damage",
    ["truncate", "garbage", "other-identity", "bad-plan", "no-validator", "missing-keys"],
)
def test_a_damaged_or_foreign_sidecar_means_start_over(tmp_path: Path, damage: str) -> None:
    part = _started(tmp_path)
    part.write(b"x" * 1000, 0)
    part.record(0, 1000)
    part.close()
    sidecar = tmp_path / "partial" / (part.name + ".state")
    raw = sidecar.read_bytes()
    header_end = raw.index(b"\n", len(b"assetsync-partial 1\n"))
    header = json.loads(raw[len(b"assetsync-partial 1\n") : header_end])
    if damage == "truncate":
        sidecar.write_bytes(raw[:100])
    elif damage == "garbage":
        sidecar.write_bytes(os.urandom(len(raw)))
    else:
        if damage == "other-identity":
            header["data_id"] = "d2"
        elif damage == "bad-plan":
            header["segments"] = 7
        elif damage == "no-validator":
            header["etag"] = None
        else:
            del header["size"]
        blob = b"assetsync-partial 1\n" + json.dumps(header).encode() + b"\n"
        sidecar.write_bytes(blob.ljust(4096, b" ") + raw[4096:])
    again = Partial(PartialDir(tmp_path), "a1", "d1")
    assert again.open() is None
    assert again.size_on_disk() == 0  # the old bytes are gone: never spliced
    assert not sidecar.exists()
    again.close()


def test_a_partial_is_locked_against_a_second_writer(tmp_path: Path) -> None:
    part = _started(tmp_path)
    other = Partial(PartialDir(tmp_path), "a1", "d1")
    with pytest.raises(TransientTransferError, match="another process"):
        other.open()
    part.close()
    assert other.open() is not None
    other.close()


def test_identities_that_are_not_plain_ids_never_become_paths(tmp_path: Path) -> None:
    part = Partial(PartialDir(tmp_path), "../../etc", "passwd")
    assert "/" not in part.name and ".." not in part.name


@pytest.mark.parametrize("offer", [False, True])
async def test_prefix_hasher_out_of_order_and_offered(tmp_path: Path, offer: bool) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    folder = PartialDir(tmp_path)
    part = Partial(folder, "a", "d")
    part.create()
    hasher = PrefixHasher(folder.fd, part.name, len(data))
    limiter = anyio.CapacityLimiter(1)
    result: list[str] = []

    async def run() -> None:
        result.append(await hasher.digest(limiter))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        third = len(data) // 3
        # The tail lands first; the prefix cannot move until the head does.
        part.write(data[third:], third)
        await anyio.sleep(0.01)
        part.write(data[:third], 0)
        if offer:
            hasher.advance(third, 0, [data[:third]])
        hasher.advance(len(data))
    assert result == [hashlib.sha256(data).hexdigest()]
    assert hasher.read_back == (len(data) - third if offer else len(data))
    part.close()
    folder.close()


def test_prefix_hasher_stops_when_asked(tmp_path: Path) -> None:
    folder = PartialDir(tmp_path)
    part = Partial(folder, "a", "d")
    part.create()
    hasher = PrefixHasher(folder.fd, part.name, 10)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            hasher._run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    hasher.stop()
    thread.join(timeout=10)
    assert not thread.is_alive() and errors
    part.close()
    folder.close()
