"""A misbehaving platform API of our own: a proxy in front of an emulator's API.

Every request to the proxy goes to the emulator unchanged, unless the test's *twist* answers it
instead; a twist can also ask the emulator first and bend its answer::

    async def twist(request: web.Request, api: Upstream) -> web.StreamResponse | None:
        if request.path == "/api/home/ping":
            return web.Response(status=404)
        return None                                   # everything else: the emulator's answer

    with HostileApi(twist, assets=20) as hostile:     # emulator and proxy on one thread
        hostile.api_url                               # give this to the client
        hostile.emu                                   # the emulator: expected contents, counters

Both servers bind 127.0.0.1 on a free port. The emulator's signed URLs point at the emulator
itself, so storage is never proxied. The proxy accepts ``XGET`` (the emulator's runner).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

from engine.emulator import Emulator
from engine.emulator.xget import XgetAppRunner

__all__ = ["HostileApi", "Twist", "Upstream", "json_response"]

_FORWARDED = ("Authorization", "Content-Type", "X-Picsellia-Organization", "User-Agent")


class Upstream:
    """The emulator behind the proxy, as a twist sees it."""

    def __init__(self, emu: Emulator, session: aiohttp.ClientSession, notes: list[Any]) -> None:
        self.emu = emu
        self.notes = notes  # what twists did, for the test to check afterwards
        self._session = session

    async def fetch(self, request: web.Request, *, path_qs: str | None = None) -> tuple[int, bytes]:
        """The emulator's status and (decoded) body for this request."""
        headers = {k: request.headers[k] for k in _FORWARDED if k in request.headers}
        async with self._session.request(
            request.method,
            self.emu.api_url + (path_qs or request.path_qs),
            headers=headers,
            data=await request.read(),
        ) as answer:
            return answer.status, await answer.read()

    async def json(self, request: web.Request, *, path_qs: str | None = None) -> Any:
        status, body = await self.fetch(request, path_qs=path_qs)
        assert status == 200, (status, body[:200])
        return json.loads(body)


Twist = Callable[[web.Request, Upstream], Awaitable[web.StreamResponse | None]]


def json_response(value: Any, *, text: str | None = None, status: int = 200) -> web.Response:
    """A JSON answer; ``text`` gives the body verbatim (JSON Python cannot produce)."""
    body = text if text is not None else json.dumps(value)
    return web.Response(status=status, text=body, content_type="application/json")


class HostileApi:
    """An emulator, and a proxy in front of its API that runs ``twist`` on every request."""

    def __init__(self, twist: Twist, **emulator_options: Any) -> None:
        self.emu = Emulator(**emulator_options)
        self._twist = twist
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.api_url = ""
        self.errors: list[BaseException] = []  # a twist that raised (a bug in the test)
        self.notes: list[Any] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        upstream = Upstream(self.emu, self._session, self.notes)
        try:
            answer = await self._twist(request, upstream)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:
            self.errors.append(exc)
            raise
        if answer is not None:
            return answer
        status, body = await upstream.fetch(request)
        return web.Response(status=status, body=body, content_type="application/json")

    async def _start(self) -> None:
        await self.emu.start()
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = XgetAppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.api_url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        await self.emu.close()

    def __enter__(self) -> HostileApi:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop.close()
