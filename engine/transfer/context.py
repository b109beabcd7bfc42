"""Per-fetch state and the retry loop shared by the first request and every segment."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor

import anyio

from engine.errors import ObjectChanged, SlowBodyError, TransientTransferError, UrlExpired
from engine.settings import TransferOptions
from engine.signed_urls import SignedUrl
from engine.transfer.disk_room import DiskGuard
from engine.transfer.http1 import StorageHttp
from engine.transfer.min_rate import RateFloor, rate_floor
from engine.transfer.progress import EventKind, ProgressEvent, TransferStats
from engine.transfer.retry import Backoff
from engine.transfer.threads import ThreadSlots
from engine.transfer.urls import UrlSource

__all__ = ["Context"]


class Context:
    """What one fetch shares between its workers: the session, the URL, counters, events."""

    def __init__(
        self,
        *,
        asset_id: str,
        data_id: str,
        loop: asyncio.AbstractEventLoop,
        session: StorageHttp,
        options: TransferOptions,
        read_timeout: float,
        clock: Callable[[], float],
        urls: UrlSource,
        stats: TransferStats,
        on_progress: Callable[[ProgressEvent], None] | None,
        executor: Executor,
        rng: random.Random,
        disk: DiskGuard,
        pumps: ThreadSlots | None = None,
    ) -> None:
        self.asset_id = asset_id
        self.data_id = data_id
        self.loop = loop  # the running loop, taken once (each look-up costs a getpid)
        self.session = session
        self.options = options
        self.timeout = read_timeout  # for the headers; the body gets the stall timeout
        self.clock = clock
        self.urls = urls
        self.stats = stats
        self.on_progress = on_progress
        self.executor = executor  # file-system work off the loop
        self.rng = rng  # for backoff jitter
        self.disk = disk  # the run's free-space reserve: writers charge it before writing
        self.pumps = pumps  # threads that read large bodies from their sockets
        # Bodies a pump may take are not read by the loop between their headers and the
        # hand-over (measured: 4-7% of a 1 GiB download's bytes came through the loop so).
        self.hold_from = options.thread_body_min if pumps is not None else None
        self.retries = 0
        self.restarts = 0
        self.received = 0  # bytes that came over the network in this fetch, all attempts
        self.unbounded_kept = 0  # bytes of a body of unknown length written by this attempt
        # None when nobody listens, so the hot loop skips the call entirely.
        self.emit_bytes: Callable[[int, int, int], None] | None = (
            self._emit_bytes if on_progress is not None else None
        )

    def rate_floor(self, now: float) -> RateFloor | None:
        """The minimum rate for a body whose reading starts at ``now`` (None: off)."""
        t = self.options.timeouts
        return rate_floor(t.min_rate, t.min_rate_window, now)

    def emit(self, kind: EventKind, delta: int, done: int, total: int | None) -> None:
        if self.on_progress is not None:
            self.on_progress(ProgressEvent(self.asset_id, self.data_id, kind, delta, done, total))

    def _emit_bytes(self, delta: int, done: int, total: int) -> None:
        self.emit("bytes", delta, done, total)

    def emit_restart(self, lost: int) -> None:
        """The bytes on disk were discarded (``lost`` of them): the download starts over."""
        self.restarts += 1
        self.stats.restarts += 1
        self.emit("restart", -lost, 0, None)

    async def with_retries(
        self,
        backoff: Backoff,
        attempt: Callable[[SignedUrl], Awaitable[None]],
        finished: Callable[[], bool],
        url: SignedUrl | None = None,
    ) -> None:
        """Call ``attempt`` until ``finished()``, each time with a URL valid for the margin
        (``url``, when given, is used as is for the first call).

        A refused URL is replaced (the source raises if it was fresh) and tried again at once;
        other transient failures wait for the backoff or ``Retry-After``. A budget spent
        re-raises the last error; :class:`ObjectChanged` goes straight up to the restart.
        A body ended for being too slow (:class:`SlowBodyError`) made no progress, whatever it
        kept (see :class:`~engine.transfer.retry.Backoff`).
        """
        while not finished():
            if url is None:
                url = await self.urls.get()
            try:
                await attempt(url)
            except ObjectChanged:
                raise
            except UrlExpired as exc:
                url = await self.urls.refused(url, exc)
                if backoff.next_delay(0.0) is None:
                    raise
                continue
            except TransientTransferError as exc:
                delay = backoff.next_delay(
                    exc.retry_after, progress=not isinstance(exc, SlowBodyError)
                )
                if delay is None:
                    raise
                self.retries += 1
                self.stats.retries += 1
                self.emit("retry", 0, 0, None)
                await anyio.sleep(delay)
            url = None
