"""The proxy rule from the environment: the standard library's reading of HTTP(S)_PROXY and
NO_PROXY, credentials kept out of every message, and what the storage client sends a proxy."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from engine.transfer.http1 import ProxyError, StorageHttp
from engine.transfer.proxies import Proxies, ProxyConfigError
from tests.tinyproxy import Tinyproxy, running_tinyproxy
from tests.transfer.test_http1 import ok, read_all, serve
from tests.transfer.test_http1_strict import tls_serve


def test_lower_case_wins_and_no_proxy_bypasses_hosts_and_their_subdomains(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://upper:1")
    monkeypatch.setenv("https_proxy", "http://lower:2")
    monkeypatch.setenv("HTTP_PROXY", "plain:3128")  # no scheme: http://, as in curl
    monkeypatch.setenv("NO_PROXY", "internal.example, .corp.example,10.0.0.1")
    proxies = Proxies.from_environment()
    https = proxies.for_url("https", "storage.example")
    assert https is not None and (https.host, https.port) == ("lower", 2)
    plain = proxies.for_url("http", "storage.example")
    assert plain is not None and (plain.host, plain.port) == ("plain", 3128)
    for host in ("internal.example", "a.internal.example", "x.corp.example", "10.0.0.1"):
        assert proxies.for_url("https", host) is None, host
    assert proxies.for_url("https", "notinternal.example") is not None
    via = proxies.for_full_url("https://storage.example/x?sig=1")
    assert via is not None and via.url == "http://lower:2"
    assert proxies.for_full_url("https://internal.example/x") is None


def test_no_proxy_star_bypasses_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://p:1")
    monkeypatch.setenv("NO_PROXY", "*")
    assert Proxies.from_environment().for_url("https", "anything") is None


def test_without_variables_nothing_is_proxied() -> None:
    proxies = Proxies.from_environment()
    assert not proxies
    assert proxies.for_url("https", "storage.example") is None


def test_credentials_become_basic_auth_and_never_appear_in_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://al%40ice:pa%3Ass@proxy.example:8080")
    proxy = Proxies.from_environment().for_url("https", "storage.example")
    assert proxy is not None
    assert proxy.authorization == "Basic " + base64.b64encode(b"al@ice:pa:ss").decode()
    assert proxy.credentials == ("al@ice", "pa:ss")
    assert str(proxy) == "proxy.example:8080"
    assert proxy.url == "http://proxy.example:8080"
    shown = f"{proxy} {proxy!r} {proxy.url}"
    for secret in ("al@ice", "al%40ice", "pa:ss", "pa%3Ass", proxy.authorization):
        assert secret not in shown


@pytest.mark.parametrize(
    "value", ["https://proxy.example:443", "socks5://proxy.example:1080", "http://:8080"]
)
def test_an_unusable_proxy_is_a_clear_error_without_credentials(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", value.replace("://", "://user:hunter2@", 1))
    with pytest.raises(ProxyConfigError) as caught:
        Proxies.from_environment()
    assert "https_proxy" in str(caught.value)
    assert "hunter2" not in str(caught.value)


async def test_a_plain_http_request_goes_to_the_proxy_in_absolute_form_with_its_credentials():
    seen: list[bytes] = []

    def proxy(n: int, request: bytes) -> list[bytes | float | None]:
        seen.append(request)
        return [ok(b"via proxy")]

    async with serve(proxy) as proxy_url:
        host, port = proxy_url.removeprefix("http://").split(":")
        proxies = Proxies({"http": f"http://u:p@{host}:{port}"})
        http = StorageHttp(proxies=proxies)
        response = await http.get("http://storage.invalid:9/b/o?X-Sig=a%2F", {}, read_timeout=5)
        assert await read_all(response) == b"via proxy"
        http.close()
    lines = seen[0].decode().split("\r\n")
    assert lines[0] == "GET http://storage.invalid:9/b/o?X-Sig=a%2F HTTP/1.1"
    assert "Host: storage.invalid:9" in lines
    assert f"Proxy-Authorization: Basic {base64.b64encode(b'u:p').decode()}" in lines


async def test_a_proxy_that_refuses_the_tunnel_is_a_proxy_error_naming_no_credentials():
    refused = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"
    async with serve(lambda n, req: [refused]) as proxy_url:
        host, port = proxy_url.removeprefix("http://").split(":")
        http = StorageHttp(proxies=Proxies({"https": f"http://u:hunter2@{host}:{port}"}))
        with pytest.raises(ProxyError) as caught:
            await http.get("https://storage.invalid/o", {}, read_timeout=5)
        http.close()
    assert caught.value.status == 407
    assert "hunter2" not in str(caught.value) and "407" in str(caught.value)


async def test_no_proxy_sends_the_request_straight_to_the_host():
    async with serve(lambda n, req: [ok(b"direct")]) as base:
        http = StorageHttp(
            proxies=Proxies({"http": "http://127.0.0.1:9", "no": "127.0.0.1"})  # port 9: nobody
        )
        response = await asyncio.wait_for(http.get(f"{base}/x", {}, read_timeout=5), 10)
        assert await read_all(response) == b"direct"
        http.close()


@pytest.fixture
def tinyproxy(tmp_path: Path) -> Iterator[Tinyproxy]:
    with running_tinyproxy(tmp_path) as proxy:
        yield proxy


async def test_https_storage_through_a_real_proxy_uses_a_tunnel_on_both_loops(
    tinyproxy: Tinyproxy,
) -> None:
    """CONNECT, then TLS inside the tunnel (``loop.start_tls``), then keep-alive reuse of it."""
    ca = trustme.CA()
    client = ssl.create_default_context()
    ca.configure_trust(client)
    async with tls_serve(ok(b"tunnelled"), ca, answers=2) as base:
        port = base.rsplit(":", 1)[1]
        http = StorageHttp(
            ssl_context=client, proxies=Proxies({"https": tinyproxy.url(credentials=True)})
        )
        for _ in range(2):
            response = await http.get(f"{base}/o?sig=x", {}, read_timeout=5)
            assert await read_all(response) == b"tunnelled"
        assert http.connections_opened == 1
        http.close()
    assert tinyproxy.requests() == [f"CONNECT 127.0.0.1:{port} HTTP/1.1"]
