"""Transferer.fetch against the emulator: clean downloads, placement, permanent errors."""

from __future__ import annotations

import os
import socket
from pathlib import Path, PurePosixPath

import anyio
import pytest

from engine.emulator import FaultRule
from engine.errors import (
    LocalStorageError,
    PermanentTransferError,
    TransientTransferError,
    UsageError,
)
from engine.settings import RetryPolicy
from engine.transfer import ObjectRef

from .conftest import KiB, MiB, current_body_path, fast_options, harness

# Marked here, at collection time, so anyio's plugin parametrizes these tests over the
# conftest's backends (asyncio and uvloop) and keeps their own parametrization.
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("body_path")]


@pytest.mark.parametrize("signing", ["s3", "gcs", "azure"])
async def test_clean_download_of_every_size_class(tmp_path: Path, signing: str) -> None:
    async with harness(tmp_path, signing=signing) as h:
        options = fast_options()
        t = h.transferer(options)
        assets = h.assets(lambda a: True)
        classes = {
            "empty": [a for a in assets if a.size == 0],
            "one chunk": [a for a in assets if 0 < a.size <= options.chunk_size],
            "one segment": [
                a for a in assets if options.chunk_size < a.size <= options.segment_size
            ],
            "segments, one stream": [
                a for a in assets if options.segment_size < a.size < options.segment_threshold
            ],
            "segmented": [a for a in assets if a.size >= options.segment_threshold],
        }
        assert all(classes.values()), {k: len(v) for k, v in classes.items()}
        h.emu.counters.reset()
        for kind, members in classes.items():
            for asset in members:
                result = await h.fetch(t, asset)
                h.check(result, asset)
                assert result.segmented == (kind == "segmented")
                assert not result.resumed and result.retries == 0 and result.refreshes == 0
                assert result.bytes_downloaded == asset.size
                assert result.etag is not None
                assert result.content_type == asset.content_type
        # Every byte crossed the wire exactly once: no waste from the probing first request.
        total = sum(a.size for a in assets)
        assert h.emu.counters.storage_bytes == total
        assert t.stats.files == len(assets) and t.stats.bytes == total
        # The path under test was the one taken: every body above one chunk went through a
        # pump thread, or none did.
        size, chunk = options.segment_size, options.chunk_size
        # Above one chunk, every object is fetched a segment per request (in parallel or not).
        bodies = sum(
            1
            for a in assets
            if a.size > chunk
            for start in range(0, a.size, size)
            if min(size, a.size - start) > chunk
        )
        assert t.stats.pumped == (bodies if current_body_path() == "pump" else 0)
        large = classes["segmented"][0]
        assert h.emu.counters.storage_bytes_for(large.data_id) == large.size


async def test_many_small_files_concurrently_on_one_session(tmp_path: Path) -> None:
    async with harness(tmp_path, assets=60, large_share=0.0, seed=9) as h:
        t = h.transferer()
        assets = h.assets(lambda a: True)
        results = {}

        async def one(asset_index: int) -> None:
            asset = assets[asset_index]
            results[asset.asset_id] = await h.fetch(t, asset)

        async with anyio.create_task_group() as tg:
            for index in range(len(assets)):
                tg.start_soon(one, index)
        for asset in assets:
            h.check(results[asset.asset_id], asset)


async def test_url_none_asks_the_provider_first(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        t = h.transferer()
        asset = h.one(lambda a: a.size > 0)
        result = await h.fetch(t, asset, listing_url=False)
        h.check(result, asset)
        assert result.refreshes == 1 and h.presigns == 1


async def test_progress_events_account_for_every_byte(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        t = h.transferer()
        asset = h.one(lambda a: a.size > 3 * MiB)
        result = await h.fetch(t, asset)
        h.check(result, asset)
        kinds = [e.kind for e in h.events]
        assert kinds[0] == "start" and kinds[-1] == "done"
        assert sum(e.delta for e in h.events if e.kind == "bytes") == asset.size
        assert max(e.done for e in h.events) == asset.size
        assert all(e.asset_id == asset.asset_id for e in h.events)


async def test_progress_events_account_for_every_byte_of_a_small_object(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        asset = h.one(lambda a: 1000 < a.size <= 64 * KiB)
        result = await h.fetch(h.transferer(), asset)
        h.check(result, asset)
        assert sum(e.delta for e in h.events if e.kind == "bytes") == asset.size


async def test_fsync_on_places_the_file_too(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        t = h.transferer(fast_options(fsync=True))
        for asset in (h.one(lambda a: 0 < a.size < 64 * KiB), h.one(lambda a: a.size > MiB)):
            h.check(await h.fetch(t, asset, rel=f"deep/er/{asset.asset_id}"), asset)


async def test_not_found_is_permanent_and_not_retried(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        t = h.transferer()
        asset = h.one(lambda a: a.size > 0)
        url = await h.presign(asset.data_id)
        h.emu.faults.add(FaultRule(target="storage", kind="status", status=404, count=1))
        h.emu.counters.reset()
        with pytest.raises(PermanentTransferError, match="not found"):
            await h.fetch(t, asset, url=url)
        assert h.emu.counters.storage_requests == 1
        assert not (h.dest / "files").exists()


async def test_a_tampered_url_that_refresh_cannot_fix_is_permanent(tmp_path: Path) -> None:
    async with harness(tmp_path, signing="s3") as h:
        t = h.transferer()
        asset = h.one(lambda a: a.size > 0)

        async def tampered() -> str:
            url = await h.presign(asset.data_id)
            return url.replace("X-Amz-Expires=", "X-Amz-Expires=9")  # extend the lifetime

        with pytest.raises(PermanentTransferError) as caught:
            await t.fetch(
                ObjectRef(asset.asset_id, asset.data_id),
                await tampered(),
                tampered,
                h.dest,
                PurePosixPath("f.bin"),
            )
        # The listing URL was refused, refreshed once; the fresh one refused too: permanent.
        assert "SignatureDoesNotMatch" in str(caught.value)
        assert "X-Amz-Signature=REDACTED" in str(caught.value)
        assert h.emu.counters.storage_requests == 2
        assert t.stats.refreshes == 1
        assert not (h.dest / "f.bin").exists()


async def test_a_tampered_listing_url_is_refreshed(tmp_path: Path) -> None:
    async with harness(tmp_path, signing="azure") as h:
        t = h.transferer()
        asset = h.one(lambda a: a.size > 0)
        url = (await h.presign(asset.data_id)).replace("sp=r", "sp=rw")
        result = await h.fetch(t, asset, url=url)
        h.check(result, asset)
        assert result.refreshes == 1


async def test_symlinks_inside_dest_are_not_followed(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        t = h.transferer()
        asset = h.one(lambda a: a.size > 300 * KiB)  # large enough to keep its partial
        outside = tmp_path / "outside"
        outside.mkdir()
        h.dest.mkdir()
        (h.dest / "evil").symlink_to(outside, target_is_directory=True)
        with pytest.raises(LocalStorageError, match="symlink"):
            await h.fetch(t, asset, rel="evil/file.bin")
        assert os.listdir(outside) == []
        # The bytes are kept for the next attempt, which then lands where it may.
        assert len(h.partials()) >= 1
        # A symlink at the final name is replaced, not written through.
        victim = outside / "victim"
        victim.write_bytes(b"keep me")
        (h.dest / "file.bin").symlink_to(victim)
        result = await h.fetch(t, asset, rel="file.bin")
        assert result.bytes_resumed == asset.size and result.bytes_downloaded == 0
        h.check(result, asset)
        assert not (h.dest / "file.bin").is_symlink()
        assert victim.read_bytes() == b"keep me"


@pytest.mark.parametrize("rel", ["", ".", "/abs", "a/../b", "a//b", "a/./b", "x\0y", "a/"])
async def test_unsafe_destination_paths_are_refused(tmp_path: Path, rel: str) -> None:
    async with harness(tmp_path, assets=2, empty_share=0.0, large_share=0.0) as h:
        t = h.transferer()
        asset = h.one(lambda a: True)
        h.emu.counters.reset()
        with pytest.raises(UsageError):
            await t.fetch(
                ObjectRef(asset.asset_id, asset.data_id),
                None,
                h.refresher(asset.data_id),
                h.dest,
                PurePosixPath(rel) if rel not in ("a//b", "a/", "a/./b") else _raw_path(rel),
            )
        assert h.emu.counters.storage_requests == 0


def _raw_path(text: str) -> PurePosixPath:
    # PurePosixPath normalises "a//b" and "a/"; a caller could still hand us such a string
    # wrapped in a subclass whose str() is raw.
    class Raw(PurePosixPath):
        def __str__(self) -> str:
            return text

    return Raw(text)


async def test_a_folder_in_the_way_is_a_local_error(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        t = h.transferer()
        asset = h.one(lambda a: a.size > 0)
        (h.dest / "taken" / "child").mkdir(parents=True)
        with pytest.raises(LocalStorageError, match="folder is in the way"):
            await h.fetch(t, asset, rel="taken")


async def test_connection_refused_is_transient_and_says_no_secret(tmp_path: Path) -> None:
    async with harness(tmp_path, signing="gcs") as h:
        t = h.transferer(fast_options(retry=RetryPolicy(attempts=2, base_delay=0, max_delay=0)))
        asset = h.one(lambda a: a.size > 0)
        url = await h.presign(asset.data_id)
        with socket.socket() as probe:  # a port nobody listens on
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        dead = url.replace(f":{h.emu.port}/", f":{port}/")
        signature = dead.split("X-Goog-Signature=")[1].split("&")[0]

        async def same() -> str:
            return dead

        with pytest.raises(TransientTransferError) as caught:
            await t.fetch(
                ObjectRef(asset.asset_id, asset.data_id), dead, same, h.dest, PurePosixPath("f")
            )
        assert signature not in str(caught.value) and "REDACTED" in str(caught.value)
        assert caught.value.retryable


async def test_a_chunk_size_above_the_segment_size_still_fetches_whole_objects(
    tmp_path: Path,
) -> None:
    # The first answer carries one segment: an object larger than that but within chunk_size
    # is not "received whole" by it.
    async with harness(tmp_path, empty_share=0.0, large_share=0.0) as h:
        t = h.transferer(fast_options(chunk_size=MiB, segment_size=64 * KiB))
        between = h.assets(lambda a: 64 * KiB < a.size <= MiB)[:3]
        assert between
        for asset in between:
            h.check(await h.fetch(t, asset), asset)
