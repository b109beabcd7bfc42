"""A tiny raw HTTP server for the client's wire-level tests (methods, headers, bodies, odd
answers), next to the emulator used for behaviour. It speaks just enough HTTP/1.1: one request
per connection, ``Content-Length`` bodies, and accepts any method token (``XGET``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

import pytest


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> list[tuple[str, str]]:
        return parse_qsl(urlsplit(self.target).query, keep_blank_values=True)

    def json(self) -> object:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: bytes | object = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    cut_after: int | None = None  # close the connection after this many body bytes


Handler = Callable[[Seen], Reply]


@dataclass
class RawServer:
    url: str
    seen: list[Seen]
    handler: list[Handler]

    def set(self, handler: Handler) -> None:
        self.handler[0] = handler


async def _serve_one(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer
) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        seen = Seen(method, target, headers, body)
        server.seen.append(seen)
        reply = server.handler[0](seen)
        payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        out = [f"HTTP/1.1 {reply.status} X", f"Content-Length: {len(payload)}", "Connection: close"]
        out += [f"{k}: {v}" for k, v in reply.headers.items()]
        writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
        writer.write(payload if reply.cut_after is None else payload[: reply.cut_after])
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def raw_server() -> AsyncIterator[RawServer]:
    server = RawServer(url="", seen=[], handler=[lambda _: Reply()])
    srv = await asyncio.start_server(
        lambda r, w: _serve_one(r, w, server), host="127.0.0.1", port=0
    )
    port = srv.sockets[0].getsockname()[1]
    server.url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        srv.close()
        await srv.wait_closed()
