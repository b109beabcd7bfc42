"""Signed storage URLs: when they expire, and how to show them without their secrets.

Pure code, no I/O. A signed URL is opaque to its holder except for its expiry, which every
real signing style writes in its query string:

=========  ==========================================================  ======================
style      expiry                                                      recognised by
=========  ==========================================================  ======================
``s3``     ``X-Amz-Date`` (``YYYYMMDDTHHMMSSZ``) + ``X-Amz-Expires``   ``X-Amz-*`` parameters
           (legacy SigV2: ``Expires``, epoch seconds)                  ``AWSAccessKeyId``
``gcs``    ``X-Goog-Date`` + ``X-Goog-Expires``                        ``X-Goog-*`` parameters
           (legacy V2: ``Expires``, epoch seconds)                     ``GoogleAccessId``
``azure``  ``se`` (ISO 8601 UTC end time)                              ``sig`` + ``se``/``sv``
``nginx``  ``expires`` (epoch seconds), ``secure_link`` module         ``md5`` + ``expires``
=========  ==========================================================  ======================

A URL of another style, or one whose expiry cannot be read, is treated as valid for a configured
lifetime from when it was obtained: guessing short is safe (an early refresh costs one API call),
guessing long is not (a request fails and is retried).

Freshness, the one rule (:func:`usable`): a URL is used for a request about to start while the
life it has left is at least ``min(margin, LIFE_SHARE x its lifetime)``, its lifetime being what
it had left when it was obtained. A one-hour URL is refreshed once it has less than the margin
(30 s by default) left, as always; a URL the platform signs for 10 s is used for its first 5 s
instead of being "stale" from the moment it arrives (which made the prefetcher re-sign its queue
before every download: 159 signings per asset at 10 s). The mirror's batches, the prefetcher's
and each request of the transfer core all ask this one function.

:func:`redact` keeps only the query values known to be harmless (dates, lifetimes, algorithm
names, Azure's permission fields); every other value — signatures, credentials, session tokens
and anything this module does not know — is replaced. Unknown parameters are redacted rather than
kept because a new signing style would otherwise leak its signature into logs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import parse_qsl, quote, urlsplit

__all__ = [
    "LIFE_SHARE",
    "REDACTED",
    "SignedUrl",
    "Style",
    "expires_at",
    "needed_life",
    "redact",
    "scrub",
    "style_of",
    "usable",
]

Style = Literal["s3", "gcs", "azure", "nginx", "unknown"]

REDACTED = "REDACTED"

# The share of a URL's lifetime it must still have for a request to start with it (capped by the
# margin). A half: a URL is used until it has aged as long as it has left, so the reserve kept
# against clock skew and the request's own latency is never smaller than the time it was held.
LIFE_SHARE = 0.5

# S3 SigV4 and GCS V4 grant at most 7 days; a lifetime beyond ten years is garbage, not a promise.
_MAX_LIFETIME = 10 * 365 * 86400

_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")
_INT = re.compile(r"\d{1,12}")
# Azure accepts a date, or a date and time with optional seconds, fraction and "Z"/offset.
_ISO = re.compile(
    r"\d{4}-\d{2}-\d{2}"
    r"(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:\d{2})?)?"
)

# Query parameters whose values are not secret and help when reading a log.
_SAFE_KEYS = frozenset(
    {
        "x-amz-algorithm",
        "x-amz-date",
        "x-amz-expires",
        "x-amz-signedheaders",
        "x-goog-algorithm",
        "x-goog-date",
        "x-goog-expires",
        "x-goog-signedheaders",
        "expires",
        # Azure SAS: version, services, resource types, permissions, start, expiry, protocol,
        # resource; none of them lets anyone forge or reuse the signature.
        "sv",
        "ss",
        "srt",
        "sp",
        "st",
        "se",
        "spr",
        "sr",
    }
)


def _params(url: str) -> dict[str, str]:
    """First value of each query parameter, keys lower-cased (stores differ in case)."""
    try:
        query = urlsplit(url).query
    except ValueError:
        return {}
    out: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        out.setdefault(key.lower(), value)
    return out


def _style(params: dict[str, str]) -> Style:
    if "x-amz-signature" in params or "x-amz-date" in params or "awsaccesskeyid" in params:
        return "s3"
    if "x-goog-signature" in params or "x-goog-date" in params or "googleaccessid" in params:
        return "gcs"
    if "sig" in params and ("se" in params or "sv" in params):
        return "azure"
    if "md5" in params and "expires" in params:
        return "nginx"
    return "unknown"


def style_of(url: str) -> Style:
    """Which signing style ``url`` uses (``"unknown"`` when none is recognised)."""
    return _style(_params(url))


def _amz_expiry(date: str | None, lifetime: str | None) -> float | None:
    if date is None or lifetime is None:
        return None
    if not _AMZ_DATE.fullmatch(date) or not _INT.fullmatch(lifetime):
        return None
    seconds = int(lifetime)
    if seconds > _MAX_LIFETIME:
        return None
    try:
        signed = datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return signed.timestamp() + seconds


def _epoch(value: str | None) -> float | None:
    if value is None or not _INT.fullmatch(value):
        return None
    return float(int(value))


def _iso_expiry(value: str | None) -> float | None:
    if value is None or not _ISO.fullmatch(value):
        return None
    text = value
    # fromisoformat takes at most 6 fraction digits; Azure writes 7.
    if "." in text:
        head, _, rest = text.partition(".")
        digits = re.match(r"\d+", rest)
        assert digits is not None  # guaranteed by _ISO
        text = head + "." + digits.group()[:6].ljust(6, "0") + rest[digits.end() :]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:  # SAS times are UTC by definition
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def expires_at(url: str, *, obtained_at: float, unknown_lifetime: float) -> float:
    """When ``url`` stops being accepted, in epoch seconds.

    Read from the query string for the styles above; otherwise (unknown style, or an expiry that
    does not parse) ``obtained_at + unknown_lifetime``.
    """
    params = _params(url)
    style = _style(params)
    found: float | None = None
    if style == "s3":
        found = _amz_expiry(params.get("x-amz-date"), params.get("x-amz-expires"))
        if found is None and "x-amz-date" not in params:
            found = _epoch(params.get("expires"))
    elif style == "gcs":
        found = _amz_expiry(params.get("x-goog-date"), params.get("x-goog-expires"))
        if found is None and "x-goog-date" not in params:
            found = _epoch(params.get("expires"))
    elif style == "azure":
        found = _iso_expiry(params.get("se"))
    elif style == "nginx":
        found = _epoch(params.get("expires"))
    if found is None:
        return obtained_at + unknown_lifetime
    return found


def redact(url: str) -> str:
    """``url`` with credentials removed: userinfo dropped, every query value not known to be
    harmless replaced by ``REDACTED``, fragment dropped. Never raises."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    head = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else parts.path
    if not parts.query:
        return head
    items = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        shown = value if key.lower() in _SAFE_KEYS else REDACTED
        items.append(f"{quote(key, safe='-_.~')}={quote(shown, safe='-_.~:')}")
    return head + "?" + "&".join(items)


def _secrets_of(url: str) -> set[str]:
    found: set[str] = set()
    try:
        parts = urlsplit(url)
        raw_pairs = [p.split("=", 1) for p in parts.query.split("&") if "=" in p]
        userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    except ValueError:
        return found
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key.lower() not in _SAFE_KEYS and value:
            found.add(value)
    for key, value in raw_pairs:  # the encoded spelling may show up too
        if key.lower() not in _SAFE_KEYS and value:
            found.add(value)
    if userinfo:
        found.add(userinfo)
    return found


def scrub(text: str, *urls: str) -> str:
    """``text`` (e.g. a library's error message) with each URL and each secret value of those
    URLs replaced, for messages that might quote a URL without our consent."""
    for url in urls:
        if url and url in text:
            text = text.replace(url, redact(url))
        for secret in sorted(_secrets_of(url), key=len, reverse=True):
            if len(secret) >= 4 and secret in text:
                text = text.replace(secret, REDACTED)
    return text


@dataclass(frozen=True, slots=True, repr=False)
class SignedUrl:
    """A signed URL with when it was obtained and when it expires (both epoch seconds).

    ``repr`` is redacted so that a SignedUrl in a log line or a traceback leaks nothing.
    """

    url: str
    obtained_at: float
    expires_at: float

    def valid_for(self, now: float) -> float:
        """Seconds left before expiry at ``now`` (negative once expired)."""
        return self.expires_at - now

    @property
    def lifetime(self) -> float:
        """The life it had left when it was obtained (seconds)."""
        return self.expires_at - self.obtained_at

    @classmethod
    def parse(cls, url: str, obtained_at: float, unknown_lifetime: float) -> SignedUrl:
        when = expires_at(url, obtained_at=obtained_at, unknown_lifetime=unknown_lifetime)
        return cls(url=url, obtained_at=obtained_at, expires_at=when)

    @property
    def style(self) -> Style:
        return style_of(self.url)

    def __repr__(self) -> str:
        return (
            f"SignedUrl({redact(self.url)!r}, obtained_at={self.obtained_at:.3f}, "
            f"expires_at={self.expires_at:.3f})"
        )

    __str__ = __repr__


def needed_life(lifetime: float, margin: float) -> float:
    """The life a URL of this ``lifetime`` must have left for a request to start with it."""
    return min(margin, LIFE_SHARE * lifetime)


def usable(url: SignedUrl, now: float, margin: float) -> bool:
    """Whether a request may start with ``url`` at ``now``: it has at least
    ``min(margin, LIFE_SHARE * url.lifetime)`` seconds left (see the module docstring)."""
    return url.valid_for(now) >= needed_life(url.lifetime, margin)
