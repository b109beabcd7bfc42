"""XGET over a real socket: the emulator accepts it; a stock aiohttp server does not."""

from __future__ import annotations

import json

import anyio
import pytest
from aiohttp import web

from engine.emulator import Emulator

pytestmark = pytest.mark.anyio


async def _exchange(port: int, raw: bytes) -> bytes:
    """Send raw bytes, read until the server closes (requests say Connection: close)."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(raw)
        received = bytearray()
        with anyio.fail_after(10):
            while True:
                try:
                    received += await stream.receive()
                except anyio.EndOfStream:
                    return bytes(received)


def _xget(path: str, token: str, body: bytes, close: bool = True) -> bytes:
    head = (
        f"XGET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        + ("Connection: close\r\n" if close else "")
        + "\r\n"
    )
    return head.encode() + body


def _split(response: bytes) -> tuple[str, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    return head.decode().split("\r\n")[0], body


async def test_xget_assets_over_a_raw_socket(emu: Emulator) -> None:
    ids = list(emu.dataset.asset_ids())[:3]
    path = f"/api/dataset/version/{emu.dataset_version_id}/assets"
    status_line, body = _split(
        await _exchange(emu.port, _xget(path, emu.token, json.dumps({"ids": ids}).encode()))
    )
    assert status_line == "HTTP/1.1 200 OK"
    answer = json.loads(body)
    assert [i["id"] for i in answer["items"]] == ids
    assert answer["count"] == 3
    assert emu.counters.requests["assets_xget"] == 1


async def test_xget_annotations_and_pipelined_keep_alive(emu: Emulator) -> None:
    annotation_ids = [
        a["id"]
        for asset in emu.dataset.asset_ids()
        for a in emu.dataset.expected(asset).annotations
    ][:5]
    dv = f"/api/dataset/version/{emu.dataset_version_id}"
    ping = f"GET /api/home/ping HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {emu.token}\r\n\r\n"
    # A GET, then an XGET on the same keep-alive connection, then a closing XGET: the parser
    # must handle XGET wherever it falls in a connection.
    raw = (
        ping.encode()
        + _xget(f"{dv}/annotations", emu.token, json.dumps(annotation_ids).encode(), close=False)
        + _xget(f"{dv}/assets", emu.token, b'{"ids": []}')
    )
    response = await _exchange(emu.port, raw)
    assert response.count(b"HTTP/1.1 200 OK") == 2
    assert response.count(b"HTTP/1.1 400 Bad Request") == 1
    for annotation_id in annotation_ids:
        assert annotation_id.encode() in response


async def test_xget_needs_the_token_like_any_method(emu: Emulator) -> None:
    path = f"/api/dataset/version/{emu.dataset_version_id}/assets"
    status_line, _ = _split(await _exchange(emu.port, _xget(path, "wrong", b'{"ids": []}')))
    assert status_line.startswith("HTTP/1.1 401")


async def test_a_stock_aiohttp_server_rejects_xget() -> None:
    """Why the emulator swaps parsers: this is what aiohttp's C parser does with XGET."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=request.method)

    app = web.Application()
    app.router.add_route("*", "/x", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        raw = b"XGET /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        status_line, _ = _split(await _exchange(port, raw))
    finally:
        await runner.cleanup()
    from aiohttp.http_parser import HttpRequestParser, HttpRequestParserPy

    if HttpRequestParser is HttpRequestParserPy:  # pragma: no cover - AIOHTTP_NO_EXTENSIONS
        pytest.skip("aiohttp runs without its C parser here")
    assert " 400 " in status_line
