"""Opening and closing a run, in one place for the mirror and the prefetcher.

Order of opening, each step refusing early and cheaply; nothing on disk is created before the
platform has answered:

1. the settings (version, destination, token) and whether DEST could be used, without creating
   it — :class:`~engine.errors.UsageError`;
2. the platform: who we are (:class:`~engine.errors.AuthError`), the version, the tags a filter
   names (:mod:`engine.preflight`);
3. DEST and its state folder created, and DEST's lock taken — exclusive (a mirror) or shared
   (prefetchers together), :class:`~engine.errors.LockHeldError`
   when busy; a dry run does neither. A mirror of shard ``K/N`` takes its shard's lock instead,
   and uses its shard's manifest (:meth:`StateFolder.shard_files`), so the shards of one DEST
   run side by side;
4. the manifest opened and checked: it mirrors this version, with this layout, and DEST holds
   no manifest of another shard count (:mod:`engine.pipeline.resharding`: refused, or with
   ``reshard`` this shard's rows adopted from them);
5. a run row begun (``assetsync status`` shows it), and the transfer core started.

Closing, whatever happened: the run row finished with its outcome and counts, then everything
let go in the reverse order. The caller says how the run went (:attr:`Run.outcome`); if it did
not, a cancelled run is recorded as ``interrupted``, any other as ``failed``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from engine.destination import check_destination
from engine.errors import UsageError
from engine.manifest import Manifest
from engine.pipeline.lock import DestLock
from engine.pipeline.placed_journal import PlacedJournal, adopt_placed
from engine.pipeline.resharding import adopt_old_shards, old_shards, refuse_change
from engine.pipeline.sessions import open_sessions
from engine.pipeline.sharing import SharedDestLock, claims_locked
from engine.pipeline.summary import Outcome
from engine.pipeline.writer import ManifestAccess
from engine.platform import PlatformClient
from engine.preflight import check_platform
from engine.settings import Settings
from engine.sharding import WHOLE, AssetShard
from engine.state_folder import ShardFiles, StateFolder
from engine.transfer import ProgressEvent, Transferer
from engine.transfer.http1 import StorageHttp

__all__ = ["Run", "RunSpec", "open_run"]

log = logging.getLogger("engine.pipeline.run")


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What kind of run to open. ``options`` are recorded with the run (``layout`` is checked
    against the manifest's last run); ``shared``: DEST's lock held shared, next to other
    prefetchers (:mod:`engine.pipeline.sharing`), else exclusive. ``shard``: the part of the
    version this run mirrors, with its own manifest and lock; ``reshard``: adopt this shard's
    rows from the manifests of another shard count instead of refusing. ``group_commit``: the
    caller records a file only after :meth:`Transferer.sync_placed
    <engine.transfer.Transferer.sync_placed>` vouched for it (its
    :class:`~engine.pipeline.writer.ManifestWriter` is given that barrier), so the transfer
    core may use group commit if ``transfer.group_commit`` is on."""

    options: Mapping[str, Any]
    dry_run: bool = False
    shared: bool = False
    shard: AssetShard = WHOLE
    reshard: bool = False
    group_commit: bool = False


@dataclass(slots=True)
class Run:
    """An open run: what the mirror and the prefetcher hold between opening and closing."""

    settings: Settings
    dataset_version: str
    dest: Path
    state: StateFolder
    client: PlatformClient
    storage: StorageHttp
    manifest: Manifest | None
    db: ManifestAccess
    run_id: int
    transferer: Transferer | None
    # Set by the caller once it knows how the run went; unset, a run that raised is recorded as
    # interrupted (cancelled) or failed.
    outcome: Outcome | None = None
    counts: Callable[[], dict[str, int | float]] = field(default=dict)
    # The part of the version this run mirrors (engine.sharding); the whole of it by default.
    shard: AssetShard = WHOLE
    # Files in place before their rows (engine.pipeline.placed_journal); a run holding DEST
    # alone has one.
    journal: PlacedJournal | None = None

    @property
    def writable(self) -> bool:
        return self.manifest is not None and not self.manifest.read_only


def check_settings(settings: Settings) -> tuple[str, Path]:
    """The version and DEST (absolute), or :class:`~engine.errors.UsageError`; creates nothing."""
    if not settings.dataset_version:
        raise UsageError(
            "no dataset version: give --dataset-version (dataset_version in the settings)"
        )
    if settings.dest is None:
        raise UsageError("no destination: give --dest (dest in the settings)")
    if settings.token is None or not settings.token.get_secret_value().strip():
        raise UsageError(
            "no API token: set PICSELLIA_TOKEN, or give --token-file, or token in the config file"
        )
    dest = check_destination(settings.dest, writable=not settings.dry_run)
    return settings.dataset_version, dest


def _open_manifest(
    state: StateFolder, files: ShardFiles, dry_run: bool, shared: bool
) -> Manifest | None:
    if dry_run:
        if not files.manifest.exists():
            return None
        return Manifest.open(state.dest, create=False, read_only=True, path=files.manifest)
    if shared:
        # Prefetchers sharing a fresh DEST (DataLoader workers) open it at the same moment; the
        # manifest's compatibility check reads the schema in several statements, which a
        # concurrent first migration can interleave with: create and migrate one at a time.
        with claims_locked(state):
            return Manifest.open(state.dest, path=files.manifest)
    return Manifest.open(state.dest, path=files.manifest)


def check_manifest(manifest: Manifest | None, settings: Settings, dataset_version: str) -> None:
    """The manifest mirrors this version (unless ``force``) with this layout."""
    if manifest is None:
        return
    recorded = manifest.dataset_version()
    if recorded is not None and recorded != dataset_version and not settings.force:
        raise UsageError(
            f"{settings.dest} mirrors dataset version {recorded}, not {dataset_version}; "
            "use another destination (or --force, force in the settings, to switch it)"
        )
    last = manifest.last_run()
    layout = (last.options or {}).get("layout") if last is not None else None
    if layout is not None and layout != settings.layout and manifest.count_assets() > 0:
        raise UsageError(
            f"{settings.dest} was mirrored with layout {layout}; use the same layout or "
            "another destination"
        )


@asynccontextmanager
async def open_run(
    settings: Settings,
    spec: RunSpec,
    *,
    on_progress: Callable[[ProgressEvent], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[Run]:
    """Open a run (see the module docstring) and close it when the block ends."""
    dv, dest = check_settings(settings)
    assert settings.token is not None
    dry_run = spec.dry_run
    state = StateFolder(dest)
    files = state.shard_files(spec.shard)
    async with AsyncExitStack() as stack:
        api, storage = await stack.enter_async_context(open_sessions(settings))
        t = settings.transfer
        client = PlatformClient(
            api,
            settings.api_url,
            settings.token,
            t.retry,
            t.timeouts,
            max_body=settings.api_max_body,
        )
        await check_platform(
            client, settings.api_url, dv, tags=settings.tags, data_tags=settings.data_tags
        )
        if not dry_run:
            await anyio.to_thread.run_sync(state.create)
            lock: DestLock | SharedDestLock = (
                SharedDestLock(dest)
                if spec.shared
                else DestLock(dest, stale_after=settings.lock_stale_after, path=files.lock)
            )
            lock.acquire()
            stack.callback(lock.release)
        old = [] if spec.shared else await anyio.to_thread.run_sync(old_shards, state, spec.shard)
        if old and not spec.reshard:
            raise refuse_change(dest, spec.shard, old)
        manifest = await anyio.to_thread.run_sync(
            _open_manifest, state, files, dry_run, spec.shared
        )
        db = ManifestAccess(manifest)
        if manifest is not None:
            stack.push_async_callback(_close_manifest, manifest)
        await db.call(check_manifest, manifest, settings, dv)
        if old and manifest is not None and not manifest.read_only:
            await db.call(
                adopt_old_shards,
                manifest,
                state,
                spec.shard,
                old,
                stale_after=settings.lock_stale_after,
            )
        run_id = 0
        journal = None
        if manifest is not None and not manifest.read_only:
            if not spec.shared:
                # Before this run begins: the files are the last run's, and recorded as seen
                # by it, or this run's listing would take them for repeats.
                journal = await db.call(_adopt_and_journal, state, files, manifest)
                if journal is not None:
                    stack.callback(journal.close)
            run_id = await db.call(manifest.begin_run, dv, settings.api_url, dict(spec.options))
        transferer = None
        if not dry_run:
            transferer = await stack.enter_async_context(
                Transferer(
                    storage,
                    t,
                    state.path,
                    on_progress=on_progress,
                    clock=clock,
                    group_commit=spec.group_commit and t.group_commit,
                )
            )
        run = Run(settings, dv, dest, state, client, storage, manifest, db, run_id, transferer)
        run.shard = spec.shard
        run.journal = journal
        try:
            yield run
        except anyio.get_cancelled_exc_class():
            run.outcome = run.outcome or "interrupted"
            raise
        finally:
            if run.writable:
                counts = run.counts()
                counts.setdefault("pid", os.getpid())
                outcome = run.outcome or "failed"
                with anyio.CancelScope(shield=True):
                    await db.call(manifest.clear_staging, run_id)  # type: ignore[union-attr]
                    await db.call(manifest.finish_run, run_id, outcome, counts)  # type: ignore[union-attr]


def _adopt_and_journal(
    state: StateFolder, files: ShardFiles, manifest: Manifest
) -> PlacedJournal | None:
    """Adopt what the last run put in place without recording it, then open this run's journal
    (None if it cannot be: the run goes on without, at the cost of a download after a kill)."""
    path = state.placed_journal(files)
    last = manifest.last_run()
    adopted = adopt_placed(path, state.dest, manifest, last.run_id) if last is not None else 0
    if adopted:
        log.info("adopted %d files a killed run had put in place without recording them", adopted)
    journal = PlacedJournal(path)
    try:
        journal.open()
    except OSError as exc:
        log.warning("cannot write %s (%s): files are journaled no more", path, exc.strerror)
        return None
    return journal


async def _close_manifest(manifest: Manifest) -> None:
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(manifest.close)
