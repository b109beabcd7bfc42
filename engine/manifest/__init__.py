"""The manifest: an SQLite record of every mirrored asset, its tags and annotations, and every run.

::

    from engine.manifest import Manifest, AssetUpdate, FileInfo

    with Manifest.open(dest) as m:             # DEST/.assetsync/manifest.sqlite, WAL
        run_id = m.begin_run(version, api_url, options)
        rows = m.rows(page_ids)                 # planner input
        m.apply(updates, run_id)                # one transaction per batch
        m.finish_run(run_id, "ok", counts)

:mod:`engine.digests` holds the pure digest and path-key functions the planner and the
layout must share with the store.
"""

from __future__ import annotations

from engine.digests import annotations_digest, canonical_json, path_key, tags_digest
from engine.manifest.records import (
    STATES,
    ApplyResult,
    AssetRow,
    AssetState,
    AssetUpdate,
    FileInfo,
    ManifestStatus,
    RunRecord,
)
from engine.manifest.schema import MIGRATIONS, Migration
from engine.manifest.store import Manifest

__all__ = [
    "MIGRATIONS",
    "STATES",
    "ApplyResult",
    "AssetRow",
    "AssetState",
    "AssetUpdate",
    "FileInfo",
    "Manifest",
    "ManifestStatus",
    "Migration",
    "RunRecord",
    "annotations_digest",
    "canonical_json",
    "path_key",
    "tags_digest",
]
