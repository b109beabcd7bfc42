"""External storage mode: the API hands out nginx secure_link URLs, nginx serves the bytes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import aiohttp
import pytest

from engine.emulator import Emulator, ExternalStorage
from engine.emulator.nginx import DEFAULT_NGINX, NginxServer

from .conftest import Api, FakeClock

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not os.access(DEFAULT_NGINX, os.X_OK), reason="nginx is not installed"),
]


async def test_nginx_serves_what_the_listing_points_at(
    tmp_path: Path, clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    secret = "emulator-secret-123"
    async with NginxServer(tmp_path, secret=secret) as nginx:
        external = ExternalStorage(nginx.base_url, secret)
        async with Emulator(assets=15, external_storage=external, clock=clock) as emu:
            assert emu.external_storage == external
            written = emu.write_objects(tmp_path)
            api = Api(emu, session)
            items = await api.list_all(limit=100)
            assert written == sum(emu.dataset.expected(i["id"]).size for i in items)
            for item in items:
                url = item["data"]["presigned_url"]
                assert url.startswith(f"{nginx.base_url}/objects/")
                assert "md5=" in url
                assert "expires=" in url
                async with session.get(url) as response:
                    assert response.status == 200
                    body = await response.read()
                expected = emu.dataset.expected(item["id"])
                assert hashlib.sha256(body).hexdigest() == expected.sha256
            assert emu.counters.storage_requests == 0  # Python is out of the data plane

            url = items[0]["data"]["presigned_url"]
            async with session.get(url.replace("md5=", "md5=A")) as response:
                assert response.status == 403
                assert "SignatureDoesNotMatch" in await response.text()
            async with session.get(url, headers={"Range": "bytes=0-9"}) as response:
                assert response.status == 206

            # nginx checks expiry against the real clock: sign in the past to get an expired URL.
            clock.advance(-7200)
            data_id = items[0]["data"]["id"]
            stale = (await api.ok(f"/api/data/{data_id}/presigned-url"))["presigned_url"]
            async with session.get(stale) as response:
                assert response.status == 403
                assert "Request has expired" in await response.text()
