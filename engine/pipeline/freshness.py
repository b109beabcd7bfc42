"""URL freshness: a job's signed URL is usable when its download starts, refreshed in batches.

The rule is :func:`engine.signed_urls.usable` (the transfer core asks it before each of its own
requests too). It is checked when a fetcher is about to start a job, not when the job is queued:
a job may wait in a queue for a long time, and a check made then would need a slack on top of
the margin (it had 60 s, so a URL living less than 90 s was "stale" on arrival and re-signed with
999 others before every download).

A job whose URL is not usable (or missing: ``presigned_url: null``) is refreshed *in a batch*
through the ``XGET`` listing by ids, one request for up to :data:`MAX_IDS` URLs:

* the batch takes the job and those of the ``upcoming`` jobs the caller hands over (the ones it
  will start next, in that order) that will not be usable a batch window from now; the caller
  says which jobs are next, the freshener does not know where they wait (a queue of pages, a
  prefetch window), so it can serve both;
* no more of them than will start while a refreshed URL stays usable, at the pace jobs have
  been starting (measured on the URL clock): a URL refreshed too early ages again before its
  job starts and is signed a third time (at 10 s URLs, refreshing the whole queue of a 2,000
  asset prefetch made 1.6 signings per asset where refreshing what is next made ~1.2);
* single flight: one batch at a time; a job that finds a batch in flight waits for it and is
  done if the batch covered it;
* at most one batch per :data:`BATCH_WINDOW`: what goes stale meanwhile waits for the next one;
* a URL a batch refreshed is used as it came, usable or not (asking again would not help);
* a batch that fails (an API error after its retries) is not retried here: the transfer core
  refreshes each URL it needs on its own (one request per asset), as before.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

import anyio

from engine.errors import AuthError, EngineError
from engine.pipeline.jobs import AssetJob
from engine.platform import PlatformClient
from engine.signed_urls import SignedUrl, needed_life, usable

__all__ = ["BATCH_WINDOW", "MAX_IDS", "UrlFreshener"]

MAX_IDS = 1000
# Seconds between two batches at least: a burst of stale URLs makes one request, not one per
# download; a URL is refreshed early by this much (at most) so the next batch is not right away.
BATCH_WINDOW = 0.5
# Job starts remembered to measure their pace.
_PACE_SAMPLES = 256


class UrlFreshener:
    def __init__(
        self,
        client: PlatformClient,
        dataset_version: str,
        *,
        margin: float,
        unknown_lifetime: float,
        clock: Callable[[], float] = time.time,
        batch_window: float = BATCH_WINDOW,
    ) -> None:
        self.client = client
        self.dv = dataset_version
        self.margin = margin
        self.unknown_lifetime = unknown_lifetime
        self.clock = clock
        self.batch_window = batch_window
        self.batches = 0
        self.refreshed = 0
        self._in_flight: anyio.Event | None = None
        self._covered: set[int] = set()  # ids (id()) of the jobs the batch in flight refreshes
        self._next_batch = float("-inf")  # anyio time
        self._starts: deque[float] = deque(maxlen=_PACE_SAMPLES)  # URL-clock times

    def usable(self, job: AssetJob, *, ahead: float = 0.0) -> bool:
        """Whether ``job``'s URL is usable now (``ahead``: still, that many seconds from now)."""
        return job.url is not None and usable(job.url, self.clock() + ahead, self.margin)

    async def ready(self, job: AssetJob, upcoming: Iterable[AssetJob] = ()) -> None:
        """``job`` is about to start: return once its URL is usable, was just refreshed, or could
        not be refreshed in a batch (the transfer core then refreshes it itself). ``upcoming``:
        the jobs the caller will start next, in order; those not usable soon join a batch."""
        self._starts.append(self.clock())
        while not self.usable(job):
            if self._in_flight is not None:
                covered = id(job) in self._covered
                await self._in_flight.wait()
                if covered:
                    return
                continue
            await self._batch(job, upcoming)
            return

    def _batch_size(self, job: AssetJob) -> int:
        """How many URLs to refresh with ``job``'s: those that will start while a fresh URL
        like its own stays usable, at the pace jobs have been starting."""
        if job.url is None or len(self._starts) < 2:
            return MAX_IDS
        span = self._starts[-1] - self._starts[0]
        if span <= 0:
            return MAX_IDS
        pace = (len(self._starts) - 1) / span  # starts per second of URL time
        lifetime = job.url.lifetime
        usable_for = lifetime - needed_life(lifetime, self.margin)
        return max(1, min(MAX_IDS, int(pace * usable_for)))

    async def _batch(self, job: AssetJob, upcoming: Iterable[AssetJob]) -> None:
        done = self._in_flight = anyio.Event()
        batch = [job]
        seen = {id(job)}
        size = self._batch_size(job)
        for other in upcoming:
            if len(batch) >= size:
                break
            if id(other) not in seen and not self.usable(other, ahead=self.batch_window):
                batch.append(other)
                seen.add(id(other))
        self._covered = seen
        try:
            wait = self._next_batch - anyio.current_time()
            if wait > 0:
                await anyio.sleep(wait)
            self._next_batch = anyio.current_time() + self.batch_window
            await self._refresh(batch)
        finally:
            self._in_flight = None
            self._covered = set()
            done.set()

    async def _refresh(self, jobs: Sequence[AssetJob]) -> None:
        try:
            fresh = await self.client.assets_by_ids(self.dv, [j.asset.id for j in jobs])
        except AuthError:
            raise
        except EngineError:
            return  # each transfer refreshes its own URL if the batch could not
        self.batches += 1
        obtained = self.clock()
        by_id = {asset.id: asset for asset in fresh}
        for job in jobs:
            asset = by_id.get(job.asset.id)
            if asset is None or asset.data.presigned_url is None:
                continue
            # The asset may have been given new content since it was listed: follow it, so the
            # manifest records the data the file holds.
            job.asset = asset
            job.url = SignedUrl.parse(
                asset.data.presigned_url,
                obtained_at=obtained,
                unknown_lifetime=self.unknown_lifetime,
            )
            self.refreshed += 1
