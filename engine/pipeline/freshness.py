"""URL freshness: make sure a job's signed URL will last, refreshing up to 1000 in one request.

Listed URLs age while their jobs queue. A job whose URL is missing (``presigned_url: null``) or
will not stay valid for the transfer's margin plus some slack is refreshed *in a batch*, through
the XGET listing by ids (one request signs up to 1000 URLs), instead of one request per asset
later in the transfer core (which remains the fallback if a batch fails).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from engine.errors import AuthError, EngineError
from engine.pipeline.jobs import Job
from engine.platform import PlatformClient
from engine.signed_urls import SignedUrl

__all__ = ["FRESHNESS_SLACK", "UrlFreshener"]

# How long a job may wait between this check and its first request, on top of the margin.
FRESHNESS_SLACK = 60.0
_MAX_IDS = 1000


class UrlFreshener:
    def __init__(
        self,
        client: PlatformClient,
        dataset_version: str,
        *,
        margin: float,
        unknown_lifetime: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.dv = dataset_version
        self.margin = margin + FRESHNESS_SLACK
        self.unknown_lifetime = unknown_lifetime
        self.clock = clock
        self.batches = 0
        self.refreshed = 0

    def stale(self, jobs: Sequence[Job]) -> list[Job]:
        now = self.clock()
        return [j for j in jobs if j.url is None or j.url.valid_for(now) < self.margin]

    async def refresh_stale(self, jobs: Sequence[Job]) -> None:
        stale = self.stale(jobs)
        for start in range(0, len(stale), _MAX_IDS):
            await self._refresh(stale[start : start + _MAX_IDS])

    async def _refresh(self, jobs: Sequence[Job]) -> None:
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
