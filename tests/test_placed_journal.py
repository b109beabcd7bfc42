"""The journal of files in place before their rows: what a rerun adopts, and what it never does."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.manifest import AssetUpdate, FileInfo, Manifest
from engine.pipeline.placed_journal import PlacedJournal, _decode, _encode, adopt_placed


def _placed(dest: Path, asset: str, body: bytes, path: str | None = None) -> AssetUpdate:
    rel = path or f"img/{asset}.jpg"
    target = dest / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(body)
    return AssetUpdate(
        asset_id=asset,
        data_id=f"d-{asset}",
        object_name=f"o/{asset}",
        filename=f"{asset}.jpg",
        content_type="image/jpeg",
        width=4,
        height=3,
        metadata={"metadata": {"k": 1.5}},
        tags=None,
        data_tags=None,
        file=FileInfo(rel, len(body), hashlib.sha256(body).hexdigest(), etag='"e"'),
    )


def _journal(dest: Path, updates: list[AssetUpdate]) -> Path:
    path = dest / ".assetsync" / "placed.jsonl"
    journal = PlacedJournal(path)
    journal.open()
    for update in updates:
        journal.record(update)
    journal.close()
    return path


def test_a_placed_file_the_manifest_missed_is_adopted_and_nothing_else(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with Manifest.open(dest) as m:
        run = m.begin_run("dv", "http://127.0.0.1", {})
        good = _placed(dest, "a1", b"x" * 1000)
        resized = _placed(dest, "a2", b"y" * 1000)
        (dest / resized.file.path).write_bytes(b"y" * 999)  # type: ignore[union-attr]
        changed = _placed(dest, "a3", b"z" * 1000)
        (dest / changed.file.path).write_bytes(b"Z" * 1000)  # type: ignore[union-attr]
        missing = _placed(dest, "a4", b"w" * 10)
        (dest / missing.file.path).unlink()  # type: ignore[union-attr]
        outside = tmp_path / "outside.jpg"
        outside.write_bytes(b"v" * 10)
        linked = _placed(dest, "a5", b"v" * 10)
        (dest / linked.file.path).unlink()  # type: ignore[union-attr]
        (dest / linked.file.path).symlink_to(outside)  # type: ignore[union-attr]
        path = _journal(dest, [good, resized, changed, missing, linked])
        with path.open("ab") as fh:
            fh.write(b'{"asset_id": "a6", "torn')  # a kill in the middle of a write
        assert adopt_placed(path, dest, m, run) == 1
        row = m.row("a1")
        assert row is not None and row.state == "ok"
        assert (row.path, row.size, row.sha256, row.data_id) == (
            "img/a1.jpg",
            1000,
            good.file.sha256,  # type: ignore[union-attr]
            "d-a1",
        )
        assert [m.row(a) for a in ("a2", "a3", "a4", "a5", "a6")] == [None] * 5
        assert m.tags("a1") == ((), ())  # metadata comes with the run's planning, as for any file
        assert path.stat().st_size == 0  # emptied: adopted once
        assert adopt_placed(path, dest, m, run) == 0


def test_a_row_recorded_after_all_is_left_as_it_is(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with Manifest.open(dest) as m:
        run = m.begin_run("dv", "http://127.0.0.1", {})
        update = _placed(dest, "a1", b"x" * 100)
        m.apply([update], run)
        before = m.row("a1")
        path = _journal(dest, [update])
        assert adopt_placed(path, dest, m, run) == 0
        assert m.row("a1") == before


def test_clear_empties_and_the_journal_never_follows_a_symlink(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    (dest / ".assetsync").mkdir(parents=True)
    path = _journal(dest, [_placed(dest, "a1", b"x")])
    assert path.read_bytes().count(b"\n") == 1
    journal = PlacedJournal(path)
    journal.open()
    second = _placed(dest, "a2", b"y")
    journal.record(second)
    journal.record(second)  # again with its metadata: the same file, one line
    assert path.read_bytes().count(b"\n") == 2
    journal.clear()
    journal.close()
    assert path.stat().st_size == 0
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    path.unlink()
    path.symlink_to(victim)
    with Manifest.open(dest) as m:
        run = m.begin_run("dv", "http://127.0.0.1", {})
        assert adopt_placed(path, dest, m, run) == 0
    assert victim.read_bytes() == b"keep me"
    journal = PlacedJournal(path)
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        journal.open()  # refused: the run goes on without a journal
    journal.record(_placed(dest, "a3", b"z"))
    journal.close()
    assert victim.read_bytes() == b"keep me"


names = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=20)


@settings(max_examples=200)
@given(
    asset=names,
    path=st.lists(st.text("abc/._-é", min_size=1, max_size=8), min_size=1, max_size=3),
    size=st.integers(0, 2**62),
    meta=st.dictionaries(names, st.one_of(st.integers(), st.floats(), names), max_size=3),
)
def test_a_record_reads_back_as_written(
    asset: str, path: list[str], size: int, meta: dict[str, object]
) -> None:
    rel = "/".join(path)
    try:
        file = FileInfo(path=rel, size=size, sha256="0" * 64, etag=None)
    except ValueError:
        return  # not a path the engine could record, so never journaled
    update = AssetUpdate(
        asset_id=asset,
        data_id="d",
        object_name="o",
        filename="f",
        metadata={"metadata": meta},
        tags=None,
        data_tags=None,
        file=file,
    )
    back = _decode(_encode(update))
    assert back is not None
    assert (back.asset_id, back.file, back.tags, back.annotations) == (asset, file, None, None)
    assert back.metadata.keys() == update.metadata.keys()


@given(st.binary(max_size=300))
def test_garbage_is_never_a_record_nor_an_error(line: bytes) -> None:
    result = _decode(line)
    assert result is None or isinstance(result, AssetUpdate)


def test_a_journal_past_its_bound_stops_recording(tmp_path: Path) -> None:
    import engine.pipeline.placed_journal as module

    dest = tmp_path / "dest"
    (dest / ".assetsync").mkdir(parents=True)
    update = _placed(dest, "a1", b"x")
    journal = PlacedJournal(dest / ".assetsync" / "placed.jsonl")
    journal.open()
    for n in range(module.MAX_LINES + 10):
        journal.record(replace(update, asset_id=f"a{n:06d}"))
    journal.close()
    lines = journal.path.read_bytes().splitlines()
    assert len(lines) == module.MAX_LINES
    assert _decode(lines[-1]).asset_id == f"a{module.MAX_LINES - 1:06d}"  # type: ignore[union-attr]
