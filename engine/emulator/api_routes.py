"""The platform API endpoints of platform-api.md (one handler per endpoint kind).

Choices where the contract is silent (also summarised in the package docstring):

* Only the emulator's one organisation, datalake and dataset version exist; other ids get 404.
* Listing order is creation order; cursor mode peeks one item ahead, so ``next_cursor`` is null
  exactly when nothing follows. Offset mode (``order_by``) answers ``next_cursor: null``.
  ``order_by`` accepts ``created_at`` and ``filename``, each optionally prefixed with ``-``.
* ``presigned_url`` is null for the ``null_url_share`` of assets in the GET listing only; XGET,
  ``/api/asset/{id}`` and ``/api/data/{id}`` always sign a fresh URL.
* XGET answers the found assets in creation order (duplicates and unknown ids dropped);
  ``count`` is the number of items. More than 1000 values is 400.
* The bulk annotation XGET answers the annotations found, in the order asked; unknown ids are
  skipped. Annotation ids of an asset change when its annotations are mutated.
* ``annotations/ids`` without ``asset_ids`` lists the whole version.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from engine.emulator.annotations import STATUSES
from engine.emulator.app import ApiError, Context, api_endpoint, dumps
from engine.emulator.params import (
    DATA_TYPES,
    UPLOAD_STATUSES,
    ListingParams,
    check_choices,
    decode_cursor,
    encode_cursor,
    excluded,
    parse_limit,
    parse_listing,
    parse_offset,
    parse_q,
    require_uuid,
)
from engine.emulator.records import AssetRecord
from engine.emulator.views import (
    SDK_VERSION,
    asset_json,
    asset_json_text,
    data_json,
    tag_json,
    version_json,
)

__all__ = ["register"]

_XGET_KEYS = ("ids", "filenames", "object_names", "data_ids", "filename_startswith")
_MAX_BATCH = 1000


def _json(value: Any) -> web.Response:
    return web.json_response(value, dumps=dumps)


def _json_text(text: str) -> web.Response:
    """An answer already serialised as ``dumps`` would (what ``web.json_response`` sends)."""
    return web.Response(text=text, content_type="application/json")


def _items_text(items: list[str], tail: str = "") -> str:
    """``{"items":[...]<tail>}`` from items already serialised."""
    return '{"items":[' + ",".join(items) + "]" + tail + "}"


def _check_org(ctx: Context, request: web.Request) -> None:
    if request.match_info["org"] != ctx.dataset.organization_id:
        raise ApiError(404, "Organization not found.")


def _check_version(ctx: Context, version_id: str) -> None:
    if version_id != ctx.dataset.dataset_version_id:
        raise ApiError(404, "DatasetVersion not found.")


def _live_record(ctx: Context, asset_id: str) -> tuple[int, AssetRecord]:
    index = ctx.dataset.index_of(asset_id)
    if index is None:
        raise ApiError(404, "Asset not found.")
    return index, ctx.dataset.record(index)


@api_endpoint("ping")
async def ping(request: web.Request, ctx: Context) -> web.StreamResponse:
    return _json(
        {
            "sdk_version": SDK_VERSION,
            "username": "emulator",
            "default_organization": ctx.dataset.organization_id,
        }
    )


@api_endpoint("organization")
async def organization(request: web.Request, ctx: Context) -> web.StreamResponse:
    _check_org(ctx, request)
    return _json(
        {"id": ctx.dataset.organization_id, "name": "emulator", "default_connector_id": None}
    )


@api_endpoint("datasetversion_find")
async def datasetversion_find(request: web.Request, ctx: Context) -> web.StreamResponse:
    _check_org(ctx, request)
    wanted = request.query.get("id")
    if not wanted:
        raise ApiError(400, "id is required.")
    _check_version(ctx, require_uuid(wanted, "id"))
    return _json(version_json(ctx))


@api_endpoint("datasetversion")
async def datasetversion(request: web.Request, ctx: Context) -> web.StreamResponse:
    _check_version(ctx, request.match_info["dv"])
    return _json(version_json(ctx))


def _drift(ctx: Context, kind: str, params: ListingParams) -> None:
    """Apply drift rules to a request that continues a listing."""
    if params.cursor is None and not params.offset:
        return
    for rule in ctx.faults.drift_rules(kind):
        ctx.dataset.drift(rule.add, rule.remove, ctx.faults.rng)


def _select(ctx: Context, params: ListingParams) -> tuple[list[int], str | None, int]:
    """Indices of one page, the next cursor and the total count."""
    dataset = ctx.dataset
    if params.empty:
        return [], None, 0
    fingerprint = params.fingerprint()
    if params.order_by:
        indices = dataset.ordered_slice(
            params.order_by, params.query, params.offset or 0, params.limit
        )
        return indices, None, dataset.count(params.query)
    after = decode_cursor(params.cursor, fingerprint) if params.cursor else -1
    found = dataset.page(after, params.limit + 1, params.query, skip=params.offset or 0)
    page = found[: params.limit]
    more = len(found) > params.limit
    cursor = encode_cursor(page[-1], fingerprint) if more and page else None
    return page, cursor, dataset.count(params.query)


@api_endpoint("assets_list")
async def assets_list(request: web.Request, ctx: Context) -> web.StreamResponse:
    _check_version(ctx, request.match_info["dv"])
    params = parse_listing(request.query)
    _drift(ctx, "assets_list", params)
    indices, cursor, count = _select(ctx, params)
    items = []
    for index in indices:
        record = ctx.dataset.record(index)
        items.append(asset_json_text(ctx, record, url=not record.null_url))
    return _json_text(_items_text(items, f',"count":{count},"next_cursor":{dumps(cursor)}'))


@api_endpoint("asset_ids")
async def asset_ids(request: web.Request, ctx: Context) -> web.StreamResponse:
    _check_version(ctx, request.match_info["dv"])
    params = parse_listing(request.query, with_filters=False)
    _drift(ctx, "asset_ids", params)
    indices, cursor, count = _select(ctx, params)
    items = [ctx.dataset.codec.encode("asset", i) for i in indices]
    return _json({"items": items, "count": count, "next_cursor": cursor})


async def _json_body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read() or b"null")
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "The body is not valid JSON.") from None


def _xget_indices(ctx: Context, key: str, values: list[Any]) -> list[int]:
    dataset = ctx.dataset
    wanted = {str(v) for v in values}
    found: set[int] = set()
    if key == "ids":
        found = {i for v in wanted if (i := dataset.index_of(v)) is not None}
    elif key == "data_ids":
        for value in wanted:
            record = dataset.data_record(value)
            if (
                record
                and dataset.is_live(record.index)
                and dataset.gen_of(record.index) == record.gen
            ):
                found.add(record.index)
    elif key == "object_names":
        for value in wanted:
            record = dataset.object_record(value)
            if (
                record
                and dataset.is_live(record.index)
                and dataset.gen_of(record.index) == record.gen
            ):
                found.add(record.index)
    elif key == "filenames":
        found = {i for i in dataset.iter_live() if dataset.record(i).filename in wanted}
    else:
        prefixes = tuple(wanted)
        found = {i for i in dataset.iter_live() if dataset.record(i).filename.startswith(prefixes)}
    return sorted(found)


@api_endpoint("assets_xget")
async def assets_xget(request: web.Request, ctx: Context) -> web.StreamResponse:
    _check_version(ctx, request.match_info["dv"])
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be a JSON object.")
    given = [k for k in _XGET_KEYS if body.get(k)]
    if len(given) != 1:
        raise ApiError(400, f"Give exactly one of {', '.join(_XGET_KEYS)}.")
    key = given[0]
    values = body[key]
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ApiError(400, f"{key} must be a list of strings.")
    if len(values) > _MAX_BATCH:
        raise ApiError(400, f"At most {_MAX_BATCH} {key} per request.")
    statuses = check_choices(body.get("upload_statuses") or [], UPLOAD_STATUSES, "upload_statuses")
    types = check_choices(body.get("types") or [], DATA_TYPES, "types")
    query = parse_q(body.get("q"))
    indices = [] if excluded(statuses, types) else _xget_indices(ctx, key, values)
    items = []
    for index in indices:
        if ctx.dataset.matches(index, query):
            items.append(asset_json_text(ctx, ctx.dataset.record(index)))
    return _json_text(_items_text(items, f',"count":{len(items)}'))


@api_endpoint("asset")
async def asset(request: web.Request, ctx: Context) -> web.StreamResponse:
    index, record = _live_record(ctx, request.match_info["asset_id"])
    body = asset_json(ctx, record)
    body["tags"] = [tag_json(ctx, "ASSET", name) for name in ctx.dataset.asset_tags(index)]
    return _json(body)


def _data_record(ctx: Context, data_id: str) -> AssetRecord:
    record = ctx.dataset.data_record(data_id)
    if record is None:
        raise ApiError(404, "Data not found.")
    return record


@api_endpoint("data")
async def data(request: web.Request, ctx: Context) -> web.StreamResponse:
    record = _data_record(ctx, request.match_info["data_id"])
    body = data_json(ctx, record, url=True)
    body["tags"] = [tag_json(ctx, "DATA", name) for name in ctx.dataset.data_tags(record)]
    body["datalake_id"] = ctx.dataset.datalake_id
    return _json(body)


@api_endpoint("presign")
async def presign(request: web.Request, ctx: Context) -> web.StreamResponse:
    record = _data_record(ctx, request.match_info["data_id"])
    return _json({"presigned_url": ctx.presign(record)})


@api_endpoint("version_tags")
async def version_tags(request: web.Request, ctx: Context) -> web.StreamResponse:
    _check_version(ctx, request.match_info["dv"])
    names = ctx.dataset.asset_tag_names()
    return _json({"items": [tag_json(ctx, "ASSET", n) for n in names]})


@api_endpoint("datalake_tags")
async def datalake_tags(request: web.Request, ctx: Context) -> web.StreamResponse:
    if request.match_info["lake"] != ctx.dataset.datalake_id:
        raise ApiError(404, "Datalake not found.")
    limit = parse_limit(request.query)
    offset = parse_offset(request.query) or 0
    names = ctx.dataset.data_tag_names()[offset : offset + limit]
    return _json({"items": [tag_json(ctx, "DATA", n) for n in names]})


@api_endpoint("labels")
async def labels(request: web.Request, ctx: Context) -> web.StreamResponse:
    _check_version(ctx, request.match_info["dv"])
    codec = ctx.dataset.codec
    items = [
        {"id": codec.encode("label", k), "name": name, "group_id": None}
        for k, name in enumerate(ctx.dataset.label_names())
    ]
    return _json({"items": items})


@api_endpoint("asset_annotations")
async def asset_annotations(request: web.Request, ctx: Context) -> web.StreamResponse:
    index, _ = _live_record(ctx, request.match_info["asset_id"])
    keys = ("id", "asset_id", "duration", "status", "attributes")
    items = [{k: a[k] for k in keys} for a in ctx.dataset.annotations(index)]
    return _json({"items": items})


@api_endpoint("annotation_ids")
async def annotation_ids(request: web.Request, ctx: Context) -> web.StreamResponse:
    _check_version(ctx, request.match_info["dv"])
    status = request.query.get("status")
    if status is not None and status not in STATUSES:
        raise ApiError(400, "Invalid status.", detail=status)
    wanted = [require_uuid(v, "asset_ids") for v in request.query.getall("asset_ids", [])]
    dataset = ctx.dataset
    if wanted:
        indices = sorted({i for v in wanted if (i := dataset.index_of(v)) is not None})
    else:
        indices = list(dataset.iter_live())
    out = [annotation_id for i in indices for annotation_id in dataset.annotation_ids(i, status)]
    return _json(out)


@api_endpoint("annotations_bulk")
async def annotations_bulk(request: web.Request, ctx: Context) -> web.StreamResponse:
    _check_version(ctx, request.match_info["dv"])
    body = await _json_body(request)
    if not isinstance(body, list) or not all(isinstance(v, str) for v in body):
        raise ApiError(400, "The body must be a JSON list of annotation ids.")
    if len(body) > _MAX_BATCH:
        raise ApiError(400, f"At most {_MAX_BATCH} annotation ids per request.")
    found = [ctx.dataset.annotation_text(v) for v in body]
    return _json_text("[" + ",".join(a for a in found if a is not None) + "]")


def register(router: web.UrlDispatcher) -> None:
    dv = "/api/dataset/version/{dv}"
    router.add_get("/api/home/ping", ping)
    router.add_get("/api/organization/{org}", organization)
    router.add_get("/api/organization/{org}/datasetversions/find", datasetversion_find)
    router.add_get(dv, datasetversion)
    router.add_get(f"{dv}/assets", assets_list)
    router.add_route("XGET", f"{dv}/assets", assets_xget)
    router.add_get(f"{dv}/assets/ids/paginated", asset_ids)
    router.add_get("/api/asset/{asset_id}", asset)
    router.add_get("/api/data/{data_id}", data)
    router.add_get("/api/data/{data_id}/presigned-url", presign)
    router.add_get(f"{dv}/tags", version_tags)
    router.add_get("/api/datalake/{lake}/tags", datalake_tags)
    router.add_get(f"{dv}/labels", labels)
    router.add_get("/api/asset/{asset_id}/annotations", asset_annotations)
    router.add_get(f"{dv}/annotations/ids", annotation_ids)
    router.add_route("XGET", f"{dv}/annotations", annotations_bulk)
