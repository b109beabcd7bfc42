"""Against nginx secure_link storage: the fourth signing style, and an object that changed.

The "object changed under a resume" paths run against the emulator (``rewrite_object``, see
test_fetch_changed.py); this one keeps a real server in the loop, whose ETag (mtime-size) and
``If-Range`` handling are nginx's own, not the emulator's idea of them. nginx caches open
files, so the "changed" store is a second nginx started after the file was replaced, the way a
storage node restarted on new content would be.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path, PurePosixPath

import aiohttp
import anyio
import pytest

from engine.emulator.nginx import NginxServer
from engine.signed_urls import SignedUrl
from engine.transfer import ObjectRef, ProgressEvent, Transferer

from .conftest import MiB, fast_options, sha256_of

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.usefixtures("body_path"),
    pytest.mark.skipif(shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
                       reason="nginx is not installed"),
]  # fmt: skip

REF = ObjectRef("asset-1", "data-1")


def _write(path: Path, size: int, seed: int) -> str:
    data = hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1)
    path.write_bytes(data[:size])
    return hashlib.sha256(data[:size]).hexdigest()


async def test_an_object_changed_between_two_runs_is_never_spliced(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    obj = root / "obj.bin"
    _write(obj, 3 * MiB, seed=1)
    dest, state = tmp_path / "dest", tmp_path / "state"

    async with aiohttp.ClientSession() as session:
        async with NginxServer(root) as nginx:
            stop_at = MiB
            with anyio.CancelScope() as scope:

                def on_progress(event: ProgressEvent) -> None:
                    if event.kind == "bytes" and event.done >= stop_at:
                        scope.cancel()

                t = Transferer(session, fast_options(), state, on_progress=on_progress)

                async def refresh_1() -> str:
                    return nginx.signed_url("obj.bin", ttl=3600)

                await t.fetch(REF, None, refresh_1, dest, PurePosixPath("obj.bin"))
            assert scope.cancelled_caught

        # The store now has other bytes (another size too) under the same name.
        new_sha = _write(obj, 3 * MiB + 777, seed=2)
        later = time.time() + 100
        os.utime(obj, (later, later))  # nginx's ETag is mtime-size
        async with NginxServer(root) as nginx2:

            async def refresh_2() -> str:
                return nginx2.signed_url("obj.bin", ttl=3600)

            events: list[ProgressEvent] = []
            t2 = Transferer(session, fast_options(), state, on_progress=events.append)
            result = await t2.fetch(REF, None, refresh_2, dest, PurePosixPath("obj.bin"))
    # The resume's If-Range did not match: nginx sent 200, the old bytes were discarded.
    assert result.restarts == 1
    assert not result.resumed and result.bytes_resumed == 0
    assert result.sha256 == new_sha == sha256_of(dest / "obj.bin")
    assert any(e.kind == "restart" for e in events)
    assert t2.stats.resumes == 1 and t2.stats.restarts == 1


async def test_nginx_secure_link_expiry(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    sha = _write(root / "a b.bin", 2 * MiB + 5, seed=3)

    async with aiohttp.ClientSession() as session, NginxServer(root) as nginx:
        refreshed = 0

        async def refresh() -> str:
            nonlocal refreshed
            refreshed += 1
            return nginx.signed_url("a b.bin", ttl=3600)

        t = Transferer(session, fast_options(url_margin=30.0), tmp_path / "state")
        # Expired already (storage answers 403 AccessDenied "Request has expired"), but the
        # transferer's clock is told it is an hour earlier: it only learns from storage.
        expired = nginx.signed_url("a b.bin", expires=int(time.time()) - 5)
        skewed = Transferer(
            session, fast_options(), tmp_path / "state", clock=lambda: time.time() - 3600
        )
        result = await skewed.fetch(REF, expired, refresh, tmp_path / "d1", PurePosixPath("f"))
        assert result.refreshes == 1 and result.sha256 == sha
        # Valid for 10 s, less than the margin: used as it comes (the one freshness rule,
        # engine.signed_urls.usable: half its lifetime left is enough)...
        short = nginx.signed_url("a b.bin", ttl=10)
        result = await t.fetch(REF, short, refresh, tmp_path / "d2", PurePosixPath("f"))
        assert result.refreshes == 0 and result.sha256 == sha
        # ... but obtained 8 s ago, it has less than half left: refreshed before the request.
        now = time.time()
        aged = SignedUrl.parse(nginx.signed_url("a b.bin", ttl=2), now - 8, 300.0)
        result = await t.fetch(REF, aged, refresh, tmp_path / "d3", PurePosixPath("f"))
        assert result.refreshes == 1 and result.sha256 == sha
        assert refreshed == 2
