"""Forward proxies from the environment: ``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``.

One rule for both clients (the API's aiohttp session and the storage client,
:mod:`engine.transfer.http1`), and it is the standard library's: the table comes from
:func:`urllib.request.getproxies_environment` and the bypass from
:func:`urllib.request.proxy_bypass_environment`, the convention curl, requests and aiohttp
follow. So: lower-case names win over upper-case ones; ``https_proxy`` serves ``https://`` URLs
and ``http_proxy`` ``http://`` ones; ``NO_PROXY`` is a comma-separated list of host names and
domain suffixes (``example.com`` also covers ``a.example.com``; ``*`` covers everything; no
CIDR ranges); in a CGI process ``HTTP_PROXY`` in capitals is ignored (httpoxy).

A proxy URL without a scheme means ``http://`` (as in curl). Only ``http://`` proxies are
supported: the storage client speaks plain HTTP to the proxy and tunnels TLS through
``CONNECT``. Credentials in the proxy URL (``http://user:pass@proxy:3128``) become a
``Proxy-Authorization: Basic`` header sent to the proxy only; they never appear in messages
(:class:`Proxy` prints as ``host:port``, and its ``url`` has no credentials).
"""

from __future__ import annotations

import base64
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["Proxies", "Proxy", "ProxyConfigError"]

# Documented in urllib.request's source, not in typeshed; it takes the table we read once, so
# a proxy decision never depends on when it is asked.
_bypass: Callable[[str, Mapping[str, str]], bool] = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]

_SCHEMES = ("http", "https")


class ProxyConfigError(ValueError):
    """A proxy variable holds something we cannot use (the message names no credentials)."""


@dataclass(frozen=True, slots=True)
class Proxy:
    """Where to send a request instead of its host, and how to authenticate there."""

    host: str
    port: int
    url: str  # scheme, host and port only: safe to show (aiohttp quotes it in errors)
    authorization: str | None = field(default=None, repr=False)
    credentials: tuple[str, str] | None = field(default=None, repr=False)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _parse(variable: str, value: str) -> Proxy:
    url = value.strip()
    if "://" not in url:
        url = "http://" + url
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or 80
    except ValueError:
        raise ProxyConfigError(f"{variable}: not a proxy URL") from None
    if parts.scheme.lower() != "http":
        raise ProxyConfigError(
            f"{variable}: only http:// proxies are supported, not {parts.scheme}://"
        )
    if not parts.hostname:
        raise ProxyConfigError(f"{variable}: the proxy URL has no host")
    authorization = credentials = None
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        credentials = (user, password)
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        authorization = f"Basic {token}"
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return Proxy(parts.hostname, port, f"http://{host}:{port}", authorization, credentials)


class Proxies:
    """The proxy table, read once; :meth:`for_url` answers per target host."""

    def __init__(self, table: Mapping[str, str]) -> None:
        self._table = dict(table)
        self._by_scheme: dict[str, Proxy] = {}
        for scheme in _SCHEMES:
            value = self._table.get(scheme)
            if value:
                self._by_scheme[scheme] = _parse(f"{scheme}_proxy", value)

    @classmethod
    def from_environment(cls) -> Proxies:
        """The proxies the environment names now; raises :class:`ProxyConfigError`."""
        return cls(urllib.request.getproxies_environment())

    @classmethod
    def none(cls) -> Proxies:
        return cls({})

    def __bool__(self) -> bool:
        return bool(self._by_scheme)

    def for_url(self, scheme: str, host: str) -> Proxy | None:
        """The proxy for a request to ``scheme://host``, or None to connect directly."""
        proxy = self._by_scheme.get(scheme)
        if proxy is None or _bypass(host, self._table):
            return None
        return proxy

    def for_full_url(self, url: str) -> Proxy | None:
        """:meth:`for_url` for a whole URL."""
        parts = urllib.parse.urlsplit(url)
        return self.for_url(parts.scheme.lower(), parts.hostname or "")
