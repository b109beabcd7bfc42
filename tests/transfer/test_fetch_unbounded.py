"""A storage answer without Content-Length (chunked): read to its end, never resumed.

The emulator always sends Content-Length (object stores do), so this one case uses a tiny
aiohttp server on port 0 that streams a chunked body.
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from engine.transfer import ObjectRef, Transferer

from .conftest import fast_options, sha256_of

pytestmark = pytest.mark.anyio

BODY = bytes(range(256)) * 4000  # 1 000 KiB, in several chunks


async def test_a_chunked_body_is_read_to_its_end(tmp_path: Path) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"ETag": '"v1"'})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(BODY), 100_000):
            await response.write(BODY[start : start + 100_000])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/obj", handler)
    async with TestServer(app, host="127.0.0.1", port=0) as server, aiohttp.ClientSession() as s:
        url = str(server.make_url("/obj"))

        async def refresh() -> str:
            return url

        t = Transferer(s, fast_options(), tmp_path / "state")
        result = await t.fetch(
            ObjectRef("a", "d"), url, refresh, tmp_path / "dest", PurePosixPath("o.bin")
        )
    assert result.size == len(BODY)
    assert result.sha256 == hashlib.sha256(BODY).hexdigest() == sha256_of(tmp_path / "dest/o.bin")
    assert result.etag == '"v1"' and not result.segmented
