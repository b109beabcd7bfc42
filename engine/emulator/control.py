"""The control endpoint: change faults, TTL, clock and data of a running emulator over HTTP.

Every route lives under ``/_emulator/`` and requires ``X-Emulator-Secret: <control secret>``
(compared in constant time). Without it the answer is the same 404 as an unknown route, so the
endpoint's existence is not revealed. Routes (JSON in, JSON out):

=======  ==========================  =========================================================
GET      /_emulator/state            ids, URL TTL, clock offset, rules, counters
PUT      /_emulator/url-ttl          ``{"seconds": 5}``
POST     /_emulator/clock            ``{"advance": 3600}``: move the emulator's clock forward
POST     /_emulator/faults           a FaultRule as JSON -> the rule with its ``id``
DELETE   /_emulator/faults           remove every rule
DELETE   /_emulator/faults/{id}      remove one rule
GET      /_emulator/counters         counters snapshot
POST     /_emulator/counters/reset   zero the counters
POST     /_emulator/quiesce          wait until no storage response is under way (``{"timeout":
                                     30}`` optional) -> counters snapshot; 503 on timeout
POST     /_emulator/mutations        ``{"op": "replace_data"|"rewrite_object"|"add_assets"|
                                     "delete_assets"|"set_asset_tags"|"set_data_tags"|
                                     "set_annotations"|"mutate_annotations", ...arguments}``
=======  ==========================  =========================================================

``rewrite_object`` takes ``data_id`` and an optional ``size`` and answers the object's new
``revision``, ``size``, ``etag``, ``last_modified`` (epoch seconds) and ``sha256``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from engine.emulator.app import CONTEXT, Context, dumps, json_error
from engine.emulator.faults import FaultRule

__all__ = ["register"]

Handler = Callable[[web.Request, Context, Any], Awaitable[Any]]


class _Unavailable(Exception):
    """The control request could not be served in time (503)."""


def _guarded(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def endpoint(request: web.Request) -> web.StreamResponse:
        ctx = request.app[CONTEXT]
        given = request.headers.get("X-Emulator-Secret", "")
        if not secrets.compare_digest(given.encode(), ctx.control_secret.encode()):
            return json_error(404, "Not found.")
        body: Any = None
        if request.can_read_body:
            try:
                body = json.loads(await request.read())
            except ValueError:
                return json_error(400, "The body is not valid JSON.")
        try:
            result = await handler(request, ctx, body)
        except (KeyError, ValueError, TypeError) as exc:
            return json_error(400, "Bad control request.", detail=str(exc))
        except _Unavailable as exc:
            return json_error(503, str(exc))
        return web.json_response(result, dumps=dumps)

    return endpoint


async def _state(request: web.Request, ctx: Context, body: Any) -> Any:
    dataset = ctx.dataset
    return {
        "organization_id": dataset.organization_id,
        "datalake_id": dataset.datalake_id,
        "dataset_version_id": dataset.dataset_version_id,
        "assets": dataset.count(),
        "url_ttl": ctx.faults.url_ttl,
        "clock_offset": ctx.clock_offset,
        "faults": [rule.to_dict() for rule in ctx.faults.rules],
        "counters": ctx.counters.snapshot(),
    }


async def _url_ttl(request: web.Request, ctx: Context, body: Any) -> Any:
    seconds = float(body["seconds"])
    if seconds < 0:
        raise ValueError("seconds must be >= 0")
    ctx.faults.url_ttl = seconds
    return {"url_ttl": seconds}


async def _clock(request: web.Request, ctx: Context, body: Any) -> Any:
    ctx.clock_offset += float(body["advance"])
    return {"clock_offset": ctx.clock_offset, "now": ctx.now()}


async def _add_fault(request: web.Request, ctx: Context, body: Any) -> Any:
    if not isinstance(body, dict):
        raise ValueError("a fault rule is a JSON object")
    return ctx.faults.add(FaultRule.from_dict(body)).to_dict()


async def _clear_faults(request: web.Request, ctx: Context, body: Any) -> Any:
    ctx.faults.clear()
    return {"faults": []}


async def _remove_fault(request: web.Request, ctx: Context, body: Any) -> Any:
    rule_id = request.match_info["rule_id"]
    if not ctx.faults.remove(rule_id):
        raise KeyError(f"no rule {rule_id}")
    return {"removed": rule_id}


async def _counters(request: web.Request, ctx: Context, body: Any) -> Any:
    return ctx.counters.snapshot()


async def _reset_counters(request: web.Request, ctx: Context, body: Any) -> Any:
    ctx.counters.reset()
    return ctx.counters.snapshot()


async def _quiesce(request: web.Request, ctx: Context, body: Any) -> Any:
    timeout = float(body.get("timeout", 30.0)) if isinstance(body, dict) else 30.0
    try:
        await asyncio.wait_for(ctx.activity.idle(), timeout)
    except TimeoutError:
        raise _Unavailable(f"storage still busy after {timeout} s") from None
    return ctx.counters.snapshot()


async def _rewrite(ctx: Context, body: dict[str, Any]) -> Any:
    data_id = body["data_id"]
    size = body.get("size")
    revision = ctx.dataset.rewrite_object(
        data_id, None if size is None else int(size), now=int(ctx.now())
    )
    record = ctx.dataset.data_record(data_id)
    assert record is not None
    digests = await ctx.dataset.content_source.digests_async(record.source)
    return {
        "data_id": data_id,
        "revision": revision,
        "size": record.source.size,
        "etag": digests.etag,
        "last_modified": record.last_modified,
        "sha256": digests.sha256,
    }


async def _mutate(request: web.Request, ctx: Context, body: Any) -> Any:
    if not isinstance(body, dict):
        raise ValueError("a mutation is a JSON object with an 'op'")
    dataset = ctx.dataset
    op = body["op"]
    if op == "replace_data":
        return {"data_id": dataset.replace_data(body["asset_id"])}
    if op == "rewrite_object":
        return await _rewrite(ctx, body)
    if op == "add_assets":
        return {"asset_ids": dataset.add_assets(int(body["n"]))}
    if op == "delete_assets":
        dataset.delete_assets(list(body["asset_ids"]))
        return {"deleted": list(body["asset_ids"])}
    if op == "set_asset_tags":
        dataset.set_asset_tags(body["asset_id"], list(body["names"]))
        return {"ok": True}
    if op == "set_data_tags":
        dataset.set_data_tags(body["asset_id"], list(body["names"]))
        return {"ok": True}
    if op == "set_annotations":
        return {"ids": dataset.set_annotations(body["asset_id"], list(body["annotations"]))}
    if op == "mutate_annotations":
        return {"ids": dataset.mutate_annotations(body["asset_id"])}
    raise ValueError(f"unknown op {op!r}")


def register(router: web.UrlDispatcher) -> None:
    base = "/_emulator"
    router.add_get(f"{base}/state", _guarded(_state))
    router.add_put(f"{base}/url-ttl", _guarded(_url_ttl))
    router.add_post(f"{base}/clock", _guarded(_clock))
    router.add_post(f"{base}/faults", _guarded(_add_fault))
    router.add_delete(f"{base}/faults", _guarded(_clear_faults))
    router.add_delete(f"{base}/faults/{{rule_id}}", _guarded(_remove_fault))
    router.add_get(f"{base}/counters", _guarded(_counters))
    router.add_post(f"{base}/counters/reset", _guarded(_reset_counters))
    router.add_post(f"{base}/quiesce", _guarded(_quiesce))
    router.add_post(f"{base}/mutations", _guarded(_mutate))
