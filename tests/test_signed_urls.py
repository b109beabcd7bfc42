"""engine.signed_urls: expiry of every signing style, redaction, SignedUrl."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from urllib.parse import quote, unquote, urlencode

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from engine.emulator.nginx import secure_link_url
from engine.emulator.signing import Signer
from engine.signed_urls import (
    LIFE_SHARE,
    REDACTED,
    SignedUrl,
    expires_at,
    redact,
    scrub,
    style_of,
    usable,
)

T0 = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
EPOCH0 = T0.timestamp()

# Instants from 2001 to 2099, whole seconds (every style has one-second resolution).
instants = st.integers(min_value=978307200, max_value=4070908800).map(float)
lifetimes = st.integers(min_value=0, max_value=7 * 86400)


def _amz(epoch: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


def s3_url(signed: float, lifetime: int, signature: str = "deadbeef") -> str:
    query = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": "AKIAEXAMPLE/20261126/us-east-1/s3/aws4_request",
        "X-Amz-Date": _amz(signed),
        "X-Amz-Expires": str(lifetime),
        "X-Amz-SignedHeaders": "host",
        "X-Amz-Security-Token": "session-token-value",
        "X-Amz-Signature": signature,
    }
    return "https://bucket.s3.amazonaws.com/a/b.jpg?" + urlencode(query, quote_via=quote)


def gcs_url(signed: float, lifetime: int, signature: str = "cafebabe") -> str:
    query = {
        "X-Goog-Algorithm": "GOOG4-RSA-SHA256",
        "X-Goog-Credential": "sa@p.iam.gserviceaccount.com/20261126/auto/storage/goog4_request",
        "X-Goog-Date": _amz(signed),
        "X-Goog-Expires": str(lifetime),
        "X-Goog-SignedHeaders": "host",
        "X-Goog-Signature": signature,
    }
    return "https://storage.googleapis.com/bkt/o.png?" + urlencode(query, quote_via=quote)


def azure_url(se: str, signature: str = "c2lnbmF0dXJl") -> str:
    query = {"sv": "2023-11-03", "sr": "b", "sp": "r", "se": se, "sig": signature}
    return "https://acct.blob.core.windows.net/c/o.jpg?" + urlencode(query, quote_via=quote)


# Secret-looking values that cannot occur by chance in the harmless parts of the test URLs.
secrets_ = st.text(alphabet="ghijklmnopqrstuvwxyz0123456789+/=", min_size=8, max_size=64).filter(
    lambda v: v not in s3_url(EPOCH0, 60, "") + gcs_url(EPOCH0, 60, "") and v.upper() != v
)


# ---- expiry, table --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (s3_url(EPOCH0, 3600), EPOCH0 + 3600),
        (gcs_url(EPOCH0, 900), EPOCH0 + 900),
        (azure_url("2026-11-26T13:00:00Z"), EPOCH0 + 3600),
        (azure_url("2026-11-26T13:00Z"), EPOCH0 + 3600),
        (azure_url("2026-11-26T13:00:00.1234567Z"), EPOCH0 + 3600.123456),
        (azure_url("2026-11-26T14:00:00+01:00"), EPOCH0 + 3600),
        (azure_url("2026-11-27"), EPOCH0 + 12 * 3600),
        ("http://127.0.0.1:8080/objects/a.jpg?md5=AbC-_x&expires=1764162000", 1764162000.0),
        # Legacy S3 SigV2 / GCS V2.
        (
            "https://b.s3.amazonaws.com/k?AWSAccessKeyId=AKIA&Expires=1764162000&Signature=zz",
            1764162000.0,
        ),
        (
            "https://storage.googleapis.com/b/k?GoogleAccessId=x&Expires=1764162000&Signature=zz",
            1764162000.0,
        ),
    ],
)
def test_expiry_by_style(url: str, expected: float) -> None:
    assert expires_at(url, obtained_at=0.0, unknown_lifetime=60.0) == pytest.approx(expected)


@pytest.mark.parametrize(
    "url",
    [
        "https://cdn.example/a.jpg",
        "https://cdn.example/a.jpg?token=abc",
        s3_url(EPOCH0, 3600).replace("X-Amz-Date=20261126T120000Z", "X-Amz-Date=yesterday"),
        s3_url(EPOCH0, 3600).replace("X-Amz-Expires=3600", "X-Amz-Expires=-5"),
        s3_url(EPOCH0, 3600).replace("X-Amz-Expires=3600", "X-Amz-Expires=99999999999"),
        gcs_url(EPOCH0, 60).replace("X-Goog-Date=", "X-Goog-Date=2026"),
        azure_url("soon"),
        azure_url("2026-13-45T99:00:00Z"),
        "http://h/objects/a?md5=x&expires=notanumber",
        "not a url at all",
        "",
    ],
)
def test_unknown_or_unreadable_expiry_uses_the_configured_lifetime(url: str) -> None:
    assert expires_at(url, obtained_at=1000.0, unknown_lifetime=300.0) == 1300.0


def test_styles() -> None:
    assert style_of(s3_url(EPOCH0, 1)) == "s3"
    assert style_of(gcs_url(EPOCH0, 1)) == "gcs"
    assert style_of(azure_url("2026-11-27")) == "azure"
    assert style_of("http://h/objects/a?md5=x&expires=1") == "nginx"
    assert style_of("http://h/a?x=1") == "unknown"
    assert style_of("http://h/a?x-amz-date=20261126T120000Z&x-amz-expires=5") == "s3"


@pytest.mark.parametrize("style", ["s3", "gcs", "azure"])
@given(signed=instants, lifetime=lifetimes)
def test_emulator_urls_parse_to_the_emulators_own_expiry(
    style: str, signed: float, lifetime: int
) -> None:
    signer = Signer(b"k" * 32, base_url="http://127.0.0.1:1")
    url = signer.sign(style, "lake/obj.jpg", signed, lifetime)
    query = dict(part.split("=", 1) for part in url.split("?", 1)[1].split("&"))
    decoded = {k: unquote(v) for k, v in query.items()}
    assert style_of(url) == style
    got = expires_at(url, obtained_at=0.0, unknown_lifetime=1.0)
    assert got == Signer.expiry(style, decoded)


@given(signed=instants, lifetime=lifetimes)
def test_s3_and_gcs_expiry_is_date_plus_lifetime(signed: float, lifetime: int) -> None:
    assert expires_at(s3_url(signed, lifetime), obtained_at=0, unknown_lifetime=1) == (
        signed + lifetime
    )
    assert expires_at(gcs_url(signed, lifetime), obtained_at=0, unknown_lifetime=1) == (
        signed + lifetime
    )


@given(end=instants, fraction=st.integers(0, 999999), with_seconds=st.booleans())
def test_azure_expiry_roundtrip(end: float, fraction: int, with_seconds: bool) -> None:
    when = datetime.fromtimestamp(end, UTC)
    if with_seconds:
        text = when.strftime("%Y-%m-%dT%H:%M:%S") + f".{fraction:06d}Z"
        expected = end + fraction / 1e6
    else:
        text = when.strftime("%Y-%m-%dT%H:%MZ")
        expected = end - when.second
    assert expires_at(azure_url(text), obtained_at=0, unknown_lifetime=1) == pytest.approx(expected)


@given(expires=st.integers(0, 2**33))
def test_nginx_expiry(expires: int) -> None:
    url = secure_link_url("http://127.0.0.1:9", "a b/ü.jpg", "secret-123", expires)
    assert style_of(url) == "nginx"
    got = expires_at(url, obtained_at=float(expires), unknown_lifetime=7.0)
    assert got == float(expires)


@given(url=st.text(max_size=300), obtained=st.floats(0, 4e9), lifetime=st.floats(1, 1e6))
def test_expiry_never_raises_and_is_a_number(url: str, obtained: float, lifetime: float) -> None:
    got = expires_at(url, obtained_at=obtained, unknown_lifetime=lifetime)
    assert math.isfinite(got)


# ---- redaction --------------------------------------------------------------------------------


@given(signature=secrets_, token=secrets_)
def test_redact_drops_every_secret(signature: str, token: str) -> None:
    url = s3_url(EPOCH0, 60, signature=signature).replace("session-token-value", quote(token))
    shown = redact(url)
    assert quote(signature, safe="") not in shown and signature not in shown
    assert token not in shown
    assert "AKIAEXAMPLE" not in shown
    assert shown.startswith("https://bucket.s3.amazonaws.com/a/b.jpg?")
    assert "X-Amz-Date=20261126T120000Z" in shown  # harmless values stay, for debugging
    assert f"X-Amz-Signature={REDACTED}" in shown


# The parameters redact() shows; every other one, known or not, must be hidden.
_SHOWN = {
    "x-amz-algorithm", "x-amz-date", "x-amz-expires", "x-amz-signedheaders", "x-goog-algorithm",
    "x-goog-date", "x-goog-expires", "x-goog-signedheaders", "expires", "sv", "ss", "srt", "sp",
    "st", "se", "spr", "sr",
}  # fmt: skip


@given(
    keys=st.lists(
        st.text(min_size=1, max_size=12).filter(lambda k: k.strip().lower() not in _SHOWN),
        min_size=1,
        max_size=5,
    ),
    value=secrets_,
)
def test_redact_hides_unknown_parameters_too(keys: list[str], value: str) -> None:
    assume(all(value not in key for key in keys))
    assume(REDACTED not in value and value not in REDACTED)
    url = "https://h.example/p?" + urlencode(dict.fromkeys(keys, value))
    shown = redact(url)
    assert value not in shown
    assert quote(value, safe="") not in shown


def test_redact_userinfo_fragment_and_garbage() -> None:
    assert redact("https://user:pw@h.example:8443/p?sig=abc#frag") == (
        f"https://h.example:8443/p?sig={REDACTED}"
    )
    assert redact("http://[::1]:80/x") == "http://[::1]:80/x"
    assert redact("http://[::1") == "<unparseable URL>"
    assert "c2lnbmF0dXJl" not in redact(azure_url("2026-11-27"))


@given(text=st.text(max_size=100))
def test_redact_never_raises(text: str) -> None:
    assert isinstance(redact(text), str)


def test_scrub_hides_a_url_quoted_in_a_library_message() -> None:
    url = s3_url(EPOCH0, 60, signature="0123456789abcdef")
    message = f"Cannot connect to {url}: refused (sig 0123456789abcdef)"
    cleaned = scrub(message, url)
    assert "0123456789abcdef" not in cleaned
    assert "session-token-value" not in cleaned


def test_signed_url_repr_is_redacted_and_valid_for_counts_down() -> None:
    url = s3_url(EPOCH0, 3600, signature="topsecretsignature")
    signed = SignedUrl.parse(url, obtained_at=EPOCH0, unknown_lifetime=5.0)
    assert signed.expires_at == EPOCH0 + 3600
    assert signed.valid_for(EPOCH0 + 600) == 3000
    assert signed.valid_for(EPOCH0 + 4000) < 0
    assert "topsecretsignature" not in repr(signed)
    assert "topsecretsignature" not in str(signed)
    assert signed.style == "s3"
    unknown = SignedUrl.parse("https://cdn/x?t=1", obtained_at=100.0, unknown_lifetime=5.0)
    assert unknown.expires_at == 105.0


def test_redact_keeps_a_plain_url() -> None:
    assert redact("https://h/a/b.jpg") == "https://h/a/b.jpg"
    assert redact("https://h/a b.jpg") == "https://h/a b.jpg"


# -- the one freshness rule ---------------------------------------------------------------------

_times = st.floats(min_value=0, max_value=1e9, allow_nan=False)
_lifetimes = st.floats(min_value=1e-3, max_value=7 * 86400.0, allow_nan=False)
_margins = st.floats(min_value=0, max_value=3600.0, allow_nan=False)
_ages = st.floats(min_value=0, max_value=8 * 86400.0, allow_nan=False)


def _url(obtained: float, lifetime: float) -> SignedUrl:
    return SignedUrl("https://s/o?X-Amz-Signature=x", obtained, obtained + lifetime)


@given(_times, _lifetimes, _margins)
def test_a_url_just_obtained_is_usable_however_short_lived(
    obtained: float, lifetime: float, margin: float
) -> None:
    assert usable(_url(obtained, lifetime), obtained, margin)


@given(_times, _lifetimes, _margins, _ages)
def test_a_long_lived_url_is_usable_while_it_has_the_margin_left(
    obtained: float, lifetime: float, margin: float, age: float
) -> None:
    assume(lifetime >= margin / LIFE_SHARE)
    url = _url(obtained, lifetime)
    now = obtained + age
    assert usable(url, now, margin) == (url.valid_for(now) >= margin)


@given(_times, st.floats(0.001, 0.999), st.floats(0.01, 3600.0), _ages)
def test_a_short_lived_url_is_usable_for_its_share_of_its_life(
    obtained: float, short: float, margin: float, age: float
) -> None:
    lifetime = short * margin / LIFE_SHARE  # shorter than the margin asks for
    url = _url(obtained, lifetime)
    now = obtained + age
    assert usable(url, now, margin) == (url.valid_for(now) >= LIFE_SHARE * lifetime)


@given(_times, _lifetimes, _margins, _ages, _ages)
def test_time_only_makes_a_url_less_usable(
    obtained: float, lifetime: float, margin: float, age: float, later: float
) -> None:
    url = _url(obtained, lifetime)
    if usable(url, obtained + age + later, margin):
        assert usable(url, obtained + age, margin)


@given(_times, _lifetimes, _margins, _ages)
def test_a_usable_url_never_has_less_than_its_reserve_left(
    obtained: float, lifetime: float, margin: float, age: float
) -> None:
    url = _url(obtained, lifetime)
    now = obtained + age
    if usable(url, now, margin):
        assert url.valid_for(now) >= min(margin, LIFE_SHARE * lifetime) >= 0
        assert margin == 0 or url.valid_for(now) > 0
