"""Adoption of rows between two manifests of one DEST (``--reshard``), on real manifests."""

from __future__ import annotations

import io
import json
from pathlib import Path

from engine.manifest import Manifest
from engine.sharding import AssetShard
from engine.state_folder import StateFolder
from tests.manifest.helpers import update


def _ids(manifest: Manifest) -> list[str]:
    return [row.asset_id for row in manifest.iter_rows()]


def _export(manifest: Manifest) -> list[dict[str, object]]:
    out = io.StringIO()
    manifest.export(out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_adopted_rows_move_whole_and_a_row_left_in_both_keeps_the_adopters(
    tmp_path: Path,
) -> None:
    state = StateFolder(tmp_path)
    old_files = state.shard_files(AssetShard(0, 2))
    new_files = state.shard_files(AssetShard(1, 3))
    ids = [f"a{i:02d}" for i in range(12)]
    wanted = {a for a in ids if a.endswith(("1", "4", "7"))}
    with Manifest.open(tmp_path, path=old_files.manifest) as old:
        run = old.begin_run("dv", "http://127.0.0.1:1", {})
        old.apply([update(a) for a in ids], run)
        before = {row["asset_id"]: row for row in _export(old)}
    with Manifest.open(tmp_path, path=new_files.manifest) as new:
        run = new.begin_run("dv", "http://127.0.0.1:1", {})
        # As after a crash between the two files' commits: "a04" is in both, the adopter's copy
        # newer (gen 5).
        new.apply([update("a04", gen=5)], run)
        moved, left = new.adopt(old_files.manifest, lambda asset_id: asset_id in wanted)
        assert (moved, left) == (len(wanted) - 1, len(ids) - len(wanted))
        after = {row["asset_id"]: row for row in _export(new)}
        assert set(after) == wanted
        for asset_id in wanted - {"a04"}:  # tags, annotations, file facts: all of it moved
            assert after[asset_id] == before[asset_id]
        assert after["a04"]["sha256"] != before["a04"]["sha256"]
        assert after["a04"]["metadata"] == {"gen": 5, "camera": "é"}
        # The adopter's next run lists them: their old run ids meant nothing here.
        assert new.count_unseen(run) == len(wanted) - 1
    with Manifest.open(tmp_path, path=old_files.manifest, create=False) as old:
        assert _ids(old) == sorted(set(ids) - wanted)
        assert old.check() == []
