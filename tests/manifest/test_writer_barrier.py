"""The manifest writer's group commit: a row that records a file waits for the barrier.

The barrier given here is the writer's own parameter (the mirror passes
``Transferer.sync_placed``, exercised for real by ``tests/soak/test_group_commit_power_cut.py``
and ``tests/transfer/test_group_commit_failure.py``); these tests pin down the writer's order of
events and what a failed barrier leaves in a real manifest.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from engine.errors import LocalStorageError
from engine.manifest import Manifest
from engine.pipeline.placed_journal import PlacedJournal
from engine.pipeline.writer import ManifestAccess, ManifestWriter
from tests.manifest.helpers import update

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _ok_ids(manifest: Manifest) -> set[str]:
    return {row.asset_id for row in manifest.iter_rows() if row.state == "ok"}


async def test_rows_with_files_are_committed_only_after_a_barrier(tmp_path: Path) -> None:
    manifest = Manifest.open(tmp_path)
    try:
        run_id = manifest.begin_run("dv", "http://127.0.0.1", {})
        seen_at_barrier: list[set[str]] = []

        async def barrier() -> int:
            # What the manifest holds when the barrier runs: none of the batch's files yet.
            seen_at_barrier.append(_ok_ids(manifest))
            return 0

        writer = ManifestWriter(ManifestAccess(manifest), run_id, barrier=barrier)
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            writer.put(update("a"))
            writer.put(update("b"))
            await writer.flush()
            writer.put(update("c", with_file=False))  # metadata only: nothing to make durable
            await writer.flush()
            writer.put(update("d"))
            writer.close()
        assert seen_at_barrier == [set(), {"a", "b"}]
        assert writer.barriers == 2
        assert _ok_ids(manifest) == {"a", "b", "d"}
    finally:
        manifest.close()


async def test_a_failed_barrier_keeps_its_files_out_records_the_rest_and_stops(
    tmp_path: Path,
) -> None:
    manifest = Manifest.open(tmp_path)
    try:
        run_id = manifest.begin_run("dv", "http://127.0.0.1", {})
        calls = 0

        async def barrier() -> int:
            # Each call queues the next batch, so the writer takes them one by one.
            nonlocal calls
            calls += 1
            if calls == 1:
                writer.put(update("b"))
                writer.put(update("c", with_file=False, state="failed", error="gone"))
                return 0
            writer.put(update("d"))  # left over when the writer stops
            raise LocalStorageError("cannot make the placed files durable: EIO")

        journal = PlacedJournal(tmp_path / "placed.jsonl")
        journal.open()
        writer = ManifestWriter(ManifestAccess(manifest), run_id, barrier=barrier, journal=journal)
        writer.put(update("a"))
        with anyio.fail_after(30), pytest.raises(LocalStorageError, match="EIO"):
            await writer.run()
        journal.close()
        # Nor will a later run adopt b or d from the journal: a write-back error was reported.
        assert (tmp_path / "placed.jsonl").read_bytes() == b""
        # The failed barrier's file (b) is not recorded, the failure (c) is; the leftover (d),
        # committed by the stopping writer, is not recorded either: no later barrier could
        # vouch for it, so none is called.
        assert calls == 2
        rows = {row.asset_id: row.state for row in manifest.iter_rows()}
        assert rows == {"a": "ok", "c": "failed"}
    finally:
        manifest.close()


async def test_spaced_transactions_take_what_landed_meanwhile_and_lose_nothing_when_cancelled(
    tmp_path: Path,
) -> None:
    manifest = Manifest.open(tmp_path)
    try:
        run_id = manifest.begin_run("dv", "http://127.0.0.1", {})
        # Far longer than the test may take: only a flush, or the end, makes the writer go.
        writer = ManifestWriter(ManifestAccess(manifest), run_id, spacing=600.0)
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            with anyio.fail_after(30):
                writer.put(update("a"))
                await writer.flush()  # the first transaction goes at once
                for name in "bcde":  # rows trickling in, one per turn of the loop
                    writer.put(update(name))
                    await anyio.sleep(0)
                await anyio.sleep(0.05)
                assert _ok_ids(manifest) == {"a"}  # held back by the spacing...
                await writer.flush()  # ...which a flush does not wait out
            assert writer.commits == 2  # b..e went in one transaction together
            assert _ok_ids(manifest) == set("abcde")
            writer.put(update("f"))
            await anyio.sleep(0.05)  # the writer holds f, waiting out the spacing
            tg.cancel_scope.cancel()
        assert _ok_ids(manifest) == set("abcdef")  # committed on the way out
    finally:
        manifest.close()
