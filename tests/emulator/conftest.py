"""Fixtures of the emulator's tests: a small emulator on port 0, a client session, a clock."""

from __future__ import annotations

import hashlib
import http.client
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from engine.emulator import Emulator


def http_get(url: str, token: str | None = None) -> tuple[int, bytes]:
    """A blocking GET (for tests of synchronous callers): status and body."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request("GET", target, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def md5hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class FakeClock:
    """A clock tests move by hand, so URLs expire without sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Api:
    """A thin JSON client of the emulator's API."""

    def __init__(self, emu: Emulator, session: aiohttp.ClientSession) -> None:
        self.emu = emu
        self.session = session
        self.headers = {"Authorization": f"Bearer {emu.token}"}

    @property
    def dv(self) -> str:
        return f"/api/dataset/version/{self.emu.dataset_version_id}"

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        async with self.session.request(
            method,
            self.emu.api_url + path,
            params=params,
            json=body,
            headers=self.headers if headers is None else headers,
        ) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text

    async def get(self, path: str, **params: Any) -> tuple[int, Any]:
        return await self.call("GET", path, params=params or None)

    async def ok(self, path: str, **params: Any) -> Any:
        status, body = await self.get(path, **params)
        assert status == 200, (status, body)
        return body

    async def xget(self, path: str, body: Any) -> tuple[int, Any]:
        return await self.call("XGET", path, body=body)

    async def list_all(self, limit: int = 7, **params: Any) -> list[dict[str, Any]]:
        """Every asset of the version through cursor pagination."""
        items: list[dict[str, Any]] = []
        page = await self.ok(f"{self.dv}/assets", limit=limit, **params)
        items += page["items"]
        while page["next_cursor"]:
            page = await self.ok(
                f"{self.dv}/assets", limit=limit, cursor=page["next_cursor"], **params
            )
            items += page["items"]
        return items


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def emu(clock: FakeClock) -> AsyncIterator[Emulator]:
    async with Emulator(assets=60, seed=7, clock=clock, signing="mixed") as emulator:
        yield emulator


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def api(emu: Emulator, session: aiohttp.ClientSession) -> Api:
    return Api(emu, session)
