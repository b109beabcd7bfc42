"""End-to-end tests of ``engine.mirror()`` against the in-process emulator."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import anyio
import pytest

from engine.emulator import Emulator, FaultRule
from engine.errors import AuthError, LockHeldError, UsageError
from engine.manifest import Manifest
from engine.mirroring import mirror
from engine.pipeline.lock import DestLock
from engine.pipeline.summary import LiveCounters
from engine.verify import verify
from tests.mirror.helpers import assert_mirror_matches, files_under, settings_for


def _export(dest: Path) -> dict[str, dict]:
    buffer = io.StringIO()
    with Manifest.open(dest, create=False) as manifest:
        manifest.export(buffer, "jsonl")
    rows = [json.loads(line) for line in buffer.getvalue().splitlines()]
    return {row["asset_id"]: row for row in rows}


async def test_first_mirror_with_nasty_names_then_no_change_rerun(tmp_path: Path):
    dest = tmp_path / "dest"
    async with Emulator(assets=150, seed=3, null_url_share=0.2, signing="mixed") as emu:
        filenames = [emu.dataset.expected(a).filename for a in emu.dataset.asset_ids()]
        # The generator's hostile names are really in play.
        assert any(".." in name for name in filenames)
        assert any(name.startswith("/") for name in filenames)
        assert len(set(filenames)) < len(filenames)  # duplicates

        summary = await mirror(settings_for(emu, dest))
        assert summary.outcome == "ok", summary
        assert (summary.downloaded, summary.failed) == (150, 0)
        assert_mirror_matches(emu, dest)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["dest"]  # nothing escaped DEST

        exported = _export(dest)
        for asset_id in emu.dataset.asset_ids():
            expected = emu.dataset.expected(asset_id)
            row = exported[asset_id]
            assert sorted(row["tags"]) == sorted(expected.tags)
            assert sorted(row["data_tags"]) == sorted(expected.data_tags)
            assert row["annotations"] == expected.annotations
            assert not Path(row["path"]).is_absolute()

        emu.counters.reset()
        again = await mirror(settings_for(emu, dest))
        assert again.outcome == "ok"
        assert (again.downloaded, again.skipped, again.updated) == (0, 150, 0)
        assert emu.counters.storage_requests == 0  # unchanged assets cost no storage request
        assert again.tag_changes == 0 and again.annotation_changes == 0


async def test_metadata_requests_grow_with_pages_and_tags_not_assets(tmp_path: Path):
    async with Emulator(assets=450, seed=5, null_url_share=0.3) as emu:
        settings = settings_for(emu, tmp_path / "d", page_size=100)
        summary = await mirror(settings)
        assert summary.outcome == "ok"
        requests = emu.counters.requests
        ids = list(emu.dataset.asset_ids())
        pages = math.ceil(len(ids) / 100)
        # Nothing is asked per asset...
        assert requests.get("asset", 0) == 0
        assert requests.get("asset_annotations", 0) == 0
        assert requests.get("presign", 0) == 0  # null URLs were refreshed in batches (XGET)
        assert requests.get("data", 0) <= 1  # one data object, to learn the datalake
        # ... but per page and per tag.
        assert requests["assets_list"] == pages
        page_sizes = [min(100, len(ids) - start) for start in range(0, len(ids), 100)]
        # The annotation ids are asked 50 assets at a time, as the platform SDK does.
        assert requests["annotation_ids"] == sum(math.ceil(n / 50) for n in page_sizes)
        assert requests["annotations_bulk"] <= pages
        assert requests.get("assets_xget", 0) <= pages
        tag_names = {t for a in ids for t in emu.dataset.expected(a).tags}
        data_tag_names = {t for a in ids for t in emu.dataset.expected(a).data_tags}
        assert tag_names and data_tag_names
        assert requests["asset_ids"] <= 2 * (
            len(emu.dataset.asset_tag_names()) + len(emu.dataset.data_tag_names())
        )


async def test_url_expiry_during_the_run_refreshes_and_completes(tmp_path: Path):
    dest = tmp_path / "dest"
    async with Emulator(assets=60, seed=8, url_ttl=600, large_share=0.0) as emu:
        # Slow storage down so the run is still going when the clock jumps.
        emu.faults.add(FaultRule(target="storage", kind="throttle", bytes_per_second=2_000_000))
        counters = LiveCounters()
        settings = settings_for(emu, dest, limits={"concurrency": 4})

        async def jump_clock() -> None:
            while counters.downloaded < 10:
                await anyio.sleep(0.01)
            emu.advance_clock(3600)  # every URL handed out so far is now expired

        async with anyio.create_task_group() as tg:
            tg.start_soon(jump_clock)
            summary = await mirror(settings, counters=counters, clock=emu.now)
        assert summary.outcome == "ok", summary
        assert summary.url_refreshes > 0
        assert_mirror_matches(emu, dest)


async def test_faults_on_api_and_storage_still_give_a_complete_mirror(tmp_path: Path):
    dest = tmp_path / "dest"
    async with Emulator(assets=80, seed=11, fault_seed=4) as emu:
        emu.faults.add(FaultRule(target="storage", kind="drop", probability=0.25, count=15))
        emu.faults.add(
            FaultRule(target="storage", kind="status", status=503, retry_after=0.01, count=5)
        )
        emu.faults.add(FaultRule(target="storage", kind="status", status=500, count=3))
        emu.faults.add(
            FaultRule(target="storage", kind="status", status=429, retry_after=0.01, count=3)
        )
        emu.faults.add(
            FaultRule(target="storage", kind="stall", seconds=3, after_bytes=100, count=2)
        )
        emu.faults.add(
            FaultRule(target="assets_list", kind="status", status=503, retry_after=0.01, count=2)
        )
        emu.faults.add(FaultRule(target="annotations_bulk", kind="status", status=502, count=1))
        settings = settings_for(
            emu, dest, transfer={"timeouts": {"stall": 0.5, "read": 5, "connect": 5, "api": 30}}
        )
        summary = await mirror(settings)
        assert summary.outcome == "ok", summary
        assert summary.retries > 0
        assert_mirror_matches(emu, dest)


async def test_rerun_after_mutations_with_delete(tmp_path: Path):
    dest = tmp_path / "dest"
    async with Emulator(assets=40, seed=13) as emu:
        assert (await mirror(settings_for(emu, dest))).outcome == "ok"
        ids = list(emu.dataset.asset_ids())
        old_paths = {a: r["path"] for a, r in _export(dest).items()}
        emu.replace_data(ids[0])
        emu.delete_assets([ids[1], ids[2]])
        added = emu.add_assets(5)
        emu.set_asset_tags(ids[3], ["brand-new-tag"])
        emu.set_data_tags(ids[4], ["brand-new-data-tag"])
        emu.mutate_annotations(ids[5])

        emu.counters.reset()
        summary = await mirror(settings_for(emu, dest, delete=True))
        assert summary.outcome == "ok", summary
        assert summary.downloaded == 1 + len(added)
        assert summary.deleted == 2
        assert summary.updated == 3  # ids[3], ids[4], ids[5]: metadata only
        assert summary.tag_changes == 2
        assert summary.annotation_changes == 1
        paths = assert_mirror_matches(emu, dest)
        assert not (dest / old_paths[ids[1]]).exists()
        assert paths[ids[0]] == old_paths[ids[0]]  # new content, same stable path
        exported = _export(dest)
        assert "brand-new-tag" in exported[ids[3]]["tags"]
        assert "brand-new-data-tag" in exported[ids[4]]["data_tags"]
        assert exported[ids[5]]["annotations"] == emu.dataset.expected(ids[5]).annotations
        # Storage was asked only for the new and the replaced objects.
        assert emu.counters.storage_requests == 1 + len(added)


async def test_delete_is_capped_by_max_delete_unless_forced(tmp_path: Path):
    dest = tmp_path / "dest"
    async with Emulator(assets=20, seed=17) as emu:
        await mirror(settings_for(emu, dest))
        ids = list(emu.dataset.asset_ids())
        emu.delete_assets(ids[:12])  # 60% of the mirror
        refused = await mirror(settings_for(emu, dest, delete=True))
        assert refused.deleted == 0
        assert refused.planned_deletions == 12
        assert "--max-delete" in (refused.deletion_note or "")
        assert len(files_under(dest)) == 20  # nothing lost
        forced = await mirror(settings_for(emu, dest, delete=True, force=True))
        assert forced.deleted == 12
        assert_mirror_matches(emu, dest)


async def test_nothing_is_deleted_after_an_incomplete_listing(tmp_path: Path):
    dest = tmp_path / "dest"
    async with Emulator(assets=30, seed=19) as emu:
        await mirror(settings_for(emu, dest, page_size=10))
        # The listing fails for good: every asset is "unseen", and none may be deleted.
        emu.faults.add(FaultRule(target="assets_list", kind="status", status=500))
        summary = await mirror(
            settings_for(
                emu,
                dest,
                page_size=10,
                delete=True,
                force=True,
                transfer={"retry": {"attempts": 2, "base_delay": 0.0, "max_delay": 0.0}},
            )
        )
        assert summary.outcome == "failed"
        assert summary.deleted == 0
        assert len(files_under(dest)) == 30


async def test_dry_run_touches_nothing(tmp_path: Path):
    dest = tmp_path / "dest"
    async with Emulator(assets=25, seed=23) as emu:
        planned = []
        summary = await mirror(settings_for(emu, dest, dry_run=True), plan_sink=planned.append)
        assert summary.outcome == "dry-run"
        assert summary.downloaded == 25  # would download
        assert len(planned) == 25
        assert not dest.exists()
        assert emu.counters.storage_requests == 0

        await mirror(settings_for(emu, dest))
        ids = list(emu.dataset.asset_ids())
        emu.replace_data(ids[0])
        emu.delete_assets([ids[1]])
        before = {p: (dest / p).stat().st_mtime_ns for p in files_under(dest)}
        manifest_bytes = (dest / ".assetsync" / "manifest.sqlite").read_bytes()
        emu.counters.reset()
        summary = await mirror(settings_for(emu, dest, dry_run=True, delete=True))
        assert summary.downloaded == 1
        assert summary.planned_deletions == 1
        assert emu.counters.storage_requests == 0
        assert {p: (dest / p).stat().st_mtime_ns for p in files_under(dest)} == before
        assert (dest / ".assetsync" / "manifest.sqlite").read_bytes() == manifest_bytes


async def test_tag_filter_mirrors_only_matching_assets(tmp_path: Path):
    async with Emulator(assets=60, seed=29) as emu:
        ids = list(emu.dataset.asset_ids())
        tag = emu.dataset.asset_tag_names()[0]
        wanted = {a for a in ids if tag in emu.dataset.expected(a).tags}
        assert 0 < len(wanted) < len(ids)
        summary = await mirror(settings_for(emu, tmp_path / "d", tags=(tag,)))
        assert summary.outcome == "ok"
        assert set(_export(tmp_path / "d")) == wanted


async def test_verify_marks_damage_and_the_next_mirror_repairs_it(tmp_path: Path):
    dest = tmp_path / "dest"
    async with Emulator(assets=12, seed=31, large_share=0.0) as emu:
        await mirror(settings_for(emu, dest))
        paths = sorted(_export(dest).items())
        damaged = [(a, r) for a, r in paths if r["size"] > 0][:2]
        target = dest / damaged[0][1]["path"]
        target.write_bytes(b"x" * damaged[0][1]["size"])  # same size, other bytes
        (dest / damaged[1][1]["path"]).unlink()

        report = await verify(dest)
        assert report.problem_count == 2
        assert {p.state for p in report.problems} == {"corrupt", "missing"}

        emu.counters.reset()
        summary = await mirror(settings_for(emu, dest))
        assert summary.downloaded == 2
        assert_mirror_matches(emu, dest)
        assert (await verify(dest)).problem_count == 0


async def test_bad_input_is_refused_before_anything_changes(tmp_path: Path):
    async with Emulator(assets=3, seed=37) as emu:
        with pytest.raises(AuthError):
            await mirror(settings_for(emu, tmp_path / "a", token="wrong-token"))
        with pytest.raises(UsageError, match="not found"):
            await mirror(settings_for(emu, tmp_path / "b", dataset_version="0" * 32))
        regular = tmp_path / "file"
        regular.write_text("keep me")
        with pytest.raises(UsageError, match="not a directory"):
            await mirror(settings_for(emu, regular))
        assert regular.read_text() == "keep me"
        with pytest.raises(UsageError, match="concurrency"):
            settings_for(emu, tmp_path / "c", limits={"concurrency": 0})


async def test_a_second_run_on_a_locked_dest_is_refused(tmp_path: Path):
    dest = tmp_path / "dest"
    dest.mkdir()
    async with Emulator(assets=3, seed=41) as emu:
        with DestLock(dest), pytest.raises(LockHeldError):
            await mirror(settings_for(emu, dest))
        assert (await mirror(settings_for(emu, dest))).outcome == "ok"


async def test_another_version_in_the_same_dest_is_refused(tmp_path: Path):
    dest = tmp_path / "dest"
    async with Emulator(assets=3, seed=43) as emu:
        await mirror(settings_for(emu, dest))
    async with Emulator(assets=3, seed=44) as other:
        with pytest.raises(UsageError, match="mirrors dataset version"):
            await mirror(settings_for(other, dest))


async def test_downloads_start_before_the_metadata_is_in(tmp_path: Path):
    """Files depend on content alone: a slow tag listing must not hold up the first downloads,
    and each file is still committed with its tags once they arrive."""
    dest = tmp_path / "dest"
    async with Emulator(assets=40, seed=47, large_share=0.0) as emu:
        # The version's tag list, which every tag listing waits for, is refused once with a
        # long Retry-After: no tag can be known for the next three seconds.
        emu.faults.add(
            FaultRule(target="version_tags", kind="status", status=503, retry_after=3.0, count=1)
        )
        counters = LiveCounters()
        seen_before_tags: list[int] = []

        async def watch() -> None:
            while counters.downloaded < 10:
                await anyio.sleep(0.005)
            requests = emu.counters.requests
            seen_before_tags.append(requests.get("version_tags", 0) + requests.get("asset_ids", 0))

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            summary = await mirror(settings_for(emu, dest), counters=counters)
        assert summary.outcome == "ok"
        # Ten files were in place while the tag list still waited for its retry (one refused
        # request, no tag listing yet).
        assert seen_before_tags == [1]
        exported = _export(dest)
        for asset_id in emu.dataset.asset_ids():
            assert sorted(exported[asset_id]["tags"]) == sorted(emu.dataset.expected(asset_id).tags)
