"""The manifest's reads and writes: apply semantics, paths, runs, staging, deletion candidates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.errors import ManifestError, UsageError
from engine.manifest import (
    MIGRATIONS,
    AssetUpdate,
    FileInfo,
    Manifest,
    annotations_digest,
    path_key,
    tags_digest,
)
from tests.manifest.helpers import annotation, update


@pytest.fixture
def m(tmp_path: Path) -> Iterator[Manifest]:
    with Manifest.open(tmp_path / "dest") as manifest:
        yield manifest


@pytest.fixture
def run(m: Manifest) -> int:
    return m.begin_run("dv-1", "http://127.0.0.1:1234", {"concurrency": 8})


def table_count(m: Manifest, table: str, asset_id: str | None = None) -> int:
    conn = m._connection()
    if asset_id is None:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
    return int(
        conn.execute(f"SELECT count(*) FROM {table} WHERE asset_id = ?", (asset_id,)).fetchone()[0]  # noqa: S608
    )


def test_apply_records_row_tags_annotations_and_shapes(m: Manifest, run: int) -> None:
    u = update("a", gen=1, tags=("train", "train", "val"), data_tags=("raw", "cam-1"))
    result = m.apply([u], run)
    assert result.applied == 1
    assert result.displaced == ()
    row = m.rows(["a"])["a"]
    assert u.file is not None
    assert (row.path, row.size, row.sha256, row.etag, row.fetched_at) == (
        u.file.path,
        u.file.size,
        u.file.sha256,
        u.file.etag,
        u.file.fetched_at,
    )
    assert (row.data_id, row.object_name, row.filename) == (u.data_id, u.object_name, u.filename)
    assert (row.content_type, row.width, row.height, row.state) == ("image/jpeg", 640, 480, "ok")
    assert row.last_seen_run == run
    assert row.tags_digest == tags_digest(["val", "train"], ["cam-1", "raw"])
    assert u.annotations is not None
    assert row.annotations_digest == annotations_digest(u.annotations)
    assert m.tags("a") == (("train", "val"), ("cam-1", "raw"))
    assert m.annotations("a") == u.annotations
    # Two annotations (gen 1), five shapes each.
    assert table_count(m, "annotations", "a") == 2
    assert table_count(m, "shapes", "a") == 10
    assert m.asset_ids_with_label("eye") == ["a"]
    assert m.asset_ids_with_label("road", "line") == ["a"]
    assert m.asset_ids_with_label("road", "point") == []


def test_annotations_none_keeps_them_and_empty_clears_them(m: Manifest, run: int) -> None:
    first = update("a", gen=2)
    m.apply([first], run)
    m.apply([update("a", gen=3, annotations=None)], run)
    assert m.annotations("a") == first.annotations
    assert first.annotations is not None
    assert m.rows(["a"])["a"].annotations_digest == annotations_digest(first.annotations)
    assert m.rows(["a"])["a"].data_id == "data-a-3"
    m.apply([update("a", gen=3, annotations=[])], run)
    assert m.annotations("a") == []
    assert table_count(m, "shapes", "a") == 0
    assert m.rows(["a"])["a"].annotations_digest == annotations_digest([])


def test_annotations_are_replaced_with_their_shapes(m: Manifest, run: int) -> None:
    m.apply([update("a", gen=2)], run)  # three annotations
    replacement = [annotation("a", 9, label="zebra")]
    m.apply([update("a", gen=2, annotations=replacement)], run)
    assert m.annotations("a") == replacement
    assert table_count(m, "shapes", "a") == 5
    assert m.asset_ids_with_label("cat") == []
    assert m.asset_ids_with_label("zebra") == ["a"]


def test_never_fetched_annotations_are_none_not_empty(m: Manifest, run: int) -> None:
    m.apply([update("a", annotations=None)], run)
    assert m.annotations("a") is None
    assert m.rows(["a"])["a"].annotations_digest is None


def test_tags_none_keeps_them(m: Manifest, run: int) -> None:
    m.apply([update("a", tags=("x",), data_tags=("y",))], run)
    digest = m.rows(["a"])["a"].tags_digest
    m.apply([AssetUpdate("a", "d", "o", "f", tags=None, data_tags=None)], run)
    assert m.tags("a") == (("x",), ("y",))
    assert m.rows(["a"])["a"].tags_digest == digest
    with pytest.raises(ValueError, match="both"):
        AssetUpdate("a", "d", "o", "f", tags=None)
    with pytest.raises(TypeError):
        AssetUpdate("a", "d", "o", "f", tags="train")


def test_metadata_only_update_keeps_the_file_columns(m: Manifest, run: int) -> None:
    m.apply([update("a", gen=1)], run)
    before = m.rows(["a"])["a"]
    m.apply([update("a", gen=1, with_file=False, tags=("new",), width=1)], run)
    after = m.rows(["a"])["a"]
    assert (after.path, after.size, after.sha256, after.etag, after.fetched_at) == (
        before.path,
        before.size,
        before.sha256,
        before.etag,
        before.fetched_at,
    )
    assert after.width == 1
    assert m.tags("a")[0] == ("new",)


def test_ok_always_means_a_file_is_on_record(m: Manifest, run: int) -> None:
    m.apply([update("new", with_file=False)], run)
    assert m.rows(["new"])["new"].state == "missing"
    m.apply([update("failed", with_file=False, state="failed", error="HTTP 404")], run)
    failed = m.rows(["failed"])["failed"]
    assert (failed.state, failed.error, failed.path) == ("failed", "HTTP 404", None)
    assert m.mark_state("failed", "ok") is True
    assert m.rows(["failed"])["failed"].state == "missing"


def test_the_last_update_of_an_asset_in_a_batch_wins(m: Manifest, run: int) -> None:
    assert m.apply([update("a", gen=1), update("a", gen=2)], run).applied == 1
    assert m.rows(["a"])["a"].data_id == "data-a-2"
    assert m.tags("a")[0] == ("g2", "train")


def test_a_batch_is_all_or_nothing(m: Manifest, run: int) -> None:
    m.apply([update("a", gen=1)], run)
    with pytest.raises(ManifestError):
        m.apply([update("a", gen=2), update("b"), update("c")], run + 1000)  # unknown run
    assert m.count_assets() == 1
    assert m.rows(["a"])["a"].data_id == "data-a-1"
    assert m.tags("a")[0] == ("g1", "train")


def test_rows_handles_many_ids_in_few_queries(m: Manifest, run: int) -> None:
    ids = [f"asset-{i:05d}" for i in range(2600)]
    for start in range(0, len(ids), 500):
        m.apply([update(i, with_file=False) for i in ids[start : start + 500]], run)
    statements: list[str] = []
    m._connection().set_trace_callback(statements.append)
    wanted = [*ids[:1000], "unknown", *ids[:3]]
    rows = m.rows(wanted)
    m._connection().set_trace_callback(None)
    assert set(rows) == set(ids[:1000])
    assert len(statements) == 2  # 1001 distinct ids: two queries
    assert m.rows([]) == {}
    assert len(list(m.iter_rows(page_size=7))) == 2600


def test_path_owners_is_case_blind(m: Manifest, run: int) -> None:
    m.apply([update("a", path="Dir/Cat.JPG"), update("b", path="dir/dog.jpg")], run)
    assert m.path_owners(["dir/cat.jpg", "DIR/CAT.JPG", "dir/dog.jpg", "free.jpg"]) == {
        "dir/cat.jpg": "a",
        "DIR/CAT.JPG": "a",
        "dir/dog.jpg": "b",
    }
    assert m.path_owners([path_key("Dir/Cat.JPG")]) == {path_key("Dir/Cat.JPG"): "a"}


def test_a_path_taken_over_displaces_its_old_owner(m: Manifest, run: int) -> None:
    m.apply([update("a", path="x.jpg"), update("b", path="y.jpg")], run)
    result = m.apply([update("c", path="X.JPG")], run)
    assert result.displaced == ("a",)
    a = m.rows(["a"])["a"]
    assert (a.path, a.state) == (None, "missing")
    assert a.error is not None
    assert "c" in a.error
    assert m.path_owners(["x.jpg"]) == {"x.jpg": "c"}


def test_paths_can_change_hands_inside_one_batch(m: Manifest, run: int) -> None:
    m.apply([update("a", path="one.jpg"), update("b", path="two.jpg")], run)
    result = m.apply([update("b", path="one.jpg", gen=1), update("a", path="two.jpg", gen=1)], run)
    assert result.displaced == ()
    assert m.path_owners(["one.jpg", "two.jpg"]) == {"one.jpg": "b", "two.jpg": "a"}
    assert {r.state for r in m.rows(["a", "b"]).values()} == {"ok"}


def test_two_files_of_one_batch_on_one_path_the_later_wins(m: Manifest, run: int) -> None:
    m.apply([update("a", path="same.jpg"), update("b", path="SAME.jpg")], run)
    rows = m.rows(["a", "b"])
    assert (rows["a"].path, rows["a"].state) == (None, "missing")
    assert (rows["b"].path, rows["b"].state) == ("SAME.jpg", "ok")


def test_a_metadata_only_update_of_a_displaced_asset_keeps_it_missing(
    m: Manifest, run: int
) -> None:
    m.apply([update("a", path="p.jpg")], run)
    m.apply([update("b", path="p.jpg"), update("a", with_file=False)], run)
    assert m.rows(["a"])["a"].state == "missing"


def test_file_info_refuses_paths_outside_dest() -> None:
    for bad in ("", "/etc/passwd", "../up", "a/../../b", "."):
        with pytest.raises(ValueError, match="relative"):
            FileInfo(bad, 1, "0" * 64)
    assert FileInfo("a//b/./c", 1, "x").path == "a/b/c"


def test_unseen_lists_what_this_run_did_not_list(m: Manifest) -> None:
    first = m.begin_run("dv", "http://x", {})
    m.apply([update(f"a{i}", with_file=False) for i in range(10)], first)
    m.finish_run(first, "ok", {})
    second = m.begin_run("dv", "http://x", {})
    assert sorted(r.asset_id for r in m.unseen(second)) == [f"a{i}" for i in range(10)]
    m.mark_seen(second, ["a0", "a1", "a2"])
    m.apply([update("a3", with_file=False)], second)
    assert sorted(r.asset_id for r in m.unseen(second, page_size=2)) == [
        f"a{i}" for i in range(4, 10)
    ]


def test_iteration_tolerates_writes_between_rows(m: Manifest, run: int) -> None:
    m.apply([update(f"a{i:03d}", path=f"{i}.jpg") for i in range(100)], run)
    seen = []
    for row in m.iter_rows(page_size=9):
        seen.append(row.asset_id)
        m.mark_state(row.asset_id, "corrupt", "sha256 mismatch")  # what verify does
        if row.asset_id == "a050":
            m.remove(["a050", "a090"])  # what --delete does
    assert len(seen) == 99
    assert "a090" not in seen
    assert m.status().states["corrupt"] == 98


def test_remove_takes_tags_annotations_and_shapes_along(m: Manifest, run: int) -> None:
    m.apply([update("a", gen=2), update("b", path="b.jpg")], run)
    assert m.remove(["a", "a", "nope"]) == 1
    assert m.rows(["a", "b"]).keys() == {"b"}
    for table in ("tags", "annotations", "shapes"):
        assert table_count(m, table, "a") == 0
    assert m.check() == []


def test_mark_states(m: Manifest, run: int) -> None:
    m.apply([update("a"), update("b", path="b.jpg")], run)
    assert (
        m.mark_states(
            [("a", "corrupt", "size differs"), ("b", "evicted", None), ("zz", "ok", None)]
        )
        == 2
    )
    assert m.mark_state("zz", "missing") is False
    rows = m.rows(["a", "b"])
    assert (rows["a"].state, rows["a"].error) == ("corrupt", "size differs")
    assert rows["b"].state == "evicted"
    with pytest.raises(ValueError, match="state"):
        m.mark_state("a", "bogus")  # type: ignore[arg-type]


def test_tag_staging_streams_membership_per_run(m: Manifest, run: int) -> None:
    m.stage_tags(run, "asset", "train", [f"a{i}" for i in range(5)])
    m.stage_tags(run, "asset", "val", ["a4", "a5"])
    m.stage_tags(run, "data", "raw", ["a0"])
    m.stage_tags(run, "asset", "train", ["a0"])  # the same page twice is harmless
    staged = m.staged_tags(run, ["a0", "a4", "a5", "a9"])
    assert staged == {
        "a0": (("train",), ("raw",)),
        "a4": (("train", "val"), ()),
        "a5": (("val",), ()),
        "a9": ((), ()),
    }
    other = m.begin_run("dv", "http://x", {})  # a new run drops older staging
    assert m.staged_tags(run, ["a0"]) == {"a0": ((), ())}
    m.stage_tags(other, "data", "raw", ["a0"])
    m.clear_staging(other)
    assert m.staged_tags(other, ["a0"]) == {"a0": ((), ())}
    with pytest.raises(ValueError, match="kind"):
        m.stage_tags(other, "label", "x", ["a0"])  # type: ignore[arg-type]


def test_tags_staged_after_a_lookup_are_seen_by_the_next(m: Manifest, run: int) -> None:
    """Lookups index the staging table; staging more (a later epoch) must not hide rows."""
    m.stage_tags(run, "asset", "train", ["a1", "a2"])
    assert m.staged_tags(run, ["a1"]) == {"a1": (("train",), ())}
    m.stage_tags(run, "asset", "hard", ["a1"])
    m.stage_tags(run, "data", "raw", ["a1", "a1"])
    assert m.staged_tags(run, ["a1", "a2"]) == {
        "a1": (("hard", "train"), ("raw",)),
        "a2": (("train",), ()),
    }
    plan = m._connection().execute(
        "EXPLAIN QUERY PLAN SELECT asset_id, kind, name FROM staged_tags"
        " WHERE run_id = ? AND asset_id IN (?)",
        (run, "a1"),
    )
    assert "staged_tags_by_asset" in " ".join(str(row[-1]) for row in plan)


def test_runs_record_outcomes_without_credentials(m: Manifest) -> None:
    assert m.last_run() is None
    assert m.dataset_version() is None
    first = m.begin_run(
        "dv-1",
        "https://user:secret@app.example.com:8443/base/?token=abc#frag",
        {
            "token": "abc",
            "transfer": {"api_secret": "x", "chunk": 5},
            "signed": "https://s/o?X-Amz-Signature=z",
        },
    )
    record = m.last_run()
    assert record is not None
    assert record.outcome is None  # running
    assert record.api_url == "https://app.example.com:8443/base"
    assert record.options == {"transfer": {"chunk": 5}, "signed": "https://s/o"}
    assert "secret" not in str(record) and "abc" not in str(record)
    second = m.begin_run("dv-2", "http://127.0.0.1", {})  # the first one was killed
    runs = m._connection().execute("SELECT run_id, outcome FROM runs ORDER BY run_id").fetchall()
    assert runs == [(first, "unfinished"), (second, None)]
    m.finish_run(second, "partial", {"downloaded": 3, "failed": 1, "seconds": 1.5})
    last = m.last_run(finished=True)
    assert last is not None
    assert (last.run_id, last.outcome, last.counts) == (
        second,
        "partial",
        {"downloaded": 3, "failed": 1, "seconds": 1.5},
    )
    assert last.finished_at is not None and last.finished_at >= last.started_at
    assert m.dataset_version() == "dv-2"


def test_status(m: Manifest, run: int) -> None:
    m.apply(
        [
            update("a", path="a.jpg"),
            update("b", path="b.jpg", gen=5),
            update("c", with_file=False, state="failed", error="boom"),
        ],
        run,
    )
    m.finish_run(run, "ok", {"downloaded": 2})
    status = m.status()
    assert status.dataset_version == "dv-1"
    assert status.assets == 3
    assert status.states == {"ok": 2, "missing": 0, "corrupt": 0, "failed": 1, "evicted": 0}
    assert status.total_bytes == 1000 + 1005
    assert status.runs == 1
    assert status.last_run is not None
    assert status.last_run.outcome == "ok"
    assert status.schema_version == len(MIGRATIONS)


def test_a_second_connection_sees_committed_batches(tmp_path: Path) -> None:
    with Manifest.open(tmp_path) as writer, Manifest.open(tmp_path, create=False) as reader:
        run = writer.begin_run("dv", "http://x", {})
        writer.apply([update("a")], run)
        assert reader.rows(["a"]).keys() == {"a"}
        assert reader.status().assets == 1


def test_apply_can_mark_skipped_assets_seen_in_the_same_transaction(m: Manifest) -> None:
    first = m.begin_run("dv", "http://x", {})
    m.apply([update(f"a{i}", with_file=False) for i in range(5)], first)
    second = m.begin_run("dv", "http://x", {})
    m.apply([update("a0", gen=1)], second, seen=["a1", "a2", "a2"])
    assert sorted(r.asset_id for r in m.unseen(second)) == ["a3", "a4"]
    assert m.count_unseen(second) == 2
    assert m.rows(["a1"])["a1"].last_seen_run == second


def test_directory_keys_finds_folders_of_recorded_files(m: Manifest, run: int) -> None:
    m.apply([update("a", path="Photos/2024/cat.jpg"), update("b", path="photos0.jpg")], run)
    keys = ["photos", "PHOTOS/2024", "photos/2024/cat.jpg", "photos0.jpg", "phot", "other"]
    assert m.directory_keys(keys) == {"photos", "PHOTOS/2024"}
    assert m.directory_keys([]) == set()
    # "photos0.jpg" sorts right after "photos/..." but is no folder of theirs.
    assert m.directory_keys(["photos0.jpg"]) == set()


def test_a_read_only_manifest_plans_but_never_writes(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(UsageError, match="nothing has been mirrored"):
        Manifest.open(dest, read_only=True)
    assert not dest.exists()
    with Manifest.open(dest) as writer:
        run = writer.begin_run("dv", "http://x", {})
        writer.apply([update(f"a{i}", path=f"{i}.jpg") for i in range(5)], run)
        writer.finish_run(run, "ok", {})
    before = (dest / ".assetsync" / "manifest.sqlite").read_bytes()
    with Manifest.open(dest, read_only=True) as m:
        assert m.read_only
        assert m.count_assets() == 5
        assert m.status().dataset_version == "dv"
        # A dry run has no run id of its own (0): what it lists goes to the connection's scratch.
        m.stage_tags(0, "asset", "train", ["a1"])
        assert m.staged_tags(0, ["a1"]) == {"a1": (("train",), ())}
        m.mark_seen(0, ["a0", "a1", "a2"])
        assert m.count_unseen(0) == 2
        assert [r.asset_id for r in m.unseen(0)] == ["a3", "a4"]
        for write in (
            lambda: m.apply([update("x")], 0),
            lambda: m.begin_run("dv", "http://x", {}),
            lambda: m.remove(["a0"]),
            lambda: m.mark_state("a0", "corrupt"),
        ):
            with pytest.raises(ManifestError, match="read-only"):
                write()
    assert (dest / ".assetsync" / "manifest.sqlite").read_bytes() == before
    with Manifest.open(dest) as m:
        assert m.count_assets() == 5
        assert m.count_unseen(0) == 5  # the scratch marks were the dry run's own


def shape_rows(m: Manifest, asset_id: str) -> list[tuple[Any, ...]]:
    return (
        m._connection()
        .execute(
            "SELECT ann_ord, kind, idx, label, text, geometry FROM shapes WHERE asset_id = ?"
            " ORDER BY ann_ord, kind, idx",
            (asset_id,),
        )
        .fetchall()
    )


def test_shape_rows_cover_every_kind(m: Manifest, run: int) -> None:
    m.apply([update("a", annotations=[annotation("a", 7, label="dog")])], run)
    assert shape_rows(m, "a") == [
        (0, "classification", 0, "dog", "note", None),
        (0, "line", 0, "road", None, "[[1,2],[3,4]]"),
        (0, "point", 0, "eye", None, "[1,2]"),
        (0, "polygon", 0, "dog", None, "[[1,2],[3,4],[5,7]]"),
        (0, "rectangle", 0, "dog", None, '{"h":4,"w":3,"x":7,"y":2}'),
    ]


def test_malformed_annotations_are_stored_and_never_fail_a_batch(m: Manifest, run: int) -> None:
    weird: list[dict[str, Any]] = [
        {
            "id": "w",
            "rectangles": "not a list",
            "polygons": [None, 3, {"label": {"name": "cat"}}, {"label": 12, "text": 5}],
            "points": {"label": "an object, not a list"},
            "lines": [{"line": [[0, float("nan")]], "label": "edge"}],
        },
        {},
    ]
    m.apply([update("a", annotations=weird), update("b")], run)
    assert m.count_assets() == 2
    assert shape_rows(m, "a") == [
        (0, "line", 0, "edge", None, "[[0,null]]"),
        (0, "polygon", 2, "cat", None, None),
        (0, "polygon", 3, "12", "5", None),
    ]
    stored = m.annotations("a")
    assert stored is not None
    assert stored[0]["lines"][0]["line"] == [[0, None]]  # NaN is not JSON: stored as null
    assert stored[1] == {}


def test_claims_never_overwrite_a_row_that_has_this_content_in_place(m: Manifest, run: int) -> None:
    """A prefetcher claims the paths of the files it is about to download; another may have
    recorded one of them in place since the claims were planned (a claim over that row said
    "missing" and made the file be downloaded twice)."""
    m.apply([update("placed", gen=1), update("changed", gen=1), update("failed", gen=1)], run)
    m.mark_state("failed", "failed", "503")

    def claim(asset_id: str, gen: int) -> AssetUpdate:
        return update(asset_id, gen=gen, state="missing", error="claimed", annotations=None)

    claims = [claim("placed", 1), claim("changed", 2), claim("failed", 1), claim("new", 0)]
    left_out = m.apply_claims(claims, run)
    assert left_out == {"placed"}
    rows = m.rows(["placed", "changed", "failed", "new"])
    assert rows["placed"].state == "ok"  # this very content is in place: untouched
    assert rows["placed"].size == 1001
    # Another content, a failure, no row: claimed.
    assert {rows[a].state for a in ("changed", "failed", "new")} == {"missing"}
