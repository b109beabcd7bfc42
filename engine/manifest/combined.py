"""The manifests of one DEST read as one: ``status``, ``verify`` and ``manifest export``.

A DEST mirrored in shards (``--shard K/N``) holds one manifest per shard
(:meth:`engine.state_folder.StateFolder.manifests`); each asset is in exactly one of them, so
their union is the DEST's: counts add up, and an export merges them in asset id order.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from engine.manifest.records import ManifestStatus, RunRecord
from engine.manifest.store import Manifest
from engine.state_folder import ShardFiles, StateFolder

__all__ = ["DestStatus", "ShardStatus", "dest_status", "open_manifests"]


@contextmanager
def open_manifests(dest: Path) -> Iterator[list[tuple[ShardFiles, Manifest]]]:
    """Every manifest of DEST, open (never created), closed when the block ends.

    Raises :class:`~engine.errors.UsageError` as :meth:`Manifest.open` does when DEST holds
    none."""
    dest = Path(dest)
    found = StateFolder(dest).manifests()
    with ExitStack() as stack:
        if not found:
            # The usual one-line error for a DEST that was never mirrored into.
            stack.enter_context(Manifest.open(dest, create=False))
        opened = [
            (files, stack.enter_context(Manifest.open(dest, create=False, path=files.manifest)))
            for files in found
        ]
        yield opened


@dataclass(frozen=True, slots=True)
class ShardStatus:
    shard: str
    status: ManifestStatus


@dataclass(frozen=True, slots=True)
class DestStatus:
    """The sums over DEST's manifests; ``shards`` lists them when there is more than the whole
    version's one."""

    dataset_versions: list[str]
    assets: int
    states: dict[str, int]
    total_bytes: int
    runs: int
    last_run: RunRecord | None
    shards: list[ShardStatus]


def dest_status(dest: Path) -> DestStatus:
    with open_manifests(dest) as manifests:
        parts = [ShardStatus(str(files.shard), m.status()) for files, m in manifests]
    states: dict[str, int] = {}
    for part in parts:
        for state, count in part.status.states.items():
            states[state] = states.get(state, 0) + count
    runs = [p.status.last_run for p in parts if p.status.last_run is not None]
    versions = sorted({p.status.dataset_version for p in parts if p.status.dataset_version})
    sharded = len(parts) > 1 or any(p.shard != "0/1" for p in parts)
    return DestStatus(
        dataset_versions=versions,
        assets=sum(p.status.assets for p in parts),
        states=states,
        total_bytes=sum(p.status.total_bytes for p in parts),
        runs=sum(p.status.runs for p in parts),
        last_run=max(runs, key=lambda run: run.started_at) if runs else None,
        shards=parts if sharded else [],
    )
