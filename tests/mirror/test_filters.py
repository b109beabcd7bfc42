"""A run with ``--tag`` / ``--data-tag``: what it deletes, what it refuses, and what a refused
run leaves on disk (nothing)."""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from engine.emulator import Emulator, FaultRule
from engine.errors import ApiUnavailable, AuthError, UsageError
from engine.manifest import Manifest
from engine.mirroring import mirror
from engine.mirroring.deletion import stage_version_ids
from engine.pipeline.writer import ManifestAccess
from engine.platform import PlatformClient
from engine.preflight import MAX_LISTED_TAGS, unknown_tags_message
from engine.settings import RetryPolicy
from tests.mirror.helpers import files_under, settings_for


def _tagged(emu: Emulator, tag: str) -> set[str]:
    return {a for a in emu.dataset.asset_ids() if tag in emu.dataset.expected(a).tags}


def _paths(dest: Path) -> dict[str, str]:
    with Manifest.open(dest, create=False, read_only=True) as manifest:
        return {r.asset_id: r.path for r in manifest.iter_rows() if r.path is not None}


async def test_delete_with_a_filter_removes_only_what_left_the_version(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    async with Emulator(assets=60, seed=91) as emu:
        tag = emu.dataset.asset_tag_names()[0]
        assert (await mirror(settings_for(emu, dest))).outcome == "ok"
        everything = _paths(dest)
        tagged = _tagged(emu, tag)
        untagged = set(everything) - tagged
        assert tagged and len(untagged) >= 2
        gone_tagged, gone_untagged = sorted(tagged)[0], sorted(untagged)[0]
        emu.delete_assets([gone_tagged, gone_untagged])

        summary = await mirror(settings_for(emu, dest, tags=(tag,), delete=True))
        assert summary.outcome == "ok", summary
        # Both left the version; the filter decides what is fetched, not what is "gone".
        assert summary.deleted == 2
        assert summary.planned_deletions == 2
        kept = untagged - {gone_untagged}
        assert summary.deletions_kept == len(kept)
        assert summary.deletion_note == (
            f"2 files are no longer in the version; {len(kept)} files of assets the filter "
            "leaves out are still in the version and were kept (--delete-excluded removes them)"
        )
        on_disk = files_under(dest)
        for asset_id in kept | (tagged - {gone_tagged}):
            assert everything[asset_id] in on_disk, asset_id
        assert everything[gone_tagged] not in on_disk
        assert everything[gone_untagged] not in on_disk

        # --delete-excluded: the filter's leftovers go too, and --max-delete still applies.
        share = 100 * len(kept) / (len(everything) - 2)
        refused = await mirror(
            settings_for(emu, dest, tags=(tag,), delete_excluded=True, max_delete=share - 1)
        )
        assert refused.deleted == 0
        assert refused.planned_deletions == len(kept)
        assert "--max-delete" in (refused.deletion_note or "")
        assert files_under(dest) == on_disk
        excluded = await mirror(
            settings_for(emu, dest, tags=(tag,), delete_excluded=True, max_delete=share)
        )
        assert excluded.deleted == len(kept)
        assert excluded.deletion_note == (
            f"{len(kept)} files are no longer in the version or are left out by the filter "
            "(--delete-excluded)"
        )
        assert set(_paths(dest)) == tagged - {gone_tagged}
        assert files_under(dest) == {everything[a] for a in tagged - {gone_tagged}}


async def test_delete_excluded_note_says_why(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    async with Emulator(assets=30, seed=92) as emu:
        tag = emu.dataset.asset_tag_names()[0]
        await mirror(settings_for(emu, dest))
        untagged = set(emu.dataset.asset_ids()) - _tagged(emu, tag)
        planned = await mirror(
            settings_for(emu, dest, tags=(tag,), delete_excluded=True, dry_run=True)
        )
        assert planned.planned_deletions == len(untagged)
        assert planned.deleted == 0
        assert planned.deletion_note is not None
        assert "left out by the filter (--delete-excluded)" in planned.deletion_note


async def test_a_dry_run_with_a_filter_plans_the_same_deletions(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    async with Emulator(assets=30, seed=93) as emu:
        tag = emu.dataset.asset_tag_names()[0]
        await mirror(settings_for(emu, dest))
        victim = sorted(set(emu.dataset.asset_ids()) - _tagged(emu, tag))[0]
        emu.delete_assets([victim])
        before = files_under(dest)
        summary = await mirror(settings_for(emu, dest, tags=(tag,), delete=True, dry_run=True))
        assert summary.planned_deletions == 1
        assert summary.deleted == 0
        assert files_under(dest) == before


async def test_the_version_id_listing_failing_is_reported(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    async with Emulator(assets=10, seed=94) as emu:
        await mirror(settings_for(emu, dest))
        emu.faults.add(FaultRule(target="asset_ids", kind="status", status=500))
        with Manifest.open(dest) as manifest:
            run_id = manifest.begin_run(emu.dataset_version_id, emu.api_url)
            async with aiohttp.ClientSession() as session:
                client = PlatformClient(
                    session,
                    emu.api_url,
                    SecretStr(emu.token),
                    RetryPolicy(attempts=1, base_delay=0.0, max_delay=0.0),
                )
                error = await stage_version_ids(
                    client, emu.dataset_version_id, ManifestAccess(manifest), run_id, 100
                )
        assert error is not None and error.startswith("the version's id listing failed")


async def test_an_unknown_tag_is_a_usage_error_naming_the_tags(tmp_path: Path) -> None:
    async with Emulator(assets=10, seed=95) as emu:
        known = emu.dataset.asset_tag_names()
        with pytest.raises(UsageError) as info:
            await mirror(settings_for(emu, tmp_path / "a", tags=(known[0], "nosuchtag")))
        message = str(info.value)
        assert message.startswith('unknown asset tag "nosuchtag": dataset version')
        assert all(f'"{name}"' in message for name in known)
        assert f'"{known[0]}",' in message or message.endswith(f'"{known[0]}"')
        with pytest.raises(UsageError, match='unknown data tag "nosuchdatatag"'):
            await mirror(settings_for(emu, tmp_path / "b", data_tags=("nosuchdatatag",)))
        assert list(tmp_path.iterdir()) == []
        # A known data tag passes.
        data_tag = emu.dataset.data_tag_names()[0]
        assert (await mirror(settings_for(emu, tmp_path / "c", data_tags=(data_tag,)))).outcome


def test_a_long_tag_list_is_cut_to_one_readable_line() -> None:
    known = [f"tag-{i:03d}" for i in range(200)] + ["x" * 500]
    message = unknown_tags_message("asset tag", ["nope"], "dataset version V", known)
    assert "\n" not in message
    assert len(message) < 400
    assert message.endswith(f"and {len(known) - MAX_LISTED_TAGS} more")
    assert unknown_tags_message("asset tag", ["a", "b"], "dataset version V", []) == (
        'unknown asset tags "a", "b": dataset version V has no asset tags'
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_refused_run_creates_nothing(tmp_path: Path) -> None:
    """Nothing exists on disk before the platform has answered: not DEST, not its lock, not
    its manifest."""
    async with Emulator(assets=3, seed=96) as emu:
        with pytest.raises(AuthError):
            await mirror(settings_for(emu, tmp_path / "a", token="wrong"))
        with pytest.raises(UsageError, match="not found"):
            await mirror(settings_for(emu, tmp_path / "b", dataset_version="0" * 32))
        with pytest.raises(UsageError, match="unknown asset tag"):
            await mirror(settings_for(emu, tmp_path / "c", tags=("nope",)))
        unreachable = settings_for(
            emu,
            tmp_path / "d",
            api_url=f"http://127.0.0.1:{_closed_port()}",
            transfer={"retry": {"attempts": 2, "base_delay": 0.0, "max_delay": 0.0}},
        )
        with pytest.raises(ApiUnavailable):
            await mirror(unreachable)
        assert list(tmp_path.iterdir()) == []
        # An existing but empty DEST stays empty too (no .assetsync).
        (tmp_path / "e").mkdir()
        with pytest.raises(AuthError):
            await mirror(settings_for(emu, tmp_path / "e", token="wrong"))
        assert list((tmp_path / "e").iterdir()) == []


async def test_an_unusable_dest_is_refused_before_the_platform_is_asked(tmp_path: Path) -> None:
    regular = tmp_path / "file"
    regular.write_text("keep")
    async with Emulator(assets=3, seed=97) as emu:
        with pytest.raises(UsageError, match="is not a directory"):
            await mirror(settings_for(emu, regular / "d"))
        assert sum(emu.counters.requests.values()) == 0
        assert regular.read_text() == "keep"


async def test_a_dry_run_reports_no_byte_count(tmp_path: Path) -> None:
    async with Emulator(assets=8, seed=98) as emu:
        summary = await mirror(settings_for(emu, tmp_path / "d", dry_run=True))
        assert summary.outcome == "dry-run"
        assert summary.downloaded == 8
        assert summary.bytes_downloaded is None
        assert summary.to_json()["bytes_downloaded"] is None
        real = await mirror(settings_for(emu, tmp_path / "d"))
        assert real.bytes_downloaded == sum(
            emu.dataset.expected(a).size for a in emu.dataset.asset_ids()
        )
