"""The request target of a URL: the origin parsed once per pool, the rest split per request.

:meth:`StorageHttp._target` reuses an origin (host, port, proxy) it parsed before and splits the
rest itself; whatever the URL, the outcome must be :func:`urllib.parse.urlsplit`'s (through
``_split``): the same origin and request target, byte for byte, or the same refusal.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.transfer.http1 import StorageHttp, _split
from engine.transfer.proxies import Proxies

# What URLs carry: separators, escapes, non-ASCII letters; and, now and then, one thing they
# should not: a space, a control, a non-printable code point.
PIECE = st.text(alphabet=st.sampled_from(list("aZ09-._~/?#&=%+:@[]éЖ")), max_size=12)
ODD = st.sampled_from(
    ["", "", "", "", "", "", "", "", " ", "\t", "\r", "\n", "\0", "\x7f", "\u2028", "\u00a0"]
)
SCHEMES = st.sampled_from(["http", "https", "HTTP", "Https", "ftp", "", "h ttp"])
HOSTS = st.sampled_from(
    ["127.0.0.1", "example.com", "EXAMPLE.com", "[::1]", "[fe80::1]", "", "bad host", "é.fr"]
)
PORTS = st.sampled_from(["", ":80", ":443", ":8080", ":0", ":99999", ":x", ":"])


@st.composite
def urls(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=40))
    userinfo = draw(st.sampled_from(["", "user@", "u:p@"]))
    # Mostly where a path begins; sometimes a query, a fragment or more netloc right away.
    lead = draw(st.sampled_from(["/", "/", "/", "?", "#", ""]))
    rest = lead + draw(PIECE) + draw(PIECE) + draw(PIECE)
    at = draw(st.integers(0, len(rest)))
    rest = rest[:at] + draw(ODD) + rest[at:]
    return f"{draw(SCHEMES)}://{userinfo}{draw(HOSTS)}{draw(PORTS)}{rest}"


def _outcome(fn: object, url: str) -> tuple[str, object]:
    try:
        result = fn(url)  # type: ignore[operator]
    except ValueError as exc:
        return ("refused", type(exc))
    if isinstance(result, tuple):
        scheme, host, port, target = result
        return ("ok", ((scheme, host, port), target))
    return ("ok", (result.origin.key, result.request_target))


@given(st.lists(urls(), min_size=1, max_size=6))
def test_a_url_splits_as_urlsplit_reads_it(batch: list[str]) -> None:
    pool = StorageHttp(proxies=Proxies.none())
    # Twice over: the first time may parse an origin, the second reuses what was kept.
    for url in batch + batch:
        ours = _outcome(pool._target, url)
        reference = _outcome(_split, url)
        if reference[0] == "refused":
            assert ours[0] == "refused", url
        else:
            assert ours == reference, url


def test_urls_of_one_origin_share_it() -> None:
    pool = StorageHttp(proxies=Proxies.none())
    a = pool._target("http://127.0.0.1:8080/objects/a.bin?md5=x&expires=1")
    b = pool._target("http://127.0.0.1:8080/objects/b.bin?md5=y&expires=2#frag")
    assert a.origin is b.origin
    assert b.request_target == "/objects/b.bin?md5=y&expires=2"
    assert pool._target("http://127.0.0.1:8080").request_target == "/"
