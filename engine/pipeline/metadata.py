"""Tags, data tags and annotations, fetched in bulk.

The listing carries no tags and no annotations, and asking per asset would cost one request per
asset per kind. Instead:

* tags: for each tag of the version (one request), page through the ids listing filtered with
  ``q`` (``tags.name = "…"``) and stream the ids into the manifest's staging table, so the cost
  grows with the number of tags and pages, and memory holds one page of ids;
* data tags: the same through the datalake's tag list and ``data.tags.name = "…"``;
* annotations: per listing page, the annotation ids of the page's assets, then the bulk ``XGET``
  in chunks: a constant number of requests per page.

What cannot be read is reported, not raised, where a part of the work can go on without it:

* the datalake (for data tags) is learnt from the data of one of the first assets listed; if
  that lookup fails (a 404 for data deleted since, a malformed answer) the next of
  :data:`DATALAKE_CANDIDATES` assets is tried, and when all fail the stager raises: the caller
  then treats this run's tags as unknown (the stored ones are kept);
* a malformed annotation makes its asset's annotations unreadable (:class:`PageAnnotations`),
  or every asset's of the page when its asset cannot be told; the caller decides what that
  means (the mirror keeps the stored ones and fails the asset). A request that fails (an API
  error after retries, an answer too large) raises.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from engine.errors import AuthError, EngineError, PlatformError, primary_error
from engine.manifest import Manifest
from engine.pipeline.writer import ManifestAccess
from engine.platform import PlatformClient, models
from engine.platform.per_item import AnnotationAnswer
from engine.platform.query import DATA_TAGS, TAGS, tag_filter

__all__ = [
    "DATALAKE_CANDIDATES",
    "PageAnnotations",
    "TagStager",
    "TagStaging",
    "datalake_of",
    "fetch_page_annotations",
    "group_annotations",
]

# Assets whose data is asked for the datalake id before data tags are given up for the run.
DATALAKE_CANDIDATES = 3

# Each tag's listing is a chain of cursor pages, and every page of the version waits until all
# chains end: run them all at once (a version has a handful of tags), so the longest chain sets
# the wait, not the sum of a few at a time (30,000 assets, 12 tags: 0.80 -> 0.69 s to tags ready).
_TAG_LISTINGS_AT_ONCE = 16

StageFn = Callable[[str, str, Sequence[str]], Awaitable[None]]
# Asset id -> (tag names, data tag names) staged this run.
StagedTags = dict[str, tuple[tuple[str, ...], tuple[str, ...]]]


class TagStager:
    """Streams tag membership (asset tags, then data tags) into the manifest's staging table."""

    def __init__(self, client: PlatformClient, dataset_version: str, stage: StageFn) -> None:
        self._client = client
        self._dv = dataset_version
        self._stage = stage
        self.requests = 0

    async def _stage_one(self, kind: str, field: str, name: str) -> None:
        query = tag_filter(field, name)
        async for ids in self._client.asset_id_pages(self._dv, q=query):
            if ids:
                await self._stage(kind, name, ids)

    async def run(self, first_data_ids: Callable[[], Awaitable[Sequence[str]]]) -> None:
        """Stage every tag. ``first_data_ids`` gives the data ids of the first assets listed
        (empty: the version has none); raises :class:`~engine.errors.EngineError` only."""
        limiter = anyio.CapacityLimiter(_TAG_LISTINGS_AT_ONCE)

        async def guarded(kind: str, field: str, name: str) -> None:
            async with limiter:
                await self._stage_one(kind, field, name)

        asset_tags = await self._client.version_tags(self._dv)
        data_tags = await self._data_tags(await first_data_ids())
        try:
            async with anyio.create_task_group() as tg:
                for tag in asset_tags:
                    tg.start_soon(guarded, "asset", TAGS, tag.name)
                for tag in data_tags:
                    tg.start_soon(guarded, "data", DATA_TAGS, tag.name)
        except BaseExceptionGroup as group:
            raise primary_error(group) from None

    async def _data_tags(self, data_ids: Sequence[str]) -> list[models.Tag]:
        lake = await datalake_of(self._client, data_ids)
        return [] if lake is None else await self._client.datalake_tags(lake)


class TagStaging:
    """A run's tags, staged in the background from its start (mirror and prefetch alike).

    :meth:`run` stages every tag of the version into the manifest for this run, then sets
    ``ready``; ``error`` says why the run's tags are unknown if they could not be read (the run
    decides what that means: the mirror keeps the stored tags, the prefetcher raises it to the
    consumer). The datalake of data tags is learnt from the first assets listed, which the
    lister reports with :meth:`saw_first` (empty: the version has none).
    """

    def __init__(
        self, client: PlatformClient, dataset_version: str, db: ManifestAccess, run_id: int
    ) -> None:
        self._client = client
        self._dv = dataset_version
        self._db = db
        self._run_id = run_id
        self.ready = anyio.Event()
        self.error: EngineError | None = None
        self._first = anyio.Event()
        self._first_data_ids: list[str] = []

    def saw_first(self, data_ids: Sequence[str]) -> None:
        """The data ids of the first assets listed (a few: the first may be gone by the time it
        is looked up); called again, it changes nothing."""
        if not self._first.is_set():
            self._first_data_ids = list(dict.fromkeys(data_ids))[:DATALAKE_CANDIDATES]
            self._first.set()

    async def run(self) -> None:
        manifest = self._db.manifest
        if manifest is None:
            # A dry run into an empty DEST: every asset is new, tags decide nothing.
            self.ready.set()
            return

        async def stage(kind: str, name: str, ids: Sequence[str]) -> None:
            await self._db.call(_stage, manifest, self._run_id, kind, name, ids)

        async def first_data_ids() -> list[str]:
            await self._first.wait()
            return self._first_data_ids

        try:
            await TagStager(self._client, self._dv, stage).run(first_data_ids)
        except EngineError as exc:
            self.error = exc
        finally:
            self.ready.set()

    async def staged(self, ids: Sequence[str]) -> StagedTags | None:
        """The tags staged for these assets this run, once staging ended (None: unknown)."""
        await self.ready.wait()
        manifest = self._db.manifest
        if self.error is not None:
            return None
        if manifest is None:
            return {}
        return await self._db.call(manifest.staged_tags, self._run_id, ids)


def _stage(manifest: Manifest, run_id: int, kind: str, name: str, ids: Sequence[str]) -> None:
    manifest.stage_tags(run_id, kind, name, ids)  # type: ignore[arg-type]


async def datalake_of(client: PlatformClient, data_ids: Sequence[str]) -> str | None:
    """The datalake the version's data lives in (the version does not say; its data does),
    from the first of ``data_ids`` whose lookup answers (at most :data:`DATALAKE_CANDIDATES`
    are asked, so one asset's 404 does not decide it). None: no data ids (an empty version), or
    data without a datalake. Raises :class:`~engine.errors.PlatformError` when every lookup
    failed."""
    failures: list[str] = []
    for data_id in data_ids[:DATALAKE_CANDIDATES]:
        try:
            detail = await client.data(data_id)
        except AuthError:
            raise
        except EngineError as exc:
            failures.append(str(exc))
            continue
        return detail.datalake_id
    if not failures:
        return None
    raise PlatformError(
        f"the datalake of the data tags is unknown: looking up the data of "
        f"{len(failures)} asset(s) failed (last: {failures[-1]})"
    )


@dataclass(slots=True)
class PageAnnotations:
    """A page's annotations as the API gave them, by asset (API order), and the assets whose
    annotations could not be read, with why (their stored annotations stand)."""

    by_asset: dict[str, list[dict[str, Any]]]
    unreadable: dict[str, str] = field(default_factory=dict)


async def fetch_page_annotations(
    client: PlatformClient, dataset_version: str, asset_ids: Sequence[str]
) -> PageAnnotations:
    """Every annotation of these assets, as the API gave them, grouped by asset (API order)."""
    annotation_ids = await client.annotation_ids(dataset_version, asset_ids)
    if not annotation_ids:
        return PageAnnotations({asset_id: [] for asset_id in asset_ids})
    answer = await client.annotation_dicts(dataset_version, annotation_ids)
    return group_annotations(asset_ids, answer)


def group_annotations(asset_ids: Sequence[str], answer: AnnotationAnswer) -> PageAnnotations:
    """The answer's annotations by asset (API order), for these assets only."""
    grouped: dict[str, list[dict[str, Any]]] = {asset_id: [] for asset_id in asset_ids}
    if answer.unattributed is not None:
        # A malformed annotation of an asset that cannot be told: none is known complete.
        return PageAnnotations(grouped, dict.fromkeys(grouped, answer.unattributed))
    for annotation in answer.annotations:
        shapes = grouped.get(annotation["asset_id"])
        if shapes is not None:
            shapes.append(annotation)  # exactly what the API sent
    unreadable = {a: why for a, why in answer.unreadable.items() if a in grouped}
    return PageAnnotations(grouped, unreadable)
