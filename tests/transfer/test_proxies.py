"""The proxy rule from the environment: the standard library's reading of HTTP(S)_PROXY and
NO_PROXY, and credentials kept out of every message."""

from __future__ import annotations

import base64

import pytest

from engine.transfer.proxies import Proxies, ProxyConfigError


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
