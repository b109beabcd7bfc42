"""The first request of a fresh download: it discovers the object and decides the plan.

It asks for ``bytes=0-(segment_size-1)``: an object store answers 206 with the total size in
``Content-Range`` (no HEAD round trip needed), and segment 0 is already on its way. Then:

* 206: size, ETag, Last-Modified from the answer; segments of ``segment_size``; in parallel
  when the size reaches ``segment_threshold``. The response carries on as segment 0.
* 200: the server ignores ranges. One plain stream of ``Content-Length`` bytes (no resume: a
  failure starts again from zero). Without a ``Content-Length`` the body is read to its end,
  but never beyond ``max_object_size`` nor into the disk reserve.
* 416: an empty object (``bytes */0``) or a confused server: ask again without ``Range``.

A size announced above ``max_object_size`` is refused before a byte is written (that object
fails, permanently for this run); one that does not fit above the disk reserve too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from engine.errors import (
    DiskFullError,
    IntegrityError,
    PermanentTransferError,
    TransientTransferError,
)
from engine.signed_urls import SignedUrl, redact
from engine.transfer.body import slow_body
from engine.transfer.context import Context
from engine.transfer.http1 import HttpError, Response
from engine.transfer.min_rate import RateFloor, TooSlow
from engine.transfer.partial import Partial, Validator
from engine.transfer.ranges import (
    RangeMismatch,
    SegmentProgress,
    check_partial_response,
    parse_content_range,
    plan_segments,
)
from engine.transfer.retry import Backoff
from engine.transfer.segments import Job, expect_end
from engine.transfer.wire import (
    error_for,
    open_get,
    read_error_body,
    set_stall_timeout,
    translate,
)

__all__ = ["INLINE_HASH_MAX", "Fresh", "start_fresh"]

# Up to this size a single in-order stream hashes on the event loop as its bytes arrive; above
# it a worker thread hashes the file's prefix on another core (see benchmarks/transfer_bench.py).
INLINE_HASH_MAX = 8 * 1024 * 1024

_UNBOUNDED = -1  # a 200 without Content-Length


@dataclass(slots=True)
class Fresh:
    """A fresh download, ready to go on. One of:

    * ``job`` and ``first``: the job and the open response for its segment 0;
    * ``body``: a small object received whole (no partial file exists yet: the caller writes
      and places it in one worker-thread hop);
    * ``digest``: an unbounded body already drained to the partial file.
    """

    validator: Validator
    job: Job | None = None
    first: tuple[Response, SignedUrl] | None = None
    body: list[bytes] | None = None
    digest: str | None = None


async def start_fresh(ctx: Context, partial: Partial, ranged: bool) -> Fresh:
    """Send the first request (with retries) and build the job from its answer."""
    options = ctx.options
    seg = options.segment_size
    backoff = Backoff(options.retry, ctx.rng)
    found: list[Fresh] = []

    async def attempt(url: SignedUrl) -> None:
        nonlocal ranged
        for _ in range(2):
            response = await open_get(
                ctx.session,
                url,
                start=0 if ranged else None,
                stop=seg if ranged else None,
                if_range=None,
                read_timeout=ctx.timeout,
                hold_from=ctx.hold_from,
            )
            handed = False
            try:
                validator = await _validator(ctx, response, url, ranged)
                if validator is None:
                    # 416 to "bytes=0-…": an empty object (or a confused server); ask plainly.
                    ranged = False
                    continue
                ctx.urls.accepted(url)
                if response.status == 200:
                    ranged = False
                if validator.size == _UNBOUNDED:
                    found.append(await _drain(ctx, partial, response, url, validator, backoff))
                    return
                # Read whole only if this answer carries the whole object (a chunk_size set
                # above segment_size leaves objects in between to the segments).
                whole = not ranged or validator.size <= seg
                if validator.size <= options.chunk_size and whole and not partial.exists:
                    body = await _read_small(ctx, response, url, validator.size)
                    found.append(Fresh(validator=validator, body=body))
                    return
                found.append(_plan(ctx, partial, validator, ranged, response, url))
                handed = True  # the job reads and releases it
                return
            finally:
                if not handed:
                    response.release()
        raise TransientTransferError(f"{redact(url.url)}: no usable answer to a plain GET")

    await ctx.with_retries(backoff, attempt, lambda: bool(found))
    fresh = found[0]
    if fresh.job is not None and fresh.validator.size == 0 and fresh.first is not None:
        response, url = fresh.first
        await _expect_empty(response, url)
        fresh.first = None
    return fresh


def _plan(
    ctx: Context,
    partial: Partial,
    validator: Validator,
    ranged: bool,
    response: Response,
    url: SignedUrl,
) -> Fresh:
    options = ctx.options
    seg = options.segment_size
    size = validator.size
    ctx.disk.room_for(size, redact(url.url))
    # Without ranges the whole body is one piece, and it can only restart from zero.
    segments = plan_segments(size, seg if ranged else max(size, 1))
    partial.begin(validator, seg, segments.pieces, sidecar=ranged and size > options.chunk_size)
    single = not ranged or size < options.segment_threshold
    # A plain stream can only restart from zero, so it always hashes in order, inline.
    inline = not ranged or (single and size <= INLINE_HASH_MAX)
    job = Job(
        ctx,
        partial,
        validator,
        segments,
        SegmentProgress(segments),
        ranged=ranged,
        inline_hash=inline,
    )
    return Fresh(validator=validator, job=job, first=(response, url))


async def _validator(
    ctx: Context, response: Response, url: SignedUrl, ranged: bool
) -> Validator | None:
    """The object's validator from the first answer; None for a 416 (ask again plainly)."""
    status = response.status
    headers = response.headers
    length = response.content_length
    if status == 206 and ranged:
        value = headers.get("Content-Range")
        parsed = parse_content_range(value)
        if parsed is None or parsed.total is None:
            raise TransientTransferError(f"{redact(url.url)}: 206 without a usable Content-Range")
        try:
            check_partial_response(
                value, length, start=0, stop=ctx.options.segment_size, total=parsed.total
            )
        except RangeMismatch as exc:
            raise TransientTransferError(f"{redact(url.url)}: {exc}") from None
        size = parsed.total
    elif status == 200:
        size = _UNBOUNDED if length is None else length
    elif status == 416 and ranged:
        return None
    else:
        body = await read_error_body(response)
        raise error_for(status, body, headers.get("Retry-After"), url=url, now=ctx.clock())
    if size > ctx.options.max_object_size:
        raise PermanentTransferError(
            f"{redact(url.url)}: storage announces {size} bytes, more than "
            f"transfer.max_object_size ({ctx.options.max_object_size})"
        )
    set_stall_timeout(response, ctx.options.timeouts)
    return Validator(
        size=size,
        etag=headers.get("ETag"),
        last_modified=headers.get("Last-Modified"),
        content_type=headers.get("Content-Type"),
    )


async def _read_small(ctx: Context, response: Response, url: SignedUrl, size: int) -> list[bytes]:
    """The whole body of a small object (at most ``chunk_size``), as the connection's buffers."""
    content = response.content
    chunks: list[bytes] = []
    remaining = size
    loop = ctx.loop
    # Made once a second read is needed (a small body usually comes in one): its windows are
    # measured between arrivals, so starting at the first one changes nothing.
    floor: RateFloor | None = None
    try:
        while remaining > 0:
            data = await content.read(remaining)
            if not data:
                raise TransientTransferError(
                    f"{redact(url.url)}: body ended {remaining} bytes early"
                )
            chunks.append(data)
            remaining -= len(data)
            ctx.received += len(data)
            if remaining:
                if floor is None:
                    floor = ctx.rate_floor(loop.time())
                if floor is not None:
                    floor.feed(len(data), loop.time())
    except (HttpError, OSError, TimeoutError) as exc:
        raise translate(exc, url, "body") from None
    except TooSlow as exc:
        raise slow_body(url, exc) from None
    if response.content_length is None:
        await expect_end(response, url)
    return chunks


async def _expect_empty(response: Response, url: SignedUrl) -> None:
    try:
        extra = await response.content.read(1)
    except (HttpError, OSError, TimeoutError) as exc:
        raise translate(exc, url, "body") from None
    finally:
        response.release()
    if extra:
        raise IntegrityError(f"{redact(url.url)}: more bytes than announced")


async def _drain(
    ctx: Context,
    partial: Partial,
    response: Response,
    url: SignedUrl,
    validator: Validator,
    backoff: Backoff,
) -> Fresh:
    """A body of unknown length (no Content-Length): read it to its end, hashing in order.

    Chunked encoding still tells a complete body from a cut one (the client raises); a failure
    starts over from zero on the next attempt since nothing can be resumed. Nothing bounds such
    a body but ``max_object_size`` and the disk reserve: passing either fails it, and its bytes
    are dropped at once (they could never be resumed).
    """
    partial.create()
    partial.discard()
    if ctx.unbounded_kept:
        # A cut body of unknown length cannot be resumed: what the last attempt wrote is gone.
        ctx.emit_restart(ctx.unbounded_kept)
        ctx.unbounded_kept = 0
    sha = hashlib.sha256()
    pos = 0
    content = response.content
    limit = ctx.options.max_object_size
    charge = ctx.disk.charge
    loop = ctx.loop
    floor = ctx.rate_floor(loop.time())
    try:
        while True:
            data, end_of_chunk = await content.readchunk()
            if not data:
                if end_of_chunk:  # an HTTP chunk ended exactly here; (b"", False) is the end
                    continue
                break
            n = len(data)
            if pos + n > limit:
                raise PermanentTransferError(
                    f"{redact(url.url)}: a body of unannounced length passed "
                    f"transfer.max_object_size ({limit} bytes)"
                )
            charge(n)
            partial.write(data, pos)
            sha.update(data)
            pos += n
            ctx.unbounded_kept = pos
            ctx.received += n
            backoff.kept(pos)
            if ctx.emit_bytes is not None:
                ctx.emit_bytes(n, pos, pos)
            if floor is not None:
                floor.feed(n, loop.time())
    except (HttpError, OSError, TimeoutError) as exc:
        raise translate(exc, url, "body") from None
    except TooSlow as exc:
        raise slow_body(url, exc) from None
    except (PermanentTransferError, DiskFullError):
        partial.discard()
        raise
    sized = Validator(
        size=pos,
        etag=validator.etag,
        last_modified=validator.last_modified,
        content_type=validator.content_type,
    )
    return Fresh(validator=sized, digest=sha.hexdigest())
