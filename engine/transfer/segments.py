"""One download in flight: segments, the workers that fill them, and their retry loop.

A :class:`Job` knows the object's validator and its segment plan (``[start, stop)`` pieces of
``segment_size``, computed on demand; one piece per request), and how many bytes of each piece
are on disk (kept for the pieces in flight only). Workers claim pieces in order and fill each
one with ``Range`` requests from where its bytes on disk end, so a piece interrupted by a
reset, a stall or an expired URL resumes on its own. Bytes are written at their offsets into
the partial file as they arrive (:mod:`engine.transfer.body`); the job accounts for them once
they are on disk (:meth:`Job.landed`): sidecar record, hash frontier, progress, the retry
budget, durability checkpoints. A body that carries more than its piece, or that runs past it
when its framing (chunked, until close) does not say where it ends, is an
:class:`IntegrityError`: nothing is ever written past the announced end.

Verification: a 206 must carry the asked-for ``Content-Range`` (a shorter prefix is accepted, the
rest asked for next), the object's total size and its ETag; a 200 to a range request, a 416 or
an ETag change mean the object is not the one on disk: :class:`ObjectChanged` goes up to the
orchestrator, which discards the partial and restarts. Old and new bytes are never spliced.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from engine.errors import (
    IntegrityError,
    ObjectChanged,
    TransientTransferError,
    primary_error,
)
from engine.signed_urls import SignedUrl, redact
from engine.transfer.body import stream_body
from engine.transfer.hashing import PrefixHasher
from engine.transfer.http1 import HttpError, Response
from engine.transfer.partial import Partial, Validator
from engine.transfer.ranges import (
    RangeMismatch,
    SegmentPlan,
    SegmentProgress,
    TotalMismatch,
    check_partial_response,
)
from engine.transfer.retry import Backoff
from engine.transfer.wire import (
    error_for,
    open_get,
    read_error_body,
    set_stall_timeout,
    translate,
)

if TYPE_CHECKING:
    from engine.transfer.context import Context

__all__ = ["Job", "RangeIgnored", "expect_end"]

# With fsync on, make the bytes counted as done durable every this many new bytes, so a reboot
# loses at most this much of a large download.
CHECKPOINT_BYTES = 256 * 1024 * 1024


class RangeIgnored(ObjectChanged):
    """The server answered a range request with the whole object and the same ETag: it does
    not do ranges. The download restarts as one plain stream."""


class Job:
    """The state of one download attempt shared by its workers (all on the event loop)."""

    def __init__(
        self,
        ctx: Context,
        partial: Partial,
        validator: Validator,
        segments: SegmentPlan,
        done: SegmentProgress,
        *,
        ranged: bool,
        inline_hash: bool,
    ) -> None:
        self.ctx = ctx
        self.partial = partial
        self.validator = validator
        self.segments = segments
        self.done = done
        self.ranged = ranged
        self.size = validator.size
        self.resumed_bytes = done.total
        self.downloaded = 0
        self.size_disagreements = 0  # 206 answers whose total differed under the same ETag
        self._claim = done.floor  # pieces below are complete
        self.frontier = done.prefix()
        # The retry budget of each piece being filled: bytes landing there are its progress.
        self._budgets: dict[int, Backoff] = {}
        # In-order single stream from byte 0: hash as bytes arrive; else a prefix thread.
        self.sha = hashlib.sha256() if inline_hash and self.frontier == 0 else None
        self.hasher: PrefixHasher | None = None
        if self.sha is None:
            self.hasher = PrefixHasher(partial.dir_fd, partial.name, self.size)
            self.hasher.advance(self.frontier)
        self._since_checkpoint = 0
        self._synced_floor = 0  # pieces below were recorded as synced by a checkpoint
        self._checkpointing = False
        self._tg: anyio.abc.TaskGroup | None = None
        self.synced = False  # the data file was fsynced after its last byte was written

    # -- claims and the contiguous prefix --------------------------------------------------------

    def claim(self) -> int | None:
        """The next segment with bytes missing that no worker has, or None."""
        segments, done = self.segments, self.done
        while self._claim < segments.pieces:
            index = self._claim
            self._claim += 1
            if done[index] < segments.length(index):
                return index
        return None

    def pending(self) -> int:
        return self.done.pending()

    # -- running ---------------------------------------------------------------------------------

    async def run(
        self,
        workers: int,
        first: tuple[Response, SignedUrl] | None,
        hash_limiter: anyio.CapacityLimiter,
    ) -> str:
        """Fill every segment with up to ``workers`` concurrent requests; return the SHA-256.

        ``first``: an already-open response for segment 0 (a fresh download's first request).
        """
        hasher = self.hasher
        if workers <= 1 and hasher is None and not self._wants_checkpoints():
            # The common small-file case: no task group, no thread.
            await self._worker(first)
            assert self.sha is not None
            return self.sha.hexdigest()
        digest: list[str] = []

        async def hash_prefix(hasher: PrefixHasher) -> None:
            digest.append(await hasher.digest(hash_limiter))

        live = workers

        async def worker(opened: tuple[Response, SignedUrl] | None) -> None:
            nonlocal live
            await self._worker(opened)
            live -= 1
            if live == 0 and hasher is not None and self.ctx.options.fsync:
                # Every byte is written while the hasher still reads the last ones back: make
                # the data durable meanwhile rather than after the digest.
                await anyio.to_thread.run_sync(self.partial.sync)
                self.synced = True

        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if hasher is not None:
                    tg.start_soon(hash_prefix, hasher)
                for n in range(workers):
                    tg.start_soon(worker, first if n == 0 else None)
        except BaseExceptionGroup as group:
            chosen = primary_error(group)
            if chosen is group:
                raise
            raise chosen from None
        finally:
            self._tg = None
            if hasher is not None:
                hasher.stop()
        if self.sha is not None:
            return self.sha.hexdigest()
        return digest[0]

    async def _worker(self, first: tuple[Response, SignedUrl] | None) -> None:
        if first is not None:
            index = self.claim()
            assert index == 0, "the first response always covers segment 0"
            await self._fill(index, first)
        while (index := self.claim()) is not None:
            await self._fill(index, None)

    async def _fill(self, index: int, first: tuple[Response, SignedUrl] | None) -> None:
        start, stop = self.segments[index]
        backoff = Backoff(self.ctx.options.retry, self.ctx.rng, kept=self.done[index])
        opened = first

        async def attempt(url: SignedUrl) -> None:
            nonlocal opened
            if opened is not None:
                response, url = opened
                opened = None
                pos = start + self.done[index]
            else:
                if not self.ranged and self.done[index] > 0:
                    self._rewind()
                pos = start + self.done[index]
                response = await open_get(
                    self.ctx.session,
                    url,
                    start=pos if self.ranged else None,
                    stop=stop if self.ranged else None,
                    if_range=self.validator.if_range if pos > 0 else None,
                    read_timeout=self.ctx.timeout,
                    hold_from=self.ctx.hold_from,
                )
            try:
                await self._consume(index, response, url, pos, stop)
            finally:
                response.release()

        def finished() -> bool:
            return start + self.done[index] >= stop

        self._budgets[index] = backoff
        try:
            await self.ctx.with_retries(backoff, attempt, finished, first[1] if first else None)
        finally:
            del self._budgets[index]

    async def _consume(
        self,
        index: int,
        response: Response,
        url: SignedUrl,
        pos: int,
        stop: int,
    ) -> None:
        status = response.status
        length = response.content_length
        etag = response.headers.get("ETag")
        if status == 206 and self.ranged:
            # The validator first: a new ETag means a new object, whatever its range says.
            if etag is not None and self.validator.etag is not None and etag != self.validator.etag:
                raise ObjectChanged(f"{redact(url.url)}: ETag changed during the download")
            try:
                pos, stop = check_partial_response(
                    response.headers.get("Content-Range"),
                    length,
                    start=pos,
                    stop=stop,
                    total=self.size,
                )
            except TotalMismatch as exc:
                # Same ETag, another size: one of the two answers was wrong. Once may be a
                # glitch of this answer (retry); twice, or with no ETag to vouch for the object,
                # the size we hold is in doubt, and only starting over can settle it.
                self.size_disagreements += 1
                if self.size_disagreements > 1 or self.validator.etag is None:
                    raise ObjectChanged(
                        f"{redact(url.url)}: {exc}; the size is in doubt, starting over"
                    ) from None
                raise TransientTransferError(f"{redact(url.url)}: {exc}") from None
            except RangeMismatch as exc:
                raise TransientTransferError(f"{redact(url.url)}: {exc}") from None
        elif status == 200:
            if self.ranged:
                # Either If-Range saw a new version, or the server ignores Range.
                same = etag is not None and etag == self.validator.etag
                if same and length == self.size:
                    raise RangeIgnored(f"{redact(url.url)}: server ignored Range")
                raise ObjectChanged(f"{redact(url.url)}: object changed (200 to a range request)")
            if length is not None and length != self.size:
                raise ObjectChanged(f"{redact(url.url)}: size changed to {length}")
            if etag is not None and self.validator.etag is not None and etag != self.validator.etag:
                raise ObjectChanged(f"{redact(url.url)}: ETag changed during the download")
        elif status == 416:
            raise ObjectChanged(f"{redact(url.url)}: 416, the object is shorter than before")
        else:
            body = await read_error_body(response)
            raise error_for(
                status,
                body,
                response.headers.get("Retry-After"),
                url=url,
                now=self.ctx.clock(),
            )
        self.ctx.urls.accepted(url)
        set_stall_timeout(response, self.ctx.options.timeouts)
        await stream_body(self, index, response, url, pos, stop, self.ctx.executor)
        if response.content_length is None:
            await expect_end(response, url)

    # -- accounting, called by engine.transfer.body -------------------------------------------

    def received(self, data: bytes) -> None:
        """``data`` came over the network (not yet on disk)."""
        self.ctx.received += len(data)
        if self.sha is not None:
            self.sha.update(data)

    def landed(self, index: int, n: int, chunks: list[bytes] | None = None) -> None:
        """``n`` more bytes of segment ``index`` are on disk, right after its previous ones
        (``chunks``: those bytes, which the hasher may take instead of reading them back)."""
        done = self.done
        head = done.floor
        got = done.add(index, n)
        self.partial.record(index, got)
        self.downloaded += n
        budget = self._budgets.get(index)
        if budget is not None:
            budget.kept(got)
        if head == index:
            offset = self.frontier
            self.frontier = done.prefix()
            if self.hasher is not None:
                self.hasher.advance(self.frontier, offset, chunks)
        emit = self.ctx.emit_bytes
        if emit is not None:
            emit(n, self.resumed_bytes + self.downloaded, self.size)
        if self._tg is not None:
            self._since_checkpoint += n
            if self._since_checkpoint >= CHECKPOINT_BYTES:
                self._start_checkpoint()

    # -- durability and restarts -----------------------------------------------------------------

    def _wants_checkpoints(self) -> bool:
        return self.ctx.options.fsync and self.size - self.resumed_bytes >= CHECKPOINT_BYTES

    def _start_checkpoint(self) -> None:
        if self._checkpointing or self._tg is None or not self.ctx.options.fsync:
            return
        self._since_checkpoint = 0
        self._checkpointing = True
        # What changed since the last checkpoint: the pieces completed meanwhile and those in
        # flight (not the whole plan).
        done, segments = self.done, self.segments
        floor = done.floor
        snapshot = [(i, segments.length(i)) for i in range(self._synced_floor, floor)]
        snapshot += done.entries()
        partial = self.partial

        async def run() -> None:
            try:
                await anyio.to_thread.run_sync(partial.checkpoint, snapshot)
                self._synced_floor = max(self._synced_floor, floor)
            finally:
                self._checkpointing = False

        self._tg.start_soon(run)

    def _rewind(self) -> None:
        """Plain (non-range) stream failed mid-body: back to byte 0 of an empty partial."""
        lost = self.done[0]
        self.partial.discard()
        self.done.clear()
        self.downloaded = 0
        self.frontier = 0
        self.sha = hashlib.sha256()
        self.ctx.emit_restart(lost)


async def expect_end(response: Response, url: SignedUrl) -> None:
    """A body whose framing (chunked, until close) does not say where it ends must end where
    its range does: more bytes mean the server sends something else than it announced."""
    try:
        extra = await response.content.read(1)
    except (HttpError, OSError, TimeoutError) as exc:
        raise translate(exc, url, "body") from None
    if extra:
        raise IntegrityError(f"{redact(url.url)}: the body runs past its announced end")
