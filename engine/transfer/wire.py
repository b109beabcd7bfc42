"""One HTTP request to storage: build it, send it, and turn every failure into an EngineError.

Storage is spoken to through :mod:`engine.transfer.http1` (see there why not aiohttp). Its
exceptions never leave this module's callers: :func:`translate` maps them where they arise:

* transient (retried on a fresh connection, within the retry budget): connection refused,
  reset or cut, a connect or head timeout, a body cut short, and a **malformed or ambiguous
  answer** (``ProtocolError``: bad status line, ``Content-Length`` beside
  ``Transfer-Encoding``, a head over 64 KiB or with more than 100 fields, a coding other than
  ``chunked``; ``BodyError``: bad chunk framing, too many trailers). A broken answer is as often
  a middlebox or one bad replica as the object store itself, and asking again is cheap; the
  budget (attempts without progress) ends a server that always answers so. Nothing of such an
  answer is ever placed: the fetch fails before its size and hash are checked;
* :class:`StallError`: a timeout while reading the body;
* permanent (asking again gets the same answer): an invalid URL, a redirect we do not follow
  (more than 5, to a non-http(s) URL, from https to http), a proxy refusing us with a 4xx
  (407: wrong or missing credentials in the proxy URL).

Error answers are classified by :func:`error_for` from the status and the object store's XML
``<Code>``; messages carry the redacted URL only, and name a proxy by host and port only.
"""

from __future__ import annotations

import re
from typing import Literal

from engine.errors import (
    EngineError,
    PermanentTransferError,
    StallError,
    TransientTransferError,
    UrlExpired,
)
from engine.settings import Timeouts
from engine.signed_urls import SignedUrl, redact, scrub
from engine.transfer.http1 import (
    BodyError,
    ConnectTimeout,
    HttpError,
    ProtocolError,
    ProxyError,
    RedirectError,
    Response,
    StorageHttp,
)
from engine.transfer.ranges import range_header
from engine.transfer.retry import parse_retry_after

__all__ = [
    "UrlRefused",
    "error_for",
    "open_get",
    "read_error_body",
    "set_stall_timeout",
    "translate",
]

_CODE = re.compile(rb"<Code>\s*([^<]{1,100}?)\s*</Code>")
_MESSAGE = re.compile(rb"<Message>\s*([^<]{1,300}?)\s*</Message>")
_RETRY_STATUSES = frozenset({408, 425, 429})
_ERROR_BODY_MAX = 16 * 1024


class UrlRefused(UrlExpired):
    """Storage refused the URL for another reason than expiry (403 without "expired", 401).

    Handled like an expiry — refresh and carry on — except that a freshly obtained URL being
    refused is permanent (see :mod:`engine.transfer.urls`).
    """


async def open_get(
    http: StorageHttp,
    url: SignedUrl,
    *,
    start: int | None,
    stop: int | None,
    if_range: str | None,
    read_timeout: float,
    hold_from: int | None = None,
) -> Response:
    """Send ``GET`` (for ``[start, stop)`` when ``start`` is given) and return the response
    once its headers arrived. The caller reads and releases it. ``hold_from``: see
    :meth:`StorageHttp.get`."""
    # identity: we store the object's bytes as they are, never a server's on-the-fly encoding.
    headers = {"Accept-Encoding": "identity"}
    if start is not None:
        headers["Range"] = range_header(start, stop)
        if if_range is not None:
            headers["If-Range"] = if_range
    try:
        # The URL goes on the request line byte for byte, or the signature no longer matches.
        return await http.get(url.url, headers, read_timeout=read_timeout, hold_from=hold_from)
    except (TimeoutError, HttpError, OSError, ValueError) as exc:
        raise translate(exc, url, "headers") from None


def set_stall_timeout(response: Response, timeouts: Timeouts) -> None:
    """Headers arrived: from now on a read may wait ``stall`` seconds, not ``read``."""
    response.set_read_timeout(timeouts.stall)


def translate(exc: BaseException, url: SignedUrl, phase: Literal["headers", "body"]) -> EngineError:
    """The EngineError for a library exception raised while talking to storage."""
    where = redact(url.url)
    name = type(exc).__name__
    if isinstance(exc, RedirectError):
        return PermanentTransferError(f"{where}: {exc}")
    if isinstance(exc, ProxyError) and 400 <= exc.status < 500 and exc.status not in (408, 429):
        return PermanentTransferError(f"{where}: {exc}")
    if isinstance(exc, ValueError):
        return PermanentTransferError(f"{where}: invalid URL ({name})")
    if isinstance(exc, TimeoutError):
        if isinstance(exc, ConnectTimeout):
            return TransientTransferError(f"{where}: connect timed out")
        if phase == "body":
            return StallError(f"{where}: no bytes arrived within the stall timeout")
        return TransientTransferError(f"{where}: no response within the read timeout")
    detail = scrub(str(exc), url.url)[:200]
    if isinstance(exc, BodyError):
        return TransientTransferError(f"{where}: body cut short or malformed ({detail})")
    if isinstance(exc, ProtocolError):
        return TransientTransferError(f"{where}: malformed answer ({detail})")
    if isinstance(exc, HttpError | OSError):
        return TransientTransferError(f"{where}: {name}: {detail}")
    return TransientTransferError(f"{where}: {name}")


async def read_error_body(response: Response) -> bytes:
    """At most a few KiB of an error answer (object stores explain themselves in XML)."""
    try:
        return await response.content.read(_ERROR_BODY_MAX)
    except (TimeoutError, HttpError, OSError):
        return b""


def error_for(
    status: int,
    body: bytes,
    retry_after_header: str | None,
    *,
    url: SignedUrl,
    now: float,
) -> EngineError:
    """The exception an error answer (status >= 300, or a 2xx that was not expected) maps to.

    401/403 and GCS's ``400 ExpiredToken`` mean "this URL is refused": :class:`UrlExpired`
    when storage says it expired, :class:`UrlRefused` otherwise; the caller refreshes. 404/410
    and other 4xx are permanent; 408, 425, 429 and 5xx are transient with ``Retry-After``.
    """
    where = redact(url.url)
    found = _CODE.search(body)
    code = found.group(1).decode("utf-8", "replace") if found else ""
    found = _MESSAGE.search(body)
    message = found.group(1).decode("utf-8", "replace") if found else ""
    said = f"{status} {code}".strip() + (f" ({message})" if message else "")
    expired = "expired" in message.lower() or code in ("ExpiredToken", "AuthenticationFailed")
    if status in (401, 403) or (status == 400 and code == "ExpiredToken"):
        if expired:
            return UrlExpired(f"{where}: storage says the URL expired: {said}")
        return UrlRefused(f"{where}: storage refused the URL: {said}")
    if status in (404, 410):
        return PermanentTransferError(f"{where}: object not found: {said}")
    if status in _RETRY_STATUSES or status >= 500:
        retry_after = parse_retry_after(retry_after_header, now)
        return TransientTransferError(f"{where}: storage answered {said}", retry_after=retry_after)
    if 400 <= status < 500:
        return PermanentTransferError(f"{where}: storage answered {said}")
    return TransientTransferError(f"{where}: unexpected answer {said}")
