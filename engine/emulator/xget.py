"""Serving the ``XGET`` method: aiohttp's pure-Python HTTP parser, for this server only.

aiohttp's C parser (llhttp) knows a fixed list of methods and answers anything else, ``XGET``
included, with 400 "Invalid method". Its pure-Python parser accepts any RFC 9110 token. The
global switch (``AIOHTTP_NO_EXTENSIONS=1``) would slow every aiohttp client and server in the
process, so instead :class:`XgetAppRunner` builds a server whose connections use a
:class:`RequestHandler` subclass that swaps in the Python request parser. Nothing else changes:
routing, middlewares and response writing are aiohttp's own. The cost is a few microseconds of
parsing per request (measured by ``benchmarks/storage_bench.py``).

This leans on three aiohttp internals, all exercised by ``tests/emulator/test_xget.py`` over a
raw socket so an aiohttp upgrade that moves them fails loudly: ``BaseRunner._make_server``,
``Server._kwargs``/``Server._loop`` and ``BaseProtocol._parser``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.helpers import DEFAULT_CHUNK_SIZE
from aiohttp.http_parser import HttpRequestParserPy
from aiohttp.web_protocol import MAX_MSG_QUEUE_SIZE, RequestHandler, RequestPayloadError

__all__ = ["XgetAppRunner"]


class _AnyMethodRequestHandler(RequestHandler):
    """A RequestHandler that parses requests with the pure-Python parser (any method token)."""

    def __init__(self, manager: web.Server, *, loop: asyncio.AbstractEventLoop, **kwargs: Any):
        super().__init__(manager, loop=loop, **kwargs)
        self._parser = HttpRequestParserPy(
            self,
            loop,
            kwargs.get("read_bufsize", DEFAULT_CHUNK_SIZE),
            max_line_size=self.max_line_size,
            max_field_size=self.max_field_size,
            max_headers=self.max_headers,
            payload_exception=RequestPayloadError,
            auto_decompress=kwargs.get("auto_decompress", True),
            max_msg_queue_size=MAX_MSG_QUEUE_SIZE,
        )


class _AnyMethodServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _AnyMethodRequestHandler(self, loop=self._loop, **self._kwargs)


class XgetAppRunner(web.AppRunner):
    """An AppRunner whose connections accept any method token, ``XGET`` included."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _AnyMethodServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )
