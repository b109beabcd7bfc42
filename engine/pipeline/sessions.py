"""The two HTTP clients of a run: an aiohttp session for the API, and the storage pool."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio

from engine.errors import UsageError
from engine.settings import Settings
from engine.transfer.http1 import StorageHttp
from engine.transfer.proxies import Proxies, ProxyConfigError

__all__ = ["open_sessions"]


@asynccontextmanager
async def open_sessions(
    settings: Settings,
) -> AsyncIterator[tuple[aiohttp.ClientSession, StorageHttp]]:
    """An aiohttp session for the API, and the storage connection pool: separate, so downloads
    never queue the API behind them; the pool carries the per-host limit, segments included.
    Both go through the proxies the environment names (one rule: engine.transfer.proxies)."""
    limits = settings.limits
    t = settings.transfer
    try:
        proxies = Proxies.from_environment()
    except ProxyConfigError as exc:
        raise UsageError(str(exc)) from None
    with warnings.catch_warnings():
        # aiohttp 3.14 deprecates a session-wide proxy_auth (for proxy_headers on every call);
        # it works until aiohttp 4, which pyproject.toml excludes.
        warnings.simplefilter("ignore", DeprecationWarning)
        api = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=16, limit_per_host=8, enable_cleanup_closed=True),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=t.timeouts.connect),
            **_api_proxy(proxies, settings.api_url),
        )
    storage = StorageHttp(
        limit=limits.concurrency * max(1, t.segments // 2) + t.segments,
        limit_per_host=limits.per_host,
        connect_timeout=t.timeouts.connect,
        proxies=proxies,
    )
    try:
        yield api, storage
    finally:
        storage.close()
        with anyio.CancelScope(shield=True):
            await api.close()


def _api_proxy(proxies: Proxies, api_url: str) -> dict[str, Any]:
    """The API session's proxy arguments. Not ``trust_env=True``: that also reads ~/.netrc,
    and a netrc entry for the API's host (or a ``default`` one) makes aiohttp refuse our own
    ``Authorization`` header with a ValueError. The credentials go apart from the URL, which
    aiohttp quotes in its error messages."""
    proxy = proxies.for_full_url(api_url)
    if proxy is None:
        return {}
    if proxy.credentials is None:
        return {"proxy": proxy.url}
    return {"proxy": proxy.url, "proxy_auth": aiohttp.BasicAuth(*proxy.credentials)}
