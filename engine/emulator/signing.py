"""Signed storage URLs in the three real styles, plus nginx ``secure_link`` for external storage.

Each built-in URL is ``<base>/<style>/<bucket>/<object_name>?<style's query>``. The signature is an
HMAC-SHA256 over the style, the decoded path and every other query parameter (sorted), so changing
any byte of the query or the path gets 403, and the expiry cannot be extended. Expiry has one-second
resolution, as in the real formats:

==========  ====================================  ==========================================
style       expiry                                expired URL answer
==========  ====================================  ==========================================
s3          ``X-Amz-Date`` + ``X-Amz-Expires``    403 ``AccessDenied`` "Request has expired"
gcs         ``X-Goog-Date`` + ``X-Goog-Expires``  400 ``ExpiredToken``
azure       ``se`` (ISO 8601)                     403 ``AuthenticationFailed``
==========  ====================================  ==========================================

A URL is valid while ``now < expiry`` (checked when the request arrives). The signature is checked
before the expiry, so a tampered URL gets the style's signature error even when also expired.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from urllib.parse import quote, urlencode

__all__ = [
    "STYLES",
    "ExternalStorage",
    "Signer",
    "Verdict",
]

STYLES = ("s3", "gcs", "azure")
_SIGNATURE_PARAM = {"s3": "X-Amz-Signature", "gcs": "X-Goog-Signature", "azure": "sig"}


class Verdict(Enum):
    OK = "ok"
    MALFORMED = "malformed"
    TAMPERED = "tampered"
    EXPIRED = "expired"


@dataclass(frozen=True)
class ExternalStorage:
    """Hand out nginx ``secure_link`` URLs for a separate storage server.

    ``base_url`` is where nginx serves ``/objects/<object_name>``; ``secret`` is the string in its
    ``secure_link_md5 "$secure_link_expires$uri <secret>";`` directive. URLs are built by
    :func:`engine.emulator.nginx.secure_link_url`; :meth:`Emulator.write_objects` puts the bytes
    where such a server (e.g. :class:`engine.emulator.nginx.NginxServer`) serves them.
    """

    base_url: str
    secret: str


def _amz_date(epoch: int) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


def _iso_date(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _parse_amz_date(text: str) -> int:
    # Hand-parsed: time.strptime costs more than the whole signature check.
    if len(text) != 16 or text[8] != "T" or text[15] != "Z":
        raise ValueError(f"bad date {text!r}")
    digits = text[:8] + text[9:15]
    if not digits.isdigit():
        raise ValueError(f"bad date {text!r}")
    parts = (digits[0:4], digits[4:6], digits[6:8], digits[8:10], digits[10:12], digits[12:14])
    year, month, day, hour, minute, second = map(int, parts)
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))


def _parse_iso_date(text: str) -> int:
    if len(text) != 20 or text[4] + text[7] + text[10] + text[13] + text[16] + text[19] != "--T::Z":
        raise ValueError(f"bad date {text!r}")
    return _parse_amz_date(
        text[0:4] + text[5:7] + text[8:10] + "T" + text[11:13] + text[14:16] + text[17:19] + "Z"
    )


class Signer:
    """Signs and verifies built-in storage URLs with one secret."""

    def __init__(self, secret: bytes, base_url: str, bucket: str = "emulator-bucket") -> None:
        self._secret = secret
        self.base_url = base_url.rstrip("/")
        self.bucket = bucket
        # (style, start, lifetime) -> (canonical parameter lines, encoded query without the
        # signature): every URL signed in the same second shares them, so a page of a
        # thousand URLs builds them once.
        self._templates: dict[tuple[str, int, int], tuple[str, str]] = {}

    def path_for(self, style: str, object_name: str) -> str:
        return f"/{style}/{self.bucket}/{object_name}"

    def _mac(self, style: str, path: str, params: Mapping[str, str]) -> bytes:
        signature_param = _SIGNATURE_PARAM[style]
        canonical = "\n".join(
            [style, path, *(f"{k}={params[k]}" for k in sorted(params) if k != signature_param)]
        )
        return hmac.new(self._secret, canonical.encode(), hashlib.sha256).digest()

    def sign(self, style: str, object_name: str, now: float, ttl: float) -> str:
        """A URL for ``object_name`` valid from ``now`` for ``ttl`` seconds (rounded up)."""
        start = int(now)
        lifetime = max(0, math.ceil(ttl))  # whole seconds, as in the real formats
        template = self._templates.get((style, start, lifetime))
        if template is None:
            template = self._template(style, start, lifetime)
        canonical_params, query = template
        path = self.path_for(style, object_name)
        # What _mac computes for these parameters, from the shared part.
        mac = hmac.digest(self._secret, f"{style}\n{path}\n{canonical_params}".encode(), "sha256")
        if style == "azure":
            signature = urlencode({"sig": base64.b64encode(mac).decode()}, quote_via=quote)
        else:
            signature = f"{_SIGNATURE_PARAM[style]}={mac.hex()}"
        return f"{self.base_url}{quote(path)}?{query}&{signature}"

    def _template(self, style: str, start: int, lifetime: int) -> tuple[str, str]:
        params = self._params(style, start, lifetime)
        canonical_params = "\n".join(f"{k}={params[k]}" for k in sorted(params))
        template = (canonical_params, urlencode(params, quote_via=quote))
        if len(self._templates) >= 64:
            self._templates.clear()
        self._templates[(style, start, lifetime)] = template
        return template

    @staticmethod
    def _params(style: str, start: int, lifetime: int) -> dict[str, str]:
        """The query parameters of a URL, without its signature (in the order sent)."""
        day = time.strftime("%Y%m%d", time.gmtime(start))
        if style == "s3":
            return {
                "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
                "X-Amz-Credential": f"EMULATORACCESSKEY/{day}/us-east-1/s3/aws4_request",
                "X-Amz-Date": _amz_date(start),
                "X-Amz-Expires": str(lifetime),
                "X-Amz-SignedHeaders": "host",
            }
        if style == "gcs":
            return {
                "X-Goog-Algorithm": "GOOG4-HMAC-SHA256",
                "X-Goog-Credential": f"emulator@assetsync.iam.gserviceaccount.com/{day}/auto/"
                "storage/goog4_request",
                "X-Goog-Date": _amz_date(start),
                "X-Goog-Expires": str(lifetime),
                "X-Goog-SignedHeaders": "host",
            }
        if style == "azure":
            return {
                "sv": "2023-11-03",
                "st": _iso_date(start),
                "se": _iso_date(start + lifetime),
                "sr": "b",
                "sp": "r",
                "spr": "https,http",
            }
        raise ValueError(f"unknown signing style {style!r}")

    @staticmethod
    def expiry(style: str, params: Mapping[str, str]) -> int:
        """Epoch second at which a URL of ``style`` expires (raises on a malformed query)."""
        if style == "s3":
            return _parse_amz_date(params["X-Amz-Date"]) + int(params["X-Amz-Expires"])
        if style == "gcs":
            return _parse_amz_date(params["X-Goog-Date"]) + int(params["X-Goog-Expires"])
        return _parse_iso_date(params["se"])

    def verify(self, style: str, path: str, params: Mapping[str, str], now: float) -> Verdict:
        """Check a storage request's query: signature first, then expiry."""
        signature = params.get(_SIGNATURE_PARAM[style])
        if signature is None:
            return Verdict.MALFORMED
        expected = self._mac(style, path, params)
        given = signature.encode()
        wanted = base64.b64encode(expected) if style == "azure" else expected.hex().encode()
        if not hmac.compare_digest(given, wanted):
            return Verdict.TAMPERED
        try:
            expires = self.expiry(style, params)
        except (KeyError, ValueError):
            return Verdict.MALFORMED
        return Verdict.OK if now < expires else Verdict.EXPIRED
