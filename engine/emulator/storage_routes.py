"""The built-in object store: ``GET``/``HEAD /{s3|gcs|azure}/{bucket}/{object_name}``.

Order of checks, as object stores do it: signature (403), expiry (the style's answer), object
(404), injected status faults, then the body. Errors are XML in the style's dialect. Headers:
``Accept-Ranges: bytes``, ``Content-Length``, quoted ``ETag`` (MD5, or multipart-style above the
part size), ``Last-Modified``, ``Content-Type``; ``Range`` / ``If-Range`` per
:mod:`engine.emulator.ranges`; a 416 carries ``Content-Range: bytes */<size>``.

The object is looked up once per request: a response already under way keeps sending the
bytes of the version it started with when the object is rewritten meanwhile (a consistent
snapshot, as object stores give). The ``ignore_range``, ``ignore_if_range`` and ``misrange``
faults act on the range selection, ``drop``/``stall``/``throttle``/``chunked`` on the body.
Every answer is counted by status (:class:`~engine.emulator.counters.Counters`) and every
handler is tracked by :class:`~engine.emulator.activity.StorageActivity` (for ``quiesce``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from xml.sax.saxutils import escape

from aiohttp import web

from engine.emulator.app import CONTEXT, Context, format_retry_after
from engine.emulator.bodies import ConnectionDropped, send_body, send_file
from engine.emulator.faults import FaultRule
from engine.emulator.ranges import UNSATISFIABLE, http_date, select_range
from engine.emulator.records import AssetRecord
from engine.emulator.signing import Signer, Verdict

__all__ = ["register", "storage_error"]

SMALL_BODY = 64 * 1024

_FAULT_CODES = {
    500: ("InternalError", "We encountered an internal error. Please try again."),
    502: ("BadGateway", "The gateway received an invalid response."),
    503: ("SlowDown", "Please reduce your request rate."),
    429: ("TooManyRequests", "Too many requests."),
    404: ("NoSuchKey", "The specified key does not exist."),
}


def storage_error(
    status: int,
    code: str,
    message: str,
    extra: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An object-store XML error document."""
    fields = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in (extra or {}).items())
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{escape(message)}</Message>{fields}"
        f"<RequestId>{uuid.uuid4().hex}</RequestId></Error>"
    )
    return web.Response(
        status=status, text=body, content_type="application/xml", headers=headers or {}
    )


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _expired(style: str, params: web.Request, now: float) -> web.Response:
    expires = Signer.expiry(style, params.query)
    if style == "s3":
        return storage_error(
            403,
            "AccessDenied",
            "Request has expired",
            {
                "X-Amz-Expires": params.query["X-Amz-Expires"],
                "Expires": _iso(expires),
                "ServerTime": _iso(now),
            },
        )
    if style == "gcs":
        return storage_error(
            400,
            "ExpiredToken",
            "The provided token has expired.",
            {"Details": f"Request signature expired at: {_iso(expires)}"},
        )
    return storage_error(
        403,
        "AuthenticationFailed",
        "Server failed to authenticate the request. Make sure the value of Authorization "
        "header is formed correctly including the signature.",
        {
            "AuthenticationErrorDetail": f"Signed expiry time [{http_date(expires)}] must be "
            f"after signed start time [{http_date(int(now))}]"
        },
    )


def _refused(style: str, verdict: Verdict) -> web.Response:
    if style == "azure":
        detail = "Signature did not match." if verdict is Verdict.TAMPERED else "sig is missing."
        return storage_error(
            403,
            "AuthenticationFailed",
            "Server failed to authenticate the request.",
            {"AuthenticationErrorDetail": detail},
        )
    if verdict is Verdict.TAMPERED:
        return storage_error(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        )
    return storage_error(403, "AccessDenied", "Access Denied")


def _not_found(style: str) -> web.Response:
    if style == "azure":
        return storage_error(404, "BlobNotFound", "The specified blob does not exist.")
    return storage_error(404, "NoSuchKey", "The specified key does not exist.")


def _fault(status: int, retry_after: float | None) -> web.Response:
    code, message = _FAULT_CODES.get(status, (f"Error{status}", f"Injected status {status}."))
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = format_retry_after(retry_after)
    return storage_error(status, code, message, headers=headers)


async def storage_object(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    ctx.counters.hit("storage")
    ctx.activity.begin()
    try:
        if ctx.storage_latency > 0:
            await asyncio.sleep(ctx.storage_latency)  # an object store's time to first byte
        return await _answer(request, ctx)
    finally:
        ctx.activity.end()


async def _answer(request: web.Request, ctx: Context) -> web.StreamResponse:
    found = _lookup(request, ctx)
    if isinstance(found, web.Response):
        ctx.counters.answered(found.status)
        return found
    return await _serve(request, ctx, found)


def _lookup(request: web.Request, ctx: Context) -> web.Response | AssetRecord:
    """The object's record, or the error answer due before any body (signature, expiry,
    object, injected status)."""
    style = request.match_info["style"]
    now = ctx.now()
    verdict = ctx.signer.verify(style, request.path, request.query, now)
    if verdict is Verdict.EXPIRED:
        return _expired(style, request, now)
    if verdict is not Verdict.OK:
        return _refused(style, verdict)
    record = ctx.dataset.object_record(request.match_info["object_name"])
    if record is None:
        return _not_found(style)
    rule = ctx.faults.status_rule("storage", record.data_id)
    if rule is not None:
        return _fault(rule.status, rule.retry_after)
    return record


async def _serve(request: web.Request, ctx: Context, record: AssetRecord) -> web.StreamResponse:
    source = record.source
    size = source.size
    digests = await ctx.dataset.content_source.digests_async(source)
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": digests.etag,
        "Last-Modified": http_date(record.last_modified),
        "Content-Type": record.content_type,
    }
    range_header = request.headers.get("Range")
    if range_header is not None and ctx.faults.ignore_range("storage", record.data_id):
        range_header = None
    if_range = request.headers.get("If-Range")
    if if_range is not None and ctx.faults.ignore_if_range("storage", record.data_id):
        if_range = None
    selection = select_range(
        range_header,
        if_range,
        size=size,
        etag=digests.etag,
        last_modified=record.last_modified,
    )
    if selection == UNSATISFIABLE:
        headers["Content-Range"] = f"bytes */{size}"
        del headers["Content-Type"]
        ctx.counters.answered(416)
        return storage_error(
            416,
            "InvalidRange",
            "The requested range is not satisfiable",
            {"RangeRequested": range_header or "", "ActualObjectSize": str(size)},
            headers=headers,
        )
    start, end = (0, size) if selection is None else selection
    status = 200
    if selection is not None:
        status = 206
        total = size
        asked = (start, end)

        def misstates(rule: FaultRule) -> bool:
            return _misranged(asked, rule, size) != (asked, size)

        rule = ctx.faults.misrange_rule("storage", record.data_id, misstates)
        if rule is not None:
            (start, end), total = _misranged(asked, rule, size)
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{total}"
    ctx.counters.answered(status)
    if request.method == "HEAD":
        head = web.StreamResponse(status=status, headers=headers)
        head.content_length = end - start
        await head.prepare(request)
        await head.write_eof()
        return head
    return await _send(request, ctx, record, status, headers, start, end)


async def _send(
    request: web.Request,
    ctx: Context,
    record: AssetRecord,
    status: int,
    headers: dict[str, str],
    start: int,
    end: int,
) -> web.StreamResponse:
    source, data_id, counters = record.source, record.data_id, ctx.counters
    plan = ctx.faults.body_plan("storage", data_id, end - start)
    if plan.plain and end - start <= SMALL_BODY:
        # Small bodies go out with their headers in one write: cheaper than a sendfile call.
        body = b"".join(ctx.dataset.content_source.iter_bytes(source, start, end))
        counters.add_storage_bytes(data_id, len(body))
        return web.Response(status=status, body=body, headers=headers)
    response = web.StreamResponse(status=status, headers=headers)
    if plan.chunked:
        response.enable_chunked_encoding()
    else:
        response.content_length = end - start
    await response.prepare(request)

    def on_bytes(count: int) -> None:
        counters.add_storage_bytes(data_id, count)

    try:
        if plan.plain and source.path is not None:
            await send_file(request, response, source.path, start, end, on_bytes)
        else:
            chunks = ctx.dataset.content_source.iter_bytes(source, start, end)
            await send_body(request, response, chunks, plan, on_bytes)
    except ConnectionDropped:
        return response
    await response.write_eof()
    return response


def _misranged(asked: tuple[int, int], rule: FaultRule, size: int) -> tuple[tuple[int, int], int]:
    """What a misrange rule serves for ``asked``: the range moved by ``shift`` (kept inside the
    non-empty object, same length where it fits) and the total announced."""
    start, end = asked
    moved = min(max(0, start + rule.shift), size - 1)
    return (moved, min(moved + (end - start), size)), max(0, size + rule.total_shift)


def register(router: web.UrlDispatcher) -> None:
    path = r"/{style:s3|gcs|azure}/{bucket}/{object_name:.+}"
    router.add_get(path, storage_object)  # add_get also answers HEAD
