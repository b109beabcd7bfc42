"""One listing page against the manifest: what to download, update or skip, and where.

:class:`PagePlanner` gathers the facts for a page in one trip to the manifest thread (rows and
an ``lstat`` of each recorded file), asks the pure :func:`engine.plan.decide` for each asset
(download?), gives each download a path from :func:`engine.layout.assign_paths`, and once the
page's tags and annotations are in asks it again for the files kept (update or skip). Paths
handed out but not yet committed are remembered (:class:`InFlightPaths`) so two assets of
different pages never get the same path; the claim is dropped once the manifest records it.

What the listing gets wrong is settled here too, asset by asset:

- a malformed listed item (:class:`~engine.platform.per_item.Rejected`) fails its asset; its id,
  when readable, is marked seen so its earlier file is not deleted; without an id it is counted
  in ``unidentified`` (the run must then delete nothing);
- an asset listed twice in a run (twice in a page, in a page still in flight, or, with
  ``once_per_run``, already committed this run according to the manifest) is planned once: the
  first occurrence wins and the repeats are returned in ``duplicates``;
- tags or annotations that could not be read are left as the manifest has them (``None``), and
  an asset whose annotations could not be read is reported as a failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Container, Mapping, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from engine import layout
from engine.digests import annotations_digest, path_key, tags_digest
from engine.manifest import AssetRow, AssetUpdate
from engine.pipeline.dest_files import local_file
from engine.pipeline.jobs import AssetJob, PlannedAction, update_for
from engine.pipeline.metadata import StagedTags
from engine.pipeline.summary import Failure, LiveCounters
from engine.pipeline.writer import ManifestAccess
from engine.plan import Action, LocalFile, StoredAsset, decide
from engine.platform import models
from engine.platform.per_item import Rejected
from engine.signed_urls import SignedUrl

__all__ = [
    "ContentPlan",
    "InFlightPaths",
    "PagePlan",
    "PagePlanner",
    "stored_asset",
]


@dataclass(slots=True)
class InFlightPaths:
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


@dataclass(slots=True)
class PagePlan:
    """What a page's current files need once its metadata is known: metadata-only updates, and
    the assets to mark as seen (skipped, or not uploaded yet)."""

    updates: list[AssetUpdate] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ContentPlan:
    """A page judged on content alone: downloads can start before tags and annotations are in.

    ``jobs`` carry no metadata yet (:meth:`PagePlanner.settle` fills it in); ``kept`` are the
    assets whose file is current, to be skipped or updated once metadata is known.
    ``also_seen``: ids of rejected items, marked seen with the page; ``duplicates``: assets
    listed again, not planned; ``unidentified``: rejected items without a readable id.
    """

    order: list[str]
    rows: dict[str, AssetRow]
    jobs: list[AssetJob] = field(default_factory=list)
    # Files found current, with what lstat said of them (asked again once metadata is in).
    kept: list[tuple[models.Asset, AssetRow, LocalFile | None]] = field(default_factory=list)
    not_ready: list[str] = field(default_factory=list)
    also_seen: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    unidentified: int = 0


def stored_asset(row: AssetRow | None) -> StoredAsset | None:
    """The manifest row as the pure planner sees it."""
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


class PagePlanner:
    def __init__(
        self,
        *,
        db: ManifestAccess,
        run_id: int,
        dest: Path,
        layout_name: Literal["name", "id"],
        unknown_url_lifetime: float,
        counters: LiveCounters,
        clock: Callable[[], float] = time.time,
        plan_sink: Callable[[PlannedAction], None] | None = None,
        once_per_run: bool = False,
    ) -> None:
        # once_per_run: each asset is planned at most once in this run, so a manifest row seen
        # by this run is a repeat (the mirror; the prefetcher plans an asset once per epoch).
        self.once_per_run = once_per_run
        self.db = db
        self.run_id = run_id
        self.dest = dest
        self.layout_name = layout_name
        self.unknown_url_lifetime = unknown_url_lifetime
        self.counters = counters
        self.clock = clock
        self.plan_sink = plan_sink
        self.in_flight = InFlightPaths()

    async def plan_content(
        self,
        assets: Sequence[models.Asset],
        *,
        rejected: Sequence[Rejected] = (),
        in_flight: Container[str] = frozenset(),
    ) -> ContentPlan:
        """Which files of a page must be downloaded, and where; no metadata needed.

        ``in_flight``: ids of earlier pages not committed yet (a repeat of one is a duplicate).
        """
        unique: dict[str, models.Asset] = {}
        duplicates: list[str] = []
        for asset in assets:
            if asset.id in unique or asset.id in in_flight:
                duplicates.append(asset.id)
            else:
                unique[asset.id] = asset
        rows, local = await self.db.call(self._read_page_state, list(unique))
        if self.once_per_run and self.run_id:
            seen = [a for a, stored in rows.items() if stored.last_seen_run == self.run_id]
            for asset_id in seen:
                duplicates.append(asset_id)
                del unique[asset_id]
                del rows[asset_id]
        plan = ContentPlan(order=list(unique), rows=rows, duplicates=duplicates)
        self._reject(plan, rejected)
        wanted: dict[str, PurePosixPath] = {}
        reasons: list[tuple[models.Asset, str]] = []
        for asset in unique.values():
            if asset.data.upload_status not in (None, "DONE"):
                # Listed but not uploaded yet (PENDING, COMPUTING, ERROR): nothing to fetch.
                # Kept as seen so an earlier file is not deleted while a re-upload is pending.
                plan.not_ready.append(asset.id)
                continue
            row = rows.get(asset.id)
            found = local.get(asset.id)
            decision = decide(
                data_id=asset.data.id,
                object_name=asset.data.object_name,
                stored=stored_asset(row),
                local=found,
                tags_digest=None,  # not known yet: the question is only "download?"
                annotations_digest=None,
            )
            if decision.action is not Action.DOWNLOAD:
                assert row is not None  # only a known asset can be current
                plan.kept.append((asset, row, found))
                continue
            reasons.append((asset, decision.reason))
            wanted[asset.id] = layout.candidate(
                asset.id,
                asset.data.filename,
                layout=self.layout_name,
                content_type=asset.data.content_type,
            )
        self.counters.not_ready += len(plan.not_ready)
        paths = await self._assign_paths(wanted, rows)
        obtained = self.clock()
        for asset, reason in reasons:
            rel = paths[asset.id]
            self.in_flight.claim(asset.id, rel)
            url = asset.data.presigned_url
            signed = (
                None
                if url is None
                else SignedUrl.parse(
                    url, obtained_at=obtained, unknown_lifetime=self.unknown_url_lifetime
                )
            )
            plan.jobs.append(AssetJob(asset, rel, signed, (), (), None, reason=reason))
            self._emit("download", asset.id, str(rel), reason)
        self.counters.to_download += len(plan.jobs)
        return plan

    def file_current(self, asset: models.Asset, row: AssetRow | None) -> bool:
        """Whether ``row``'s file holds ``asset``'s current content (the prefetcher asks it of
        a file another process may have put in place meanwhile)."""
        if row is None or row.path is None:
            return False
        decision = decide(
            data_id=asset.data.id,
            object_name=asset.data.object_name,
            stored=stored_asset(row),
            local=local_file(self.dest, row.path),
            tags_digest=None,
            annotations_digest=None,
        )
        return decision.action is not Action.DOWNLOAD

    def _reject(self, plan: ContentPlan, rejected: Sequence[Rejected]) -> None:
        for item in rejected:
            why = f"malformed listing item: {item.reason}"
            self.counters.add_failure(Failure(item.asset_id or "", item.filename, why))
            if item.asset_id is None:
                plan.unidentified += 1
            else:
                plan.also_seen.append(item.asset_id)

    def settle(
        self,
        content: ContentPlan,
        staged: StagedTags | None,
        annotations: Mapping[str, list[dict[str, Any]]],
        unreadable: Mapping[str, str] | None = None,
    ) -> PagePlan:
        """The page once its tags and annotations are known: jobs get their metadata, kept
        assets are skipped or updated, and changes are counted.

        ``staged=None``: this run's tags are unknown; ``unreadable``: assets whose annotations
        could not be read, with why. What is unknown is left as the manifest has it.
        """
        unreadable = unreadable or {}
        plan = PagePlan(seen=[*content.not_ready, *content.also_seen])
        counters = self.counters
        rows = content.rows

        def tags_of(asset_id: str) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
            if staged is None:
                return None, None
            return staged.get(asset_id, ((), ()))

        def annotations_of(asset: models.Asset) -> list[dict[str, Any]] | None:
            why = unreadable.get(asset.id)
            if why is None:
                return annotations.get(asset.id, [])
            counters.add_failure(
                Failure(
                    asset.id,
                    asset.data.filename,
                    f"annotations could not be read (the stored ones are kept): {why}",
                )
            )
            return None

        for job in content.jobs:
            job.tags, job.data_tags = tags_of(job.asset.id)
            job.annotations = annotations_of(job.asset)
            row = rows.get(job.asset.id)
            if row is not None:
                self._count_changes(row, job.tags, job.data_tags, job.annotations)
        for asset, row, found in content.kept:
            tags, data_tags = tags_of(asset.id)
            anns = annotations_of(asset)
            t_digest, a_digest = self._count_changes(row, tags, data_tags, anns)
            decision = decide(
                data_id=asset.data.id,
                object_name=asset.data.object_name,
                stored=stored_asset(row),
                local=found,
                tags_digest=t_digest,
                annotations_digest=a_digest,
            )
            if decision.action is Action.UPDATE_METADATA:
                counters.updated += 1
                plan.updates.append(update_for(asset, tags, data_tags, anns, file=None))
                self._emit("update", asset.id, row.path, "metadata changed")
            else:
                counters.skipped += 1
                plan.seen.append(asset.id)
        return plan

    def _count_changes(
        self,
        row: AssetRow,
        tags: Sequence[str] | None,
        data_tags: Sequence[str] | None,
        annotations: Sequence[Mapping[str, Any]] | None,
    ) -> tuple[str | None, str | None]:
        t_digest = None
        if tags is not None and data_tags is not None:
            t_digest = tags_digest(tags, data_tags)
            self.counters.tag_changes += row.tags_digest != t_digest
        a_digest = None
        if annotations is not None:
            a_digest = annotations_digest(annotations)
            self.counters.annotation_changes += row.annotations_digest != a_digest
        return t_digest, a_digest

    def _read_page_state(
        self, ids: Sequence[str]
    ) -> tuple[dict[str, AssetRow], dict[str, LocalFile]]:
        # One trip to the manifest thread per page: the rows and an lstat of each recorded
        # file (lstat: a symlink planted at a recorded path is not our file).
        manifest = self.db.manifest
        if manifest is None:
            return {}, {}
        rows = manifest.rows(ids)
        local: dict[str, LocalFile] = {}
        for asset_id, row in rows.items():
            if row.path is not None and (found := local_file(self.dest, row.path)) is not None:
                local[asset_id] = found
        return rows, local

    async def _assign_paths(
        self, wanted: Mapping[str, PurePosixPath], rows: Mapping[str, AssetRow]
    ) -> dict[str, PurePosixPath]:
        if not wanted:
            return {}
        claims = []
        for asset_id, path in wanted.items():
            row = rows.get(asset_id)
            current = PurePosixPath(row.path) if row is not None and row.path else None
            claims.append(layout.Claim(asset_id, path, current))
        manifest = self.db.manifest
        in_flight = dict(self.in_flight.owners)

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

    def _emit(self, action: str, asset_id: str, path: str | None, reason: str) -> None:
        if self.plan_sink is not None:
            self.plan_sink(PlannedAction(action, asset_id, path, reason))
