"""Over TLS a large body stays on the event loop, which decrypts it: the pump threads read raw
sockets and must never be handed one that carries TLS records."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest
import trustme

from engine.emulator import Emulator
from engine.transfer import Transferer
from engine.transfer.http1 import StorageHttp

from .conftest import Harness, MiB, fast_options, sizes_dataset

pytestmark = pytest.mark.anyio


async def test_tls_bodies_are_read_by_the_loop_even_when_pumps_are_allowed(
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    options = fast_options(thread_body_min=0)
    async with (
        Emulator(**sizes_dataset(), ssl_context=server) as emu,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client)) as session,
    ):
        h = Harness(emu=emu, session=session, root=tmp_path)
        storage = StorageHttp(ssl_context=client, limit_per_host=8)
        t = Transferer(storage, options, h.state_dir)
        try:
            assets = h.assets(lambda a: a.size > options.chunk_size)
            assert any(a.size >= 3 * MiB for a in assets)
            for asset in assets:
                h.check(await h.fetch(t, asset), asset)
        finally:
            t.close()
            storage.close()
        assert t.stats.files == len(assets)
        assert t.stats.pumped == 0
