"""One API request with retries: status mapping, backoff and ``Retry-After``.

How long to wait is :mod:`engine.backoff`'s rule, shared with the transfer core.

Every aiohttp exception is translated here (the httpx ``map_httpcore_exceptions`` shape), so
nothing from aiohttp escapes ``engine.platform``:

    401 / 403                       -> AuthError
    404                             -> NotFoundError
    408 / 429 / 5xx (not 501)       -> retried, then ApiUnavailable
    connection errors, timeouts,
    a body cut short                -> retried, then ApiUnavailable
    a body past ``max_body``        -> AnswerTooLarge, not retried
    any other status                -> PlatformError with the server's message
    bad URL                         -> UsageError

Bodies are read as a stream of *decoded* bytes (aiohttp inflates gzip and deflate by pieces, with
backpressure) and counted as they come: a body that passes ``max_body`` is refused as soon as it
does, so a small compressed answer that inflates to gigabytes costs at most ``max_body`` of
memory. Error answers are read up to :data:`ERROR_BODY_LIMIT` only: their message is all we use.

Only the method and the path go into messages and logs: never headers, and the token is scrubbed
from anything the server echoes back.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import anyio
from pydantic import SecretStr

from engine.backoff import parse_retry_after, retry_delay
from engine.errors import (
    AnswerTooLarge,
    ApiUnavailable,
    AuthError,
    EngineError,
    NotFoundError,
    PlatformError,
    UsageError,
)
from engine.settings import RetryPolicy, Timeouts

__all__ = ["ERROR_BODY_LIMIT", "ApiTransport", "Params"]

log = logging.getLogger("engine.platform")

Params = Sequence[tuple[str, str]]

_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_MESSAGE_LIMIT = 300
# Of an error answer only the message is used (at most _MESSAGE_LIMIT characters of it).
ERROR_BODY_LIMIT = 64 * 1024
_READ_PIECE = 256 * 1024
_SPACES = re.compile(r"\s+")


def _one_line(text: str) -> str:
    text = _SPACES.sub(" ", text).strip()
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 1] + "…"


def server_message(body: bytes) -> str:
    """The ``message`` (and ``detail``) of an error body, as the SDK composes them."""
    try:
        data: Any = json.loads(body)
    except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
        return _one_line(body[:2000].decode("utf-8", "replace"))
    if not isinstance(data, dict):
        return _one_line(str(data))
    message = str(data.get("message") or "")
    detail = data.get("detail")
    if detail:
        if isinstance(detail, list):
            detail = "; ".join(str(item) for item in detail)
        message = f"{message} ({detail})" if message else str(detail)
    return _one_line(message)


class ApiTransport:
    """Sends API requests on the caller's session, with the SDK's headers and our retries."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        api_url: str,
        token: SecretStr,
        retry: RetryPolicy,
        timeouts: Timeouts,
        *,
        user_agent: str,
        max_body: int,
    ) -> None:
        self._session = session
        self._max_body = max_body
        self._base = api_url.rstrip("/")
        self._secret = token.get_secret_value()
        self._retry = retry
        # No ``connect`` timeout: on a shared session it would include waiting for a pooled
        # connection behind busy downloads, which is not the API being unreachable.
        self._timeout = aiohttp.ClientTimeout(total=timeouts.api, sock_connect=timeouts.connect)
        # The SDK's headers (picsellia.sdk.connection.Connection): bearer token, its
        # User-Agent product token, a JSON content type on every request.
        self._headers = {
            "Authorization": f"Bearer {self._secret}",
            "User-Agent": user_agent,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        self._rng = random.Random()

    def set_organization(self, organization_id: str) -> None:
        # The SDK sends this header on every request once it knows the organisation.
        self._headers["X-Picsellia-Organization"] = organization_id

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def backoff(self, failures: int, retry_after: float | None) -> float:
        """The one backoff rule (:mod:`engine.backoff`)."""
        return retry_delay(self._retry, failures, self._rng, retry_after)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: bytes | None = None,
    ) -> bytes:
        """The body of a 2xx answer; raises only :class:`~engine.errors.EngineError`."""
        what = f"{method} {path}"
        failures = 0
        while True:
            error = await self._attempt(method, path, what, params, body)
            if isinstance(error, bytes):
                return error
            if not error.retryable:
                raise error
            failures += 1
            if failures >= self._retry.attempts:
                raise ApiUnavailable(
                    f"{error.message} (gave up after {failures} attempts)",
                    status=getattr(error, "status", None),
                    retry_after=error.retry_after,
                ) from error
            delay = self.backoff(failures, error.retry_after)
            log.info("%s; retry %d in %.2fs", error.message, failures, delay)
            await anyio.sleep(delay)

    async def _attempt(
        self, method: str, path: str, what: str, params: Params | None, body: bytes | None
    ) -> bytes | EngineError:
        try:
            async with self._session.request(
                method,
                self._base + path,
                params=params,
                data=body,
                headers=self._headers,
                timeout=self._timeout,
            ) as resp:
                if not 200 <= resp.status < 300:
                    payload = await _read_at_most(resp, ERROR_BODY_LIMIT)
                    return self._status_error(what, resp.status, resp.reason, payload, resp.headers)
                return await self._read_body(resp, what)
        except aiohttp.InvalidURL as exc:
            raise UsageError(f"invalid API URL for {what}: {self._scrub(str(exc))}") from None
        except aiohttp.ClientSSLError as exc:
            # A certificate problem is configuration, not a blip: do not hammer the server.
            return PlatformError(f"{what}: TLS error: {self._scrub(str(exc))}")
        except aiohttp.TooManyRedirects:
            return PlatformError(f"{what}: too many redirects")
        except TimeoutError:
            return ApiUnavailable(f"{what}: timed out")
        except (aiohttp.ClientError, OSError) as exc:
            return ApiUnavailable(f"{what}: {type(exc).__name__}: {self._scrub(str(exc))}")

    async def _read_body(self, resp: aiohttp.ClientResponse, what: str) -> bytes | AnswerTooLarge:
        limit = self._max_body
        declared = resp.content_length
        # A declared length is that of the bytes on the wire: only without an encoding is it
        # the decoded size as well.
        if declared is not None and declared > limit and not resp.headers.get("Content-Encoding"):
            return self._too_large(what, resp.status, limit)
        pieces: list[bytes] = []
        size = 0
        async for piece in resp.content.iter_chunked(_READ_PIECE):
            size += len(piece)
            if size > limit:
                return self._too_large(what, resp.status, limit)
            pieces.append(piece)
        return b"".join(pieces)

    @staticmethod
    def _too_large(what: str, status: int, limit: int) -> AnswerTooLarge:
        return AnswerTooLarge(
            f"{what}: the answer is larger than {limit:,} bytes once decoded (api_max_body); "
            "refused",
            status=status,
        )

    def _status_error(
        self,
        what: str,
        status: int,
        reason: str | None,
        payload: bytes,
        headers: Any,
    ) -> EngineError:
        message = self._scrub(server_message(payload))
        head = f"{what}: {status} {reason or ''}".rstrip()
        text = f"{head}: {message}" if message else head
        if status in (401, 403):
            return AuthError(
                f"the platform refused the token ({status}) for {what}"
                + (f": {message}" if message else "")
            )
        if status == 404:
            return NotFoundError(text, status=status)
        if status in _RETRY_STATUSES or (status >= 500 and status != 501):
            retry_after = parse_retry_after(headers.get("Retry-After"), time.time())
            return ApiUnavailable(text, status=status, retry_after=retry_after)
        return PlatformError(text, status=status)


async def _read_at_most(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The first ``limit`` decoded bytes of a body; the rest is never read (the connection is
    closed rather than drained when the response is released)."""
    pieces: list[bytes] = []
    size = 0
    while size < limit:
        piece = await resp.content.read(min(_READ_PIECE, limit - size))
        if not piece:
            break
        pieces.append(piece)
        size += len(piece)
    return b"".join(pieces)
