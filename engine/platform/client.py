"""The platform API client: the only code that knows the platform's paths and JSON.

It calls each endpoint the way the platform's own SDK (``picsellia`` 6.37.0) does, so it works
against the real platform as well as against the emulator:

- headers: ``Authorization: Bearer``, a ``Picsellia-SDK/6.37.0`` product token in the
  User-Agent, ``Content-Type: application/json``, and ``X-Picsellia-Organization`` once the
  organisation is known (``ping()`` learns it, as ``picsellia.Client`` does);
- the asset listing carries ``upload_statuses`` and ``types`` (all of them, as
  ``picsellia.compatibility.add_data_mandatory_query_parameters`` does): in the query string of
  the ``GET`` and in the JSON body of the ``XGET``;
- cursor paging: ``limit`` on the first request, then ``cursor`` and no ``offset``;
- ``XGET`` by ids: at most 1000 ids a request (``AbstractItemLister``'s chunking);
- annotation ids by asset: 50 ``asset_ids`` a request (``DatasetVersion.load_annotations``), which
  also keeps the request line around 2.5 KiB with UUIDs, far from common 8 KiB limits; a byte
  budget guards against longer ids;
- bulk annotations: a bare JSON list of ids as the ``XGET`` body; an answer too large for
  ``api_max_body`` is asked for again in chunks of :data:`SPLIT_CHUNK` ids (the SDK's chunk for
  segmentation versions, whose polygons make the heaviest answers).

Listing pages and bulk annotations are read item by item when they do not validate as a whole
(:mod:`engine.platform.per_item`): one malformed asset or annotation fails on its own.

Batches of independent chunk requests run a few at a time. Every method raises only
:class:`~engine.errors.EngineError` subclasses (see ``http.py`` for the mapping).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar
from urllib.parse import quote as _urlquote

import aiohttp
import anyio
from pydantic import SecretStr, ValidationError

from engine.errors import AnswerTooLarge, PlatformError, UsageError, primary_error
from engine.platform import models
from engine.platform.http import ApiTransport, Params
from engine.platform.paging import read_ahead
from engine.platform.per_item import (
    AnnotationAnswer,
    ListingPage,
    annotation_answer,
    asset_page,
    describe,
)
from engine.settings import DEFAULT_API_MAX_BODY, RetryPolicy, Timeouts

__all__ = [
    "ANNOTATION_IDS_PER_REQUEST",
    "MAX_IDS_PER_REQUEST",
    "SDK_TYPES",
    "SDK_UPLOAD_STATUSES",
    "PlatformClient",
    "parse_answer",
]

SDK_VERSION = "6.37.0"
USER_AGENT = f"assetsync/0.1.0 Picsellia-SDK/{SDK_VERSION}"
SDK_UPLOAD_STATUSES = ("PENDING", "COMPUTING", "DONE", "ERROR")
SDK_TYPES = ("IMAGE", "VIDEO")
MAX_PAGE = 1000
MAX_IDS_PER_REQUEST = 1000
ANNOTATION_IDS_PER_REQUEST = 50
SPLIT_CHUNK = 10
# A datalake has tens of data tags; a server paging through new ones for ever is broken.
MAX_DATALAKE_TAGS = 100_000
_QUERY_BUDGET = 4096  # bytes of query string for one annotation-ids request
_CHUNK_CONCURRENCY = 4

T = TypeVar("T")


def _seg(value: str) -> str:
    # Ids go into paths; another implementation's ids need not be UUIDs. Percent-encoding does
    # not protect "." and "..": the URL library resolves them (even as %2E%2E), so that
    # /api/data/.. would be a request for /api/. The models refuse such ids from the platform;
    # this refuses them from callers.
    if not value.strip("."):
        raise UsageError(f"not an id that can go into a request path: {value!r}")
    return _urlquote(value, safe="")


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise UsageError(f"page size must be between 1 and {MAX_PAGE}, not {limit}")


def _unique(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _chunks(values: Sequence[T], size: int) -> list[Sequence[T]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def _query_chunks(ids: Sequence[str], key: str, per_request: int, budget: int) -> list[list[str]]:
    """Split ids so that each request has at most ``per_request`` of them and a query string of
    at most ``budget`` bytes (one id alone always makes a chunk)."""
    out: list[list[str]] = []
    current: list[str] = []
    size = 0
    for value in ids:
        cost = len(key) + 2 + len(_urlquote(value, safe=""))  # "&key=value"
        if current and (len(current) >= per_request or size + cost > budget):
            out.append(current)
            current, size = [], 0
        current.append(value)
        size += cost
    if current:
        out.append(current)
    return out


async def _gather(calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run the calls a few at a time; results in call order; the first error wins."""
    if len(calls) == 1:
        return [await calls[0]()]
    results: dict[int, T] = {}
    limiter = anyio.CapacityLimiter(_CHUNK_CONCURRENCY)

    async def run(index: int) -> None:
        async with limiter:
            results[index] = await calls[index]()

    try:
        async with anyio.create_task_group() as tg:
            for index in range(len(calls)):
                tg.start_soon(run, index)
    except BaseExceptionGroup as group:
        raise primary_error(group) from None
    return [results[i] for i in range(len(calls))]


def parse_answer(parse: Callable[[bytes], T], raw: bytes, what: str) -> T:
    """``parse(raw)``, with what the parsers raise on a bad answer translated: the one place a
    2xx answer that is not what the contract says becomes a :class:`PlatformError`."""
    try:
        return parse(raw)
    except ValidationError as exc:
        reason = describe(exc.errors(include_url=False)[0])
        raise PlatformError(f"unexpected answer to {what}: {reason}", status=200) from None
    except ValueError as exc:  # pydantic_core.from_json: not JSON, or beyond its bounds
        raise PlatformError(
            f"unexpected answer to {what}: not valid JSON: {exc}", status=200
        ) from None


class PlatformClient:
    """Async client of the platform API on the caller's :class:`aiohttp.ClientSession`."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        api_url: str,
        token: SecretStr,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        *,
        organization_id: str | None = None,
        user_agent: str = USER_AGENT,
        max_body: int = DEFAULT_API_MAX_BODY,
    ) -> None:
        self._http = ApiTransport(
            session,
            api_url,
            token,
            retry or RetryPolicy(),
            timeouts or Timeouts(),
            user_agent=user_agent,
            max_body=max_body,
        )
        self.organization_id = organization_id
        if organization_id is not None:
            self._http.set_organization(organization_id)

    def __repr__(self) -> str:
        return "PlatformClient(<token hidden>)"

    # -- plumbing ---------------------------------------------------------------------------

    async def _get(
        self,
        parse: Callable[[bytes], T],
        path: str,
        params: Params | None = None,
        *,
        method: str = "GET",
        body: object = None,
    ) -> T:
        """Send, then validate the answer's bytes straight into models (no dict in between)."""
        # Bodies are small (at most 1000 ids): the stdlib encoder is plenty.
        payload = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        raw = await self._http.request(method, path, params=params, body=payload)
        return parse_answer(parse, raw, f"{method} {path}")

    # -- account ----------------------------------------------------------------------------

    async def ping(self) -> models.Ping:
        """``GET /api/home/ping``; remembers the default organisation for later requests."""
        ping = await self._get(models.Ping.model_validate_json, "/api/home/ping")
        if self.organization_id is None and ping.default_organization:
            self.organization_id = ping.default_organization
            self._http.set_organization(ping.default_organization)
        return ping

    async def organization(self, organization_id: str) -> models.Organization:
        return await self._get(
            models.Organization.model_validate_json, f"/api/organization/{_seg(organization_id)}"
        )

    async def dataset_version(self, dataset_version_id: str) -> models.DatasetVersion:
        return await self._get(
            models.DatasetVersion.model_validate_json,
            f"/api/dataset/version/{_seg(dataset_version_id)}",
        )

    # -- assets -----------------------------------------------------------------------------

    def asset_pages(
        self,
        dataset_version_id: str,
        q: str | None = None,
        limit: int = MAX_PAGE,
        *,
        upload_statuses: Sequence[str] = SDK_UPLOAD_STATUSES,
        types: Sequence[str] = SDK_TYPES,
    ) -> AsyncIterator[ListingPage]:
        """The version's assets, page by page (cursor mode), with one page of read-ahead.

        Malformed assets are in each page's ``rejected``; the listing's bounds are those of
        :func:`~engine.platform.paging.read_ahead`. Close it if you stop early (``async with
        contextlib.aclosing(...)``) so the request in flight is cancelled at once rather than
        when the generator is collected.
        """
        _check_limit(limit)
        path = f"/api/dataset/version/{_seg(dataset_version_id)}/assets"
        base: list[tuple[str, str]] = [("limit", str(limit))]
        if q:
            base.append(("q", q))
        base += [("upload_statuses", s) for s in upload_statuses]
        base += [("types", t) for t in types]

        async def fetch(cursor: str | None) -> ListingPage:
            params = base if cursor is None else [*base, ("cursor", cursor)]
            return await self._get(asset_page, path, params)

        return read_ahead(fetch, limit=limit)

    async def assets_by_ids(
        self,
        dataset_version_id: str,
        ids: Sequence[str],
        *,
        q: str | None = None,
        upload_statuses: Sequence[str] = SDK_UPLOAD_STATUSES,
        types: Sequence[str] = SDK_TYPES,
    ) -> list[models.Asset]:
        """Assets by id through the ``XGET`` listing, each with a freshly signed URL.

        At most 1000 ids a request; ids the version no longer has are simply absent.
        """
        path = f"/api/dataset/version/{_seg(dataset_version_id)}/assets"

        def call(chunk: Sequence[str]) -> Callable[[], Awaitable[models.AssetList]]:
            body: dict[str, object] = {"ids": list(chunk)}
            if q:
                body["q"] = q
            body["upload_statuses"] = list(upload_statuses)
            body["types"] = list(types)
            return lambda: self._get(
                models.AssetList.model_validate_json, path, method="XGET", body=body
            )

        chunks = _chunks(_unique(ids), MAX_IDS_PER_REQUEST)
        pages = await _gather([call(c) for c in chunks])
        return [asset for page in pages for asset in page.items]

    async def asset(self, asset_id: str) -> models.AssetDetail:
        """``GET /api/asset/{id}``: one asset with its asset tags."""
        return await self._get(
            models.AssetDetail.model_validate_json, f"/api/asset/{_seg(asset_id)}"
        )

    def asset_id_pages(
        self, dataset_version_id: str, q: str | None = None, limit: int = MAX_PAGE
    ) -> AsyncIterator[list[str]]:
        """Ids of the version's assets matching ``q``, page by page, with read-ahead."""
        _check_limit(limit)
        path = f"/api/dataset/version/{_seg(dataset_version_id)}/assets/ids/paginated"
        base: list[tuple[str, str]] = [("limit", str(limit))]
        if q:
            base.append(("q", q))

        async def fetch(cursor: str | None) -> models.IdPage:
            params = base if cursor is None else [*base, ("cursor", cursor)]
            return await self._get(models.IdPage.model_validate_json, path, params)

        async def ids() -> AsyncIterator[list[str]]:
            pages = read_ahead(fetch, limit=limit)
            try:
                async for page in pages:
                    yield page.items
            finally:
                await pages.aclose()

        return ids()

    # -- data -------------------------------------------------------------------------------

    async def presigned_url(self, data_id: str) -> str:
        """A freshly signed storage URL for one data object."""
        answer = await self._get(
            models.PresignedUrl.model_validate_json, f"/api/data/{_seg(data_id)}/presigned-url"
        )
        return answer.presigned_url

    async def data(self, data_id: str) -> models.DataDetail:
        """``GET /api/data/{id}``: the data object with its data tags and datalake id."""
        return await self._get(models.DataDetail.model_validate_json, f"/api/data/{_seg(data_id)}")

    # -- tags -------------------------------------------------------------------------------

    async def version_tags(self, dataset_version_id: str) -> list[models.Tag]:
        answer = await self._get(
            models.TagList.model_validate_json,
            f"/api/dataset/version/{_seg(dataset_version_id)}/tags",
        )
        return answer.items

    async def datalake_tags(self, datalake_id: str, limit: int = MAX_PAGE) -> list[models.Tag]:
        """All of a datalake's data tags (paged with ``limit``/``offset``: the endpoint has a
        default limit of 100 and no count, so we read until a short page)."""
        _check_limit(limit)
        path = f"/api/datalake/{_seg(datalake_id)}/tags"
        tags: dict[str, models.Tag] = {}
        offset = 0
        while True:
            params = [("limit", str(limit)), ("offset", str(offset))]
            page = await self._get(models.TagList.model_validate_json, path, params)
            if len(page.items) > limit:
                raise PlatformError(
                    f"the datalake's tags came in a page of {len(page.items)}, more than the "
                    f"{limit} asked for"
                )
            before = len(tags)
            for tag in page.items:
                tags.setdefault(tag.id, tag)
            if len(tags) > MAX_DATALAKE_TAGS:
                raise PlatformError(f"the datalake has more than {MAX_DATALAKE_TAGS:,} tags")
            # A short page ends it; so does a page with nothing new (a server ignoring offset).
            if len(page.items) < limit or len(tags) == before:
                return list(tags.values())
            offset += len(page.items)

    # -- annotations ------------------------------------------------------------------------

    async def asset_annotations(self, asset_id: str) -> list[models.Annotation]:
        answer = await self._get(
            models.AnnotationList.model_validate_json, f"/api/asset/{_seg(asset_id)}/annotations"
        )
        return answer.items

    async def annotation_ids(
        self,
        dataset_version_id: str,
        asset_ids: Sequence[str] | None,
        *,
        status: str | None = None,
    ) -> list[str]:
        """Ids of the annotations of these assets (``None``: of the whole version, in one
        request, as the SDK does when no assets are given)."""
        path = f"/api/dataset/version/{_seg(dataset_version_id)}/annotations/ids"
        base: list[tuple[str, str]] = [("status", status)] if status else []
        if asset_ids is None:
            return await self._get(models.IdList.validate_json, path, base)
        if not asset_ids:
            return []

        def call(chunk: list[str]) -> Callable[[], Awaitable[list[str]]]:
            params = base + [("asset_ids", a) for a in chunk]
            return lambda: self._get(models.IdList.validate_json, path, params)

        chunks = _query_chunks(
            _unique(asset_ids), "asset_ids", ANNOTATION_IDS_PER_REQUEST, _QUERY_BUDGET
        )
        found = await _gather([call(c) for c in chunks])
        return _unique([i for ids in found for i in ids])

    async def annotations_bulk(
        self,
        dataset_version_id: str,
        ids: Sequence[str],
        *,
        chunk_size: int = MAX_IDS_PER_REQUEST,
    ) -> list[models.BulkAnnotation]:
        """Annotations with their shapes, by id, through the bulk ``XGET``.

        ``chunk_size`` (at most 1000) can be lowered for heavy shapes: the SDK uses 100, and 10
        for segmentation versions.
        """
        found = await self._bulk_annotations(
            dataset_version_id, ids, chunk_size, models.BulkAnnotationList.validate_json
        )
        return [annotation for chunk in found for annotation in chunk]

    async def annotation_dicts(
        self,
        dataset_version_id: str,
        ids: Sequence[str],
        *,
        chunk_size: int = MAX_IDS_PER_REQUEST,
    ) -> AnnotationAnswer:
        """The same annotations as :meth:`annotations_bulk`, exactly as the API sent them.

        For the mirror, which stores them as given: decoding into models and dumping them back
        cost more CPU than the rest of a small file's mirroring (measured with py-spy on 2,000
        files: ~14% of the process). Only what the engine reads of each is checked (an object
        with string ``id`` and ``asset_id``, a string or null ``status``); annotations that fail
        that make their asset's annotations unreadable (see :class:`AnnotationAnswer`) instead
        of failing the whole answer.
        """
        answer = AnnotationAnswer()
        for chunk in await self._bulk_annotations(
            dataset_version_id, ids, chunk_size, annotation_answer
        ):
            answer.merge(chunk)
        return answer

    async def _bulk_annotations(
        self,
        dataset_version_id: str,
        ids: Sequence[str],
        chunk_size: int,
        parse: Callable[[bytes], T],
    ) -> list[T]:
        """One parsed answer per request, in id order. A chunk whose answer is too large is
        asked for again in chunks of :data:`SPLIT_CHUNK` (once: a chunk that size still too
        large is an error), so a legitimately heavy version still mirrors while a server that
        answers everything with a bomb costs a handful of refused reads."""
        if not 1 <= chunk_size <= MAX_IDS_PER_REQUEST:
            raise UsageError(f"chunk_size must be between 1 and {MAX_IDS_PER_REQUEST}")
        path = f"/api/dataset/version/{_seg(dataset_version_id)}/annotations"

        def call(chunk: Sequence[str]) -> Callable[[], Awaitable[T]]:
            body = list(chunk)
            return lambda: self._get(parse, path, method="XGET", body=body)

        async def fetch(chunk: Sequence[str]) -> list[T]:
            try:
                return [await call(chunk)()]
            except AnswerTooLarge:
                if len(chunk) <= SPLIT_CHUNK:
                    raise
            return await _gather([call(part) for part in _chunks(chunk, SPLIT_CHUNK)])

        def whole(chunk: Sequence[str]) -> Callable[[], Awaitable[list[T]]]:
            return lambda: fetch(chunk)

        unique = _unique(ids)
        if not unique:
            return []
        found = await _gather([whole(c) for c in _chunks(unique, chunk_size)])
        return [answer for answers in found for answer in answers]
