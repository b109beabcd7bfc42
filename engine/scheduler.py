"""The mirror pipeline: stages in one anyio task group, joined by bounded memory streams.

::

    lister ──pages──▶ annotator ──pages+annotations──▶ planner ──jobs (per page)──▶ freshness
      │                                                   │                           │
      │                        tags staged in SQLite ─────┘                       jobs│
      │                                                   │ metadata-only, seen       ▼
      └─ count ─▶ progress                                └──────────────▶ writer ◀── fetchers (N)

Every stream holds at most a page (or ``concurrency`` jobs), so memory stays flat however large
the version is, and a slow stage throttles the ones before it instead of letting work pile up.
The manifest is touched from one worker thread (SQLite is synchronous); the writer commits
whatever has accumulated in one transaction, so commits are few when files are many.

Errors: an asset that fails after the transfer core's retries is recorded as failed and the run
goes on; a listing that fails stops listing (so nothing is deleted) but lets queued work finish;
an authentication failure or a full disk stops the run.
"""

from __future__ import annotations

import os
import stat as stat_module
import time
from collections.abc import Callable, Collection, Mapping, Sequence, Set
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.to_thread
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from anyio.streams.memory import MemoryObjectReceiveStream

from engine import layout
from engine.errors import AuthError, DiskFullError, EngineError, NotFoundError
from engine.manifest import AssetRow, AssetUpdate, FileInfo, Manifest
from engine.manifest.digests import annotations_digest, path_key, tags_digest
from engine.metadata import TagStager, fetch_page_annotations
from engine.plan import Action, LocalFile, StoredAsset, decide
from engine.platform import PlatformClient, models
from engine.settings import Settings
from engine.signed_urls import SignedUrl
from engine.summary import Failure, LiveCounters
from engine.transfer import ObjectRef, Transferer

__all__ = ["ManifestAccess", "Pipeline", "PipelineResult", "PlannedAction"]

P = ParamSpec("P")
T = TypeVar("T")

# Jobs whose URL will not stay valid this long after planning are refreshed in one batch
# (XGET by ids) before they queue for a fetcher, instead of one request each later.
_FRESHNESS_SLACK = 60.0
_MAX_BATCH = 1000


class ManifestAccess:
    """Runs manifest calls on one worker thread: SQLite is synchronous, the loop must not be."""

    def __init__(self, manifest: Manifest | None) -> None:
        self.manifest = manifest
        self._limiter = anyio.CapacityLimiter(1)

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self._limiter)


@dataclass(slots=True)
class Job:
    """One asset to download, with what the manifest must record once the file is in place."""

    asset: models.Asset
    rel_path: PurePosixPath
    url: SignedUrl | None
    tags: tuple[str, ...]
    data_tags: tuple[str, ...]
    annotations: list[dict[str, Any]] | None
    reason: str


@dataclass(frozen=True, slots=True)
class PlannedAction:
    """One line of a dry run's plan."""

    action: str
    asset_id: str
    path: str | None
    reason: str


@dataclass(slots=True)
class PipelineResult:
    listing_complete: bool = False
    listing_error: str | None = None
    url_batches: int = 0
    url_batch_refreshes: int = 0


@dataclass(slots=True)
class _InFlightPaths:
    """Paths handed to jobs whose rows are not committed yet (bounded by the queues)."""

    owners: dict[str, str] = field(default_factory=dict)
    by_asset: dict[str, list[str]] = field(default_factory=dict)

    def claim(self, asset_id: str, path: PurePosixPath) -> None:
        keys = [path_key("/".join(path.parts[: i + 1])) for i in range(len(path.parts))]
        self.owners[keys[-1]] = asset_id
        for key in keys[:-1]:
            self.owners.setdefault(key + "/", asset_id)
        self.by_asset[asset_id] = [keys[-1], *(k + "/" for k in keys[:-1])]

    def release(self, asset_ids: Collection[str]) -> None:
        for asset_id in asset_ids:
            for key in self.by_asset.pop(asset_id, ()):
                if self.owners.get(key) == asset_id:
                    del self.owners[key]


class Pipeline:
    """One run of the mirror pipeline over one dataset version."""

    def __init__(
        self,
        *,
        settings: Settings,
        client: PlatformClient,
        transferer: Transferer | None,
        db: ManifestAccess,
        run_id: int,
        counters: LiveCounters,
        dest: Path,
        clock: Callable[[], float] = time.time,
        plan_sink: Callable[[PlannedAction], None] | None = None,
    ) -> None:
        assert settings.dataset_version is not None
        self.settings = settings
        self.dv = settings.dataset_version
        self.client = client
        self.transferer = transferer
        self.db = db
        self.run_id = run_id
        self.counters = counters
        self.dest = dest
        self.clock = clock
        self.plan_sink = plan_sink
        self.result = PipelineResult()
        self._in_flight = _InFlightPaths()
        self._tags_ready = anyio.Event()
        self._first_data_id: str | None = None
        self._first_page_seen = anyio.Event()
        self._dry_run = transferer is None

    # -- the whole pipeline ------------------------------------------------------------------

    async def run(self, query: str | None) -> PipelineResult:
        concurrency = self.settings.limits.concurrency
        pages_tx, pages_rx = anyio.create_memory_object_stream[models.AssetPage](1)
        annotated_tx, annotated_rx = anyio.create_memory_object_stream[
            tuple[models.AssetPage, dict[str, list[dict[str, Any]]]]
        ](1)
        chunks_tx, chunks_rx = anyio.create_memory_object_stream[list[Job]](1)
        jobs_tx, jobs_rx = anyio.create_memory_object_stream[Job](concurrency)
        writes_tx, writes_rx = anyio.create_memory_object_stream[AssetUpdate | list[str]](
            2 * concurrency + _MAX_BATCH
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._stage_tags)
            tg.start_soon(self._lister, query, pages_tx)
            tg.start_soon(self._annotator, pages_rx, annotated_tx)
            tg.start_soon(self._planner, annotated_rx, chunks_tx, writes_tx.clone())
            tg.start_soon(self._freshness, chunks_rx, jobs_tx)
            async with jobs_rx, writes_tx:
                for _ in range(concurrency if not self._dry_run else 1):
                    tg.start_soon(self._fetcher, jobs_rx.clone(), writes_tx.clone())
            tg.start_soon(self._writer, writes_rx)
        return self.result

    # -- stages ------------------------------------------------------------------------------

    async def _stage_tags(self) -> None:
        manifest = self.db.manifest
        if manifest is None:
            # A dry run into an empty DEST: every asset is new, tags decide nothing.
            self._tags_ready.set()
            return

        async def stage(kind: str, name: str, ids: Sequence[str]) -> None:
            await self.db.call(manifest.stage_tags, self.run_id, kind, name, ids)  # type: ignore[arg-type]

        async def datalake_id() -> str | None:
            await self._first_page_seen.wait()
            if self._first_data_id is None:
                return None
            return (await self.client.data(self._first_data_id)).datalake_id

        try:
            await TagStager(self.client, self.dv, stage).run(datalake_id)
        finally:
            self._tags_ready.set()

    async def _lister(self, query: str | None, out: ObjectSendStream[models.AssetPage]) -> None:
        async with out:
            try:
                async for page in self.client.asset_pages(
                    self.dv, q=query, limit=self.settings.page_size
                ):
                    if not self._first_page_seen.is_set():
                        self._first_data_id = page.items[0].data.id if page.items else None
                        self._first_page_seen.set()
                    if page.count is not None:
                        self.counters.total = max(
                            page.count, self.counters.listed + len(page.items)
                        )
                    self.counters.listed += len(page.items)
                    if page.items:
                        await out.send(page)
                self.result.listing_complete = True
            except AuthError:
                raise
            except EngineError as exc:
                # Keep what was listed flowing; a run with a broken listing deletes nothing.
                self.result.listing_error = str(exc)
            finally:
                self._first_page_seen.set()

    async def _annotator(
        self,
        pages: ObjectReceiveStream[models.AssetPage],
        out: ObjectSendStream[tuple[models.AssetPage, dict[str, list[dict[str, Any]]]]],
    ) -> None:
        # Fetching the next page's annotations while the planner decides the current one keeps
        # the metadata requests off the critical path.
        async with pages, out:
            async for page in pages:
                ids = [asset.id for asset in page.items]
                annotations = await fetch_page_annotations(self.client, self.dv, ids)
                await out.send((page, annotations))

    async def _planner(
        self,
        pages: ObjectReceiveStream[tuple[models.AssetPage, dict[str, list[dict[str, Any]]]]],
        out: ObjectSendStream[list[Job]],
        writes: ObjectSendStream[AssetUpdate | list[str]],
    ) -> None:
        async with pages, out, writes:
            await self._tags_ready.wait()
            async for page, annotations in pages:
                jobs, updates, seen = await self._plan_page(page, annotations)
                if jobs:
                    await out.send(jobs)
                for update in updates:
                    await writes.send(update)
                if seen:
                    await writes.send(seen)

    async def _plan_page(
        self, page: models.AssetPage, annotations: Mapping[str, list[dict[str, Any]]]
    ) -> tuple[list[Job], list[AssetUpdate], list[str]]:
        ids = [asset.id for asset in page.items]
        rows, staged, local = await self.db.call(self._read_page_state, ids)
        wanted: dict[str, PurePosixPath] = {}
        decisions = []
        not_ready: list[str] = []
        for asset in page.items:
            if asset.data.upload_status not in (None, "DONE"):
                # Listed but not uploaded yet (PENDING, COMPUTING, ERROR): nothing to fetch.
                # Kept as seen so an earlier file is not deleted while a re-upload is pending.
                not_ready.append(asset.id)
                continue
            tags, data_tags = staged.get(asset.id, ((), ()))
            anns = annotations.get(asset.id, [])
            row = rows.get(asset.id)
            t_digest = tags_digest(tags, data_tags)
            a_digest = annotations_digest(anns)
            if row is not None:
                self.counters.tag_changes += row.tags_digest != t_digest
                self.counters.annotation_changes += row.annotations_digest != a_digest
            decision = decide(
                data_id=asset.data.id,
                object_name=asset.data.object_name,
                stored=_stored(row),
                local=local.get(asset.id),
                tags_digest=t_digest,
                annotations_digest=a_digest,
            )
            decisions.append((asset, row, tags, data_tags, anns, decision))
            if decision.action is Action.DOWNLOAD:
                wanted[asset.id] = layout.candidate(
                    asset.id,
                    asset.data.filename,
                    layout=self.settings.layout,
                    content_type=asset.data.content_type,
                )
        paths = await self._assign_paths(wanted, rows)
        jobs: list[Job] = []
        updates: list[AssetUpdate] = []
        seen: list[str] = list(not_ready)
        self.counters.not_ready += len(not_ready)
        obtained = self.clock()
        unknown = self.settings.transfer.unknown_url_lifetime
        for asset, row, tags, data_tags, anns, decision in decisions:
            if decision.action is Action.DOWNLOAD:
                rel = paths[asset.id]
                self._in_flight.claim(asset.id, rel)
                self.counters.to_download += 1
                url = asset.data.presigned_url
                jobs.append(
                    Job(
                        asset=asset,
                        rel_path=rel,
                        url=None
                        if url is None
                        else SignedUrl.parse(url, obtained_at=obtained, unknown_lifetime=unknown),
                        tags=tags,
                        data_tags=data_tags,
                        annotations=anns,
                        reason=decision.reason,
                    )
                )
                self._emit_plan("download", asset.id, str(rel), decision.reason)
            elif decision.action is Action.UPDATE_METADATA:
                self.counters.updated += 1
                updates.append(_update(asset, tags, data_tags, anns, file=None))
                self._emit_plan("update", asset.id, row.path if row else None, decision.reason)
            else:
                self.counters.skipped += 1
                seen.append(asset.id)
        return jobs, updates, seen

    def _read_page_state(
        self, ids: Sequence[str]
    ) -> tuple[
        dict[str, AssetRow],
        dict[str, tuple[tuple[str, ...], tuple[str, ...]]],
        dict[str, LocalFile],
    ]:
        # One trip to the manifest thread per page: rows, staged tags and an lstat of each
        # recorded file (lstat: a symlink planted at a recorded path is not our file).
        manifest = self.db.manifest
        if manifest is None:
            return {}, {}, {}
        rows = manifest.rows(ids)
        staged = manifest.staged_tags(self.run_id, ids)
        local: dict[str, LocalFile] = {}
        for asset_id, row in rows.items():
            if row.path is None:
                continue
            try:
                st = os.lstat(self.dest / row.path)
            except OSError:
                continue
            local[asset_id] = LocalFile(st.st_size, stat_module.S_ISREG(st.st_mode))
        return rows, staged, local

    async def _assign_paths(
        self, wanted: Mapping[str, PurePosixPath], rows: Mapping[str, AssetRow]
    ) -> dict[str, PurePosixPath]:
        if not wanted:
            return {}
        claims = [
            layout.Claim(
                asset_id,
                path,
                PurePosixPath(rows[asset_id].path)  # type: ignore[arg-type]
                if asset_id in rows and rows[asset_id].path
                else None,
            )
            for asset_id, path in wanted.items()
        ]
        manifest = self.db.manifest
        in_flight = dict(self._in_flight.owners)

        def lookup(keys: Collection[str]) -> tuple[Mapping[str, str], Set[str]]:
            owners: dict[str, str] = {}
            dirs: set[str] = set()
            if manifest is not None:
                owners.update(manifest.path_owners(list(keys)))
                dirs.update(manifest.directory_keys(list(keys)))
            for key in keys:
                owner = in_flight.get(key)
                if owner is not None:
                    owners.setdefault(key, owner)
                if key + "/" in in_flight:
                    dirs.add(key)
            return owners, dirs

        return await self.db.call(layout.assign_paths, claims, lookup)

    def _emit_plan(self, action: str, asset_id: str, path: str | None, reason: str) -> None:
        if self.plan_sink is not None:
            self.plan_sink(PlannedAction(action, asset_id, path, reason))

    async def _freshness(
        self, chunks: ObjectReceiveStream[list[Job]], out: ObjectSendStream[Job]
    ) -> None:
        margin = self.settings.transfer.url_margin + _FRESHNESS_SLACK
        async with chunks, out:
            async for jobs in chunks:
                if not self._dry_run:
                    now = self.clock()
                    stale = [j for j in jobs if j.url is None or j.url.valid_for(now) < margin]
                    for start in range(0, len(stale), _MAX_BATCH):
                        await self._refresh_batch(stale[start : start + _MAX_BATCH])
                for job in jobs:
                    await out.send(job)

    async def _refresh_batch(self, jobs: list[Job]) -> None:
        """Fresh URLs for up to 1000 assets in one request (the XGET listing by ids)."""
        try:
            fresh = await self.client.assets_by_ids(self.dv, [j.asset.id for j in jobs])
        except AuthError:
            raise
        except EngineError:
            return  # each transfer refreshes its own URL if the batch could not
        self.result.url_batches += 1
        obtained = self.clock()
        unknown = self.settings.transfer.unknown_url_lifetime
        by_id = {asset.id: asset for asset in fresh}
        for job in jobs:
            asset = by_id.get(job.asset.id)
            if asset is None or asset.data.presigned_url is None:
                continue
            # The asset may have been given new content since it was listed: follow it, so the
            # manifest records the data the file holds.
            job.asset = asset
            job.url = SignedUrl.parse(
                asset.data.presigned_url, obtained_at=obtained, unknown_lifetime=unknown
            )
            self.result.url_batch_refreshes += 1

    async def _fetcher(
        self, jobs: ObjectReceiveStream[Job], writes: ObjectSendStream[AssetUpdate | list[str]]
    ) -> None:
        async with jobs, writes:
            async for job in jobs:
                await writes.send(await self._fetch_one(job))

    async def _fetch_one(self, job: Job) -> AssetUpdate | list[str]:
        asset = job.asset
        if self.transferer is None:  # dry run: the plan was emitted, nothing moves
            self._in_flight.release([asset.id])
            return [asset.id]
        client = self.client
        data_id = asset.data.id

        async def refresh() -> str:
            return await client.presigned_url(data_id)

        try:
            result = await self.transferer.fetch(
                ObjectRef(asset.id, data_id), job.url, refresh, self.dest, job.rel_path
            )
        except (AuthError, DiskFullError):
            raise
        except EngineError as exc:
            message = str(exc)
            if isinstance(exc, NotFoundError):
                message = f"gone from the platform during the run: {message}"
            self.counters.add_failure(Failure(asset.id, asset.data.filename, message))
            return _update(
                asset,
                job.tags,
                job.data_tags,
                job.annotations,
                file=None,
                state="failed",
                error=message,
            )
        self.counters.downloaded += 1
        self.counters.bytes_resumed += result.bytes_resumed
        return _update(
            asset,
            job.tags,
            job.data_tags,
            job.annotations,
            file=FileInfo(
                path=result.rel_path.as_posix(),
                size=result.size,
                sha256=result.sha256,
                etag=result.etag,
            ),
            content_type=result.content_type,
        )

    async def _writer(self, items: MemoryObjectReceiveStream[AssetUpdate | list[str]]) -> None:
        async with items:
            try:
                async for first in items:
                    await self._commit_batch(self._drain(items, first))
            finally:
                # Cancelled (a signal, a fatal error): files already in place must still reach
                # the database, or the next run would fetch them again.
                with anyio.CancelScope(shield=True):
                    leftover: list[AssetUpdate | list[str]] = []
                    while True:
                        try:
                            leftover.append(items.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                            break
                    if leftover:
                        await self._commit_batch(leftover)

    @staticmethod
    def _drain(
        items: MemoryObjectReceiveStream[AssetUpdate | list[str]], first: AssetUpdate | list[str]
    ) -> list[AssetUpdate | list[str]]:
        """``first`` and whatever else is already queued, up to a batch."""
        batch = [first]
        while len(batch) < _MAX_BATCH:
            try:
                batch.append(items.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
        return batch

    async def _commit_batch(self, batch: Sequence[AssetUpdate | list[str]]) -> None:
        manifest = self.db.manifest
        if manifest is None:
            return
        updates = [item for item in batch if isinstance(item, AssetUpdate)]
        seen = [asset_id for item in batch if isinstance(item, list) for asset_id in item]
        if self._dry_run:
            # Read-only: the seen marks go to a scratch table, for the deletion count.
            seen += [u.asset_id for u in updates]
            updates = []
        with anyio.CancelScope(shield=True):
            await self.db.call(_commit, manifest, self.run_id, updates, seen)
        self._in_flight.release([u.asset_id for u in updates])


def _commit(
    manifest: Manifest, run_id: int, updates: Sequence[AssetUpdate], seen: Sequence[str]
) -> None:
    if manifest.read_only:
        manifest.mark_seen(run_id, seen)  # a dry run: scratch marks, for the deletion count
    else:
        manifest.apply(updates, run_id, seen=seen)  # one transaction for both


def _stored(row: AssetRow | None) -> StoredAsset | None:
    if row is None:
        return None
    return StoredAsset(
        data_id=row.data_id,
        object_name=row.object_name,
        path=row.path,
        size=row.size,
        state=row.state,
        tags_digest=row.tags_digest,
        annotations_digest=row.annotations_digest,
    )


def _update(
    asset: models.Asset,
    tags: Sequence[str],
    data_tags: Sequence[str],
    annotations: list[dict[str, Any]] | None,
    *,
    file: FileInfo | None,
    state: Any = "ok",
    error: str | None = None,
    content_type: str | None = None,
) -> AssetUpdate:
    data = asset.data
    metadata: dict[str, Any] = {}
    if data.metadata:
        metadata["metadata"] = data.metadata
    if data.custom_metadata:
        metadata["custom_metadata"] = data.custom_metadata
    return AssetUpdate(
        asset_id=asset.id,
        data_id=data.id,
        object_name=data.object_name,
        filename=data.filename,
        content_type=data.content_type or content_type,
        width=data.width,
        height=data.height,
        metadata=metadata,
        tags=tuple(tags),
        data_tags=tuple(data_tags),
        annotations=annotations,
        file=file,
        state=state,
        error=error,
    )
