"""The signed URL of one transfer: kept fresh before each request, refreshed when refused.

Rules (issue 3):

* Before every request (first, each segment, each retry, each resume) the URL must be usable
  by the one freshness rule (:func:`engine.signed_urls.usable`: ``url_margin`` seconds left, or
  a share of its lifetime for a short-lived URL), or it is refreshed first. A refresh that
  returns a URL that is still not usable is used anyway: asking again would not help.
* Storage refusing a URL (expired, or any 403/401) makes the transfer refresh and carry on from
  the bytes on disk — unless the refused URL was *freshly obtained*, i.e. it came from the
  provider during this transfer and no request with it has succeeded yet: then refreshing again
  cannot help and the error is permanent (a tampered URL, a revoked object).
* Segments share one source; when several refuse the same URL at once, only one refresh runs
  (single flight) and the others use its result.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from engine.errors import EngineError, PermanentTransferError, TransientTransferError
from engine.signed_urls import SignedUrl, redact, usable

__all__ = ["UrlProvider", "UrlSource"]

UrlProvider = Callable[[], Awaitable[str]]


class UrlSource:
    """Holds the current :class:`SignedUrl` of one transfer."""

    __slots__ = (
        "_clock",
        "_current",
        "_fresh",
        "_lifetime",
        "_lock",
        "_margin",
        "_on_refresh",
        "_provider",
        "refreshes",
    )

    def __init__(
        self,
        initial: str | SignedUrl | None,
        provider: UrlProvider,
        *,
        margin: float,
        unknown_lifetime: float,
        clock: Callable[[], float],
        on_refresh: Callable[[], None] | None = None,
    ) -> None:
        self._provider = provider
        self._margin = margin
        self._lifetime = unknown_lifetime
        self._clock = clock
        self._on_refresh = on_refresh
        self._lock: anyio.Lock | None = None  # made on the first refresh: most never need one
        if isinstance(initial, str):
            initial = SignedUrl.parse(initial, clock(), unknown_lifetime)
        self._current: SignedUrl | None = initial
        # The current URL came from the provider and has not yet been accepted by storage.
        self._fresh = False
        self.refreshes = 0

    async def get(self) -> SignedUrl:
        """A URL a request may start with (refreshing first if needed)."""
        current = self._current
        if current is not None and usable(current, self._clock(), self._margin):
            return current
        return await self._refresh(current)

    def accepted(self, url: SignedUrl) -> None:
        """Storage answered ``url`` with a success: it is no longer 'freshly obtained'."""
        if url is self._current:
            self._fresh = False

    async def refused(self, url: SignedUrl, error: EngineError) -> SignedUrl:
        """Storage refused ``url`` (``error`` says how). Returns the URL to use next, or raises
        :class:`PermanentTransferError` if ``url`` was freshly obtained."""
        if url is self._current and self._fresh:
            raise PermanentTransferError(
                f"storage refused a freshly obtained URL ({error}): {redact(url.url)}"
            )
        if url is not self._current and self._current is not None:
            return await self.get()  # another segment already refreshed it
        return await self._refresh(url)

    async def _refresh(self, stale: SignedUrl | None) -> SignedUrl:
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            current = self._current
            if current is not stale and current is not None:
                # Someone refreshed while we waited for the lock; a just-obtained URL is used
                # even when it is shorter-lived than the margin.
                return current
            try:
                raw = await self._provider()
            except EngineError:
                raise
            except Exception as exc:  # a caller's provider: contain whatever it raises
                raise TransientTransferError(
                    f"could not obtain a signed URL: {type(exc).__name__}"
                ) from None
            if not isinstance(raw, str) or not raw:
                raise PermanentTransferError("the URL provider returned no URL")
            fresh = SignedUrl.parse(raw, self._clock(), self._lifetime)
            self._current = fresh
            self._fresh = True
            self.refreshes += 1
            if self._on_refresh is not None:
                self._on_refresh()
            return fresh
