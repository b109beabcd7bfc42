"""Export: JSON Lines and a JSON array, streamed; and apply -> rows / export round trips."""

from __future__ import annotations

import io
import json
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given, settings

from engine.manifest import AssetUpdate, Manifest, annotations_digest, tags_digest
from engine.manifest.export import EXPORT_FIELDS
from tests.manifest.helpers import annotation, update, updates_st


def exported(m: Manifest, fmt: str) -> list[dict[str, Any]]:
    out = io.StringIO()
    count = m.export(out, fmt)  # type: ignore[arg-type]
    text = out.getvalue()
    if fmt == "json":
        objects: list[dict[str, Any]] = json.loads(text)
    else:
        assert text == "" or text.endswith("\n")
        objects = [json.loads(line) for line in text.splitlines()]
    assert count == len(objects)
    return objects


def test_export_formats_agree_and_carry_every_field(tmp_path: Path) -> None:
    with Manifest.open(tmp_path) as m:
        assert exported(m, "jsonl") == []
        assert exported(m, "json") == []
        run = m.begin_run("dv", "http://x", {})
        u = update("b", gen=1, tags=("val", "train"), data_tags=("raw",))
        m.apply(
            [u, update("a", with_file=False, annotations=None, state="failed", error="404")], run
        )
        lines = exported(m, "jsonl")
        assert lines == exported(m, "json")
        assert [o["asset_id"] for o in lines] == ["a", "b"]
        assert all(tuple(o) == EXPORT_FIELDS for o in lines)
        a, b = lines
        assert a["annotations"] is None  # never fetched
        assert (a["path"], a["state"], a["error"], a["fetched_at"]) == (None, "failed", "404", None)
        assert u.file is not None
        assert b == {
            "asset_id": "b",
            "data_id": u.data_id,
            "object_name": u.object_name,
            "filename": u.filename,
            "path": u.file.path,
            "size": u.file.size,
            "sha256": u.file.sha256,
            "etag": u.file.etag,
            "content_type": "image/jpeg",
            "width": 640,
            "height": 480,
            "state": "ok",
            "error": None,
            "fetched_at": "2001-09-09T01:46:41Z",
            "tags": ["train", "val"],
            "data_tags": ["raw"],
            "metadata": {"gen": 1, "camera": "é"},
            "annotations": u.annotations,
        }


def test_export_writes_annotations_exactly_as_recorded(tmp_path: Path) -> None:
    odd = annotation("a", 1)
    odd = {"zeta": 1.5, **odd, "attributes": {"b": 1, "a": [None, "ü"]}}  # unsorted keys, floats
    with Manifest.open(tmp_path) as m:
        m.apply([update("a", annotations=[odd])], m.begin_run("dv", "http://x", {}))
        out = io.StringIO()
        m.export(out, "jsonl")
    line = out.getvalue()
    assert json.dumps(odd, separators=(",", ":"), ensure_ascii=False) in line
    assert list(json.loads(line)["annotations"][0]) == list(odd)  # key order kept


def test_export_rejects_an_unknown_format(tmp_path: Path) -> None:
    with Manifest.open(tmp_path) as m, pytest.raises(ValueError, match="format"):
        m.export(io.StringIO(), "csv")  # type: ignore[arg-type]


@settings(max_examples=60)
@given(updates_st(), updates_st(max_size=6))
def test_apply_round_trips_through_rows_and_export(
    first: list[AssetUpdate], second: list[AssetUpdate]
) -> None:
    with tempfile.TemporaryDirectory() as tmp, Manifest.open(Path(tmp)) as m:
        run = m.begin_run("dv", "http://x", {})
        m.apply(first, run)
        # A second batch re-using some ids with other content (paths re-based to stay unique).
        again = [
            AssetUpdate(
                **{**{f: getattr(u, f) for f in u.__dataclass_fields__}, "asset_id": old.asset_id}
            )
            for u, old in zip(second, first, strict=False)
        ]
        m.apply(again, run)
        final = {u.asset_id: u for u in first}
        annotations: dict[str, Any] = {u.asset_id: u.annotations for u in first}
        for u in again:
            final[u.asset_id] = u
            if u.annotations is not None:
                annotations[u.asset_id] = u.annotations
        files = {aid: u.file for aid, u in final.items()}
        # A file of the second batch may have taken a path of the first one: displacement.
        holders: dict[str, str] = {}
        for aid, f in files.items():
            if f is not None:
                holders.setdefault(f.path.casefold(), aid)
        rows = m.rows(list(final))
        objects = {o["asset_id"]: o for o in exported(m, "jsonl")}
        assert rows.keys() == objects.keys() == final.keys()
        assert m.check() == []
        for aid, u in final.items():
            row, obj = rows[aid], objects[aid]
            assert (row.data_id, row.object_name, row.filename) == (
                u.data_id,
                u.object_name,
                u.filename,
            )
            assert obj["metadata"] == json.loads(json.dumps(dict(u.metadata)))
            assert obj["tags"] == sorted(set(u.tags or ()))
            assert obj["data_tags"] == sorted(set(u.data_tags or ()))
            assert row.tags_digest == tags_digest(u.tags or (), u.data_tags or ())
            stored = annotations[aid]
            assert obj["annotations"] == (
                None if stored is None else json.loads(json.dumps(stored))
            )
            assert row.annotations_digest == (
                None if stored is None else annotations_digest(stored)
            )
            if row.path is not None:
                assert u.file is not None or aid in {o.asset_id for o in first}
                assert (obj["path"], obj["size"], obj["sha256"]) == (row.path, row.size, row.sha256)
            if row.state == "ok":
                assert row.path is not None
        paths = [r.path.casefold() for r in rows.values() if r.path is not None]
        assert len(paths) == len(set(paths))


class CountingSink:
    """A file object that keeps only the number of characters written to it."""

    def __init__(self) -> None:
        self.chars = 0
        self.lines = 0

    def write(self, text: str) -> int:
        self.chars += len(text)
        self.lines += text.count("\n")
        return len(text)


@pytest.mark.slow
def test_export_of_50000_assets_is_streamed(tmp_path: Path) -> None:
    total = 50_000
    with Manifest.open(tmp_path) as m:
        run = m.begin_run("dv", "http://x", {})
        for start in range(0, total, 1000):
            batch = [
                update(f"asset-{i:06d}", gen=i % 3, annotations=None if i % 4 else "default")
                for i in range(start, start + 1000)
            ]
            m.apply(batch, run)
        fmts: tuple[Literal["jsonl", "json"], ...] = ("jsonl", "json")
        for fmt in fmts:
            sink = CountingSink()
            tracemalloc.start()
            try:
                count = m.export(sink, fmt)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert count == total
            assert sink.chars > 25_000_000  # ~600 characters of JSON per asset
            # Everything at once would need more than the output's size; a page needs ~1%.
            assert peak < sink.chars / 20, (peak, sink.chars)
