"""``await engine.mirror(settings)``: one run, from checks to summary.

Order of a run, each step refusing early and cheaply; nothing on disk is created before the
platform has answered:

1. check the settings (version, destination, token) and that DEST could be used, without
   creating it — :class:`~engine.errors.UsageError`;
2. ask the platform who we are (:class:`~engine.errors.AuthError`), for the version and for the
   tags a filter names (:mod:`engine.preflight`);
3. create DEST and take its lock — :class:`~engine.errors.LockHeldError` (a dry run does
   neither);
4. open the manifest and check it mirrors this version with this layout;
5. run the pipeline (:mod:`engine.mirroring.listing`);
6. delete what left the version, if asked and if the listings were complete
   (:mod:`engine.mirroring.deletion`);
7. record the run and return its :class:`~engine.pipeline.summary.MirrorSummary`.

Cancellation (a signal) still records the run as interrupted and keeps partial files for resume.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio

from engine.destination import check_destination
from engine.errors import EngineError, UsageError, primary_error
from engine.manifest import Manifest
from engine.mirroring.deletion import DeletionReport, delete_unseen, stage_version_ids
from engine.mirroring.listing import Pipeline, PipelineResult
from engine.pipeline.jobs import PlannedAction
from engine.pipeline.lock import DestLock
from engine.pipeline.summary import LiveCounters, MirrorSummary, Outcome
from engine.pipeline.writer import ManifestAccess
from engine.platform import PlatformClient
from engine.platform.query import tags_filter
from engine.preflight import check_platform
from engine.settings import Settings
from engine.state_folder import StateFolder
from engine.transfer import Transferer
from engine.transfer.http1 import StorageHttp
from engine.transfer.proxies import Proxies, ProxyConfigError

__all__ = ["mirror", "open_sessions"]


def _check(settings: Settings) -> tuple[str, Path]:
    if not settings.dataset_version:
        raise UsageError(
            "no dataset version: give --dataset-version (or dataset_version in config)"
        )
    if settings.dest is None:
        raise UsageError("no destination: give --dest (or dest in config)")
    if settings.token is None or not settings.token.get_secret_value().strip():
        raise UsageError(
            "no API token: set PICSELLIA_TOKEN, or give --token-file, or token in the config file"
        )
    dest = check_destination(settings.dest, writable=not settings.dry_run)
    return settings.dataset_version, dest


def _create_destination(dest: Path) -> None:
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create destination {dest}: {exc.strerror}") from None


@asynccontextmanager
async def open_sessions(
    settings: Settings,
) -> AsyncIterator[tuple[aiohttp.ClientSession, StorageHttp]]:
    """An aiohttp session for the API, and the storage connection pool: separate, so downloads
    never queue the API behind them; the pool carries the per-host limit, segments included.
    Both go through the proxies the environment names (one rule: engine.transfer.proxies)."""
    limits = settings.limits
    t = settings.transfer
    try:
        proxies = Proxies.from_environment()
    except ProxyConfigError as exc:
        raise UsageError(str(exc)) from None
    with warnings.catch_warnings():
        # aiohttp 3.14 deprecates a session-wide proxy_auth (for proxy_headers on every call);
        # it works until aiohttp 4, which pyproject.toml excludes.
        warnings.simplefilter("ignore", DeprecationWarning)
        api = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=16, limit_per_host=8, enable_cleanup_closed=True),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=t.timeouts.connect),
            **_api_proxy(proxies, settings.api_url),
        )
    storage = StorageHttp(
        limit=limits.concurrency * max(1, t.segments // 2) + t.segments,
        limit_per_host=limits.per_host,
        connect_timeout=t.timeouts.connect,
        proxies=proxies,
    )
    try:
        yield api, storage
    finally:
        storage.close()
        with anyio.CancelScope(shield=True):
            await api.close()


def _api_proxy(proxies: Proxies, api_url: str) -> dict[str, Any]:
    """The API session's proxy arguments. Not ``trust_env=True``: that also reads ~/.netrc,
    and a netrc entry for the API's host (or a ``default`` one) makes aiohttp refuse our own
    ``Authorization`` header with a ValueError. The credentials go apart from the URL, which
    aiohttp quotes in its error messages."""
    proxy = proxies.for_full_url(api_url)
    if proxy is None:
        return {}
    if proxy.credentials is None:
        return {"proxy": proxy.url}
    return {"proxy": proxy.url, "proxy_auth": aiohttp.BasicAuth(*proxy.credentials)}


@contextmanager
def _lock(settings: Settings, dest: Path) -> Iterator[None]:
    if settings.dry_run:
        yield
        return
    with DestLock(dest, stale_after=settings.lock_stale_after):
        yield


def _open_manifest(settings: Settings, dest: Path) -> Manifest | None:
    if settings.dry_run:
        if not StateFolder(dest).manifest.exists():
            return None
        return Manifest.open(dest, create=False, read_only=True)
    return Manifest.open(dest)


def _check_manifest(manifest: Manifest | None, settings: Settings, dv: str) -> None:
    if manifest is None:
        return
    recorded = manifest.dataset_version()
    if recorded is not None and recorded != dv and not settings.force:
        raise UsageError(
            f"{settings.dest} mirrors dataset version {recorded}, not {dv}; "
            "use another --dest (or --force to switch it)"
        )
    last = manifest.last_run()
    layout = (last.options or {}).get("layout") if last is not None else None
    if layout is not None and layout != settings.layout and manifest.count_assets() > 0:
        raise UsageError(
            f"{settings.dest} was mirrored with --layout {layout}; use the same layout or a new "
            "--dest"
        )


def _run_options(settings: Settings) -> dict[str, Any]:
    return {
        "layout": settings.layout,
        "delete": settings.delete,
        "delete_excluded": settings.delete_excluded,
        "tags": list(settings.tags),
        "data_tags": list(settings.data_tags),
        "concurrency": settings.limits.concurrency,
        "dry_run": settings.dry_run,
    }


async def mirror(
    settings: Settings,
    *,
    counters: LiveCounters | None = None,
    plan_sink: Callable[[PlannedAction], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> MirrorSummary:
    """Mirror ``settings.dataset_version`` into ``settings.dest`` and return what happened.

    Raises :class:`~engine.errors.EngineError` subclasses for what stops a run before or during
    it (usage, authentication, lock, full disk); failures of single assets are in the summary.
    """
    dv, dest = _check(settings)
    counters = counters or LiveCounters()
    assert settings.token is not None
    async with AsyncExitStack() as stack:
        api_session, storage_session = await stack.enter_async_context(open_sessions(settings))
        client = PlatformClient(
            api_session,
            settings.api_url,
            settings.token,
            settings.transfer.retry,
            settings.transfer.timeouts,
            max_body=settings.api_max_body,
        )
        await check_platform(
            client, settings.api_url, dv, tags=settings.tags, data_tags=settings.data_tags
        )
        if not settings.dry_run:
            await anyio.to_thread.run_sync(_create_destination, dest)
        with _lock(settings, dest):
            manifest = await anyio.to_thread.run_sync(_open_manifest, settings, dest)
            try:
                _check_manifest(manifest, settings, dv)
                return await _run(
                    settings, dv, dest, manifest, client, storage_session, counters, plan_sink,
                    clock,
                )  # fmt: skip
            finally:
                if manifest is not None:
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(manifest.close)
    raise AssertionError("unreachable")  # pragma: no cover - the stack does not swallow


async def _run(
    settings: Settings,
    dv: str,
    dest: Path,
    manifest: Manifest | None,
    client: PlatformClient,
    storage_session: StorageHttp,
    counters: LiveCounters,
    plan_sink: Callable[[PlannedAction], None] | None,
    clock: Callable[[], float],
) -> MirrorSummary:
    db = ManifestAccess(manifest)
    async with AsyncExitStack() as stack:
        writable = manifest is not None and not settings.dry_run
        run_id = (
            await db.call(manifest.begin_run, dv, settings.api_url, _run_options(settings))  # type: ignore[union-attr]
            if writable
            else 0
        )
        transferer = None
        if not settings.dry_run:
            transferer = await stack.enter_async_context(
                Transferer(
                    storage_session,
                    settings.transfer,
                    StateFolder(dest).path,
                    on_progress=counters.on_progress,
                    clock=clock,
                )
            )
        pipeline = Pipeline(
            settings=settings,
            client=client,
            transferer=transferer,
            db=db,
            run_id=run_id,
            counters=counters,
            dest=dest,
            clock=clock,
            plan_sink=plan_sink,
        )
        outcome: Outcome = "failed"
        deletion_note: str | None = None
        planned_deletions = deletions_kept = 0
        error: str | None = None
        try:
            result = await _unwrap(pipeline.run(tags_filter(settings.tags, settings.data_tags)))
            if settings.delete or settings.delete_excluded:
                report = await _delete(settings, dv, dest, client, db, run_id, result, counters)
                planned_deletions, deletions_kept = report.candidates, report.kept
                deletion_note = report.note
            outcome = _outcome(settings, result, counters)
            error = result.listing_error
        except anyio.get_cancelled_exc_class():
            outcome = "interrupted"
            raise
        except EngineError as exc:
            error = str(exc)
            raise
        finally:
            if writable:
                with anyio.CancelScope(shield=True):
                    await db.call(manifest.clear_staging, run_id)  # type: ignore[union-attr]
                    await db.call(
                        manifest.finish_run,  # type: ignore[union-attr]
                        run_id,
                        outcome,
                        _counts(counters, transferer),
                    )
    stats = transferer.stats if transferer is not None else None
    return MirrorSummary(
        dataset_version=dv,
        dest=str(dest),
        outcome=outcome,
        listed=counters.listed,
        downloaded=counters.downloaded if not settings.dry_run else counters.to_download,
        skipped=counters.skipped,
        updated=counters.updated,
        deleted=counters.deleted,
        failed=counters.failed,
        bytes_downloaded=None if settings.dry_run else (stats.bytes if stats else 0),
        bytes_resumed=counters.bytes_resumed,
        duration_seconds=round(counters.elapsed, 3),
        url_refreshes=(stats.refreshes if stats else 0) + pipeline.result.url_batch_refreshes,
        retries=stats.retries if stats else 0,
        resumes=stats.resumes if stats else 0,
        tag_changes=counters.tag_changes,
        annotation_changes=counters.annotation_changes,
        planned_deletions=planned_deletions,
        deletions_kept=deletions_kept,
        deletion_note=deletion_note,
        failures=tuple(counters.failures),
        error=error,
        warnings=tuple(pipeline.result.warnings),
    )


async def _delete(
    settings: Settings,
    dv: str,
    dest: Path,
    client: PlatformClient,
    db: ManifestAccess,
    run_id: int,
    result: PipelineResult,
    counters: LiveCounters,
) -> DeletionReport:
    filtered = bool(settings.tags or settings.data_tags)
    complete = result.listing_complete and result.listing_error is None
    if filtered and not settings.delete_excluded and complete:
        # The filtered listing cannot tell "left the version" from "left out by the filter".
        ids_error = await stage_version_ids(client, dv, db, run_id, settings.page_size)
        if ids_error is not None:
            # As for a broken listing: nothing is deleted, and the run says it failed.
            complete = result.listing_complete = False
            result.listing_error = ids_error
    return await delete_unseen(
        dest=dest,
        db=db,
        run_id=run_id,
        listing_complete=complete,
        max_delete_percent=settings.max_delete,
        force=settings.force,
        dry_run=settings.dry_run,
        counters=counters,
        filtered=filtered,
        delete_excluded=settings.delete_excluded,
    )


async def _unwrap(run: Any) -> PipelineResult:
    """anyio reports a failed task group as an exception group: surface the error it stands for."""
    try:
        result: PipelineResult = await run
    except BaseExceptionGroup as group:
        error = primary_error(group)
        if error is group:
            raise
        raise error from None
    return result


def _outcome(settings: Settings, result: PipelineResult, counters: LiveCounters) -> Outcome:
    if settings.dry_run:
        return "dry-run"
    if not result.listing_complete:
        return "failed"
    return "partial" if counters.failed else "ok"


def _counts(counters: LiveCounters, transferer: Transferer | None) -> dict[str, int | float]:
    stats = transferer.stats if transferer is not None else None
    return {
        "listed": counters.listed,
        "downloaded": counters.downloaded,
        "skipped": counters.skipped,
        "updated": counters.updated,
        "deleted": counters.deleted,
        "failed": counters.failed,
        "bytes": stats.bytes if stats else 0,
        "retries": stats.retries if stats else 0,
        "refreshes": stats.refreshes if stats else 0,
        "resumes": stats.resumes if stats else 0,
        "seconds": round(counters.elapsed, 3),
        "pid": os.getpid(),
    }
