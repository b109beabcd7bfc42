"""Shared helpers for the mirror tests: settings for an emulator, and what DEST must hold."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from engine.emulator import Emulator
from engine.errors import EngineError
from engine.manifest import Manifest
from engine.settings import Settings, load_settings


def settings_for(emu: Emulator, dest: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "api_url": emu.api_url,
        "dataset_version": emu.dataset_version_id,
        "dest": dest,
        "token": SecretStr(emu.token),
        # Tests must be quick and must not wait whole seconds between retries.
        "transfer": {"retry": {"base_delay": 0.01, "max_delay": 0.05}, "fsync": False},
    }
    transfer = overrides.pop("transfer", None)
    if transfer:
        values["transfer"] = {**values["transfer"], **transfer}
    values.update(overrides)
    return load_settings(values)


def sha256_of(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def ok_count(dest: Path) -> int:
    """Assets recorded ok, read from a read-only connection (0 before the manifest exists)."""
    try:
        with Manifest.open(dest, create=False, read_only=True) as manifest:
            return manifest.status().states["ok"]
    except EngineError:
        return 0


def files_under(dest: Path) -> set[str]:
    """Every regular file under DEST outside the state folder, as POSIX paths."""
    found = set()
    for root, dirs, files in os.walk(dest):
        rel_root = Path(root).relative_to(dest)
        if rel_root.parts[:1] == (".assetsync",):
            continue
        dirs[:] = [d for d in dirs if not (rel_root == Path(".") and d == ".assetsync")]
        for name in files:
            found.add((rel_root / name).as_posix())
    return found


def assert_mirror_matches(emu: Emulator, dest: Path) -> dict[str, str]:
    """DEST holds exactly the version's live assets, byte for byte; returns asset -> path."""
    with Manifest.open(dest, create=False) as manifest:
        rows = {row.asset_id: row for row in manifest.iter_rows()}
    live = list(emu.dataset.asset_ids())
    assert set(rows) == set(live)
    paths: dict[str, str] = {}
    for asset_id in live:
        expected = emu.dataset.expected(asset_id)
        row = rows[asset_id]
        assert row.state == "ok", (asset_id, row.state, row.error)
        assert row.path is not None
        assert row.data_id == expected.data_id
        assert row.size == expected.size
        assert row.sha256 == expected.sha256
        assert sha256_of(dest / row.path) == expected.sha256
        paths[asset_id] = row.path
    assert files_under(dest) == set(paths.values())
    return paths
