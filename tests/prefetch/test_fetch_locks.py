"""The fetch locks of a shared DEST: who else is here, and a lock kept until its row is in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from engine.prefetch.locking import FetchLocks

pytestmark = pytest.mark.anyio

# Opens the fetch locks of DEST (argv[1]), says so, and keeps them open until stdin closes.
_HOLDER = """
import sys
from pathlib import Path
from engine.prefetch.locking import FetchLocks
locks = FetchLocks(Path(sys.argv[1]))
print("open", flush=True)
sys.stdin.read()
"""


def test_a_prefetcher_knows_it_is_alone_until_it_meets_another(tmp_path: Path) -> None:
    (tmp_path / ".assetsync").mkdir()
    first = FetchLocks(tmp_path)
    try:
        assert first.alone()
        assert first.alone()  # asking changes nothing
        second = FetchLocks(tmp_path)
        assert not second.alone()  # the first was there when it opened
        assert not first.alone()
        second.close()
        # Gone again, but it may have placed files the first planned before: not alone.
        assert not first.alone()
    finally:
        first.close()
    third = FetchLocks(tmp_path)  # everyone before it has closed
    try:
        assert third.alone()
    finally:
        third.close()


def test_another_process_holding_the_locks_is_seen(tmp_path: Path) -> None:
    (tmp_path / ".assetsync").mkdir()
    repo = Path(__file__).resolve().parents[2]
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)],
        cwd=repo,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline() == "open\n"
        locks = FetchLocks(tmp_path)
        try:
            assert not locks.alone()
        finally:
            locks.close()
            child.stdin.close()
        assert child.wait(timeout=30) == 0


async def test_a_kept_lock_is_held_until_it_is_released(tmp_path: Path) -> None:
    (tmp_path / ".assetsync").mkdir()
    ours, theirs = FetchLocks(tmp_path), FetchLocks(tmp_path)
    try:
        async with ours.hold("asset-1") as held:
            assert not held.waited
            release = held.keep()
        # The block has ended; the lock is still ours.
        with anyio.move_on_after(0.3) as waiting:
            async with theirs.hold("asset-1"):
                pytest.fail("took a lock that is kept")
        assert waiting.cancelled_caught
        release()
        release()  # a second call changes nothing
        with anyio.fail_after(10):
            async with theirs.hold("asset-1") as held:
                assert held.waited is False
        # A block that keeps nothing lets go at its end.
        async with ours.hold("asset-1"):
            pass
        with anyio.fail_after(10):
            async with theirs.hold("asset-1") as held:
                assert held.waited is False
    finally:
        ours.close()
        theirs.close()
    release()  # after the locks are closed: nothing to do, and no error
