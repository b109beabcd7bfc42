"""DEST's folders kept open for a run: a folder replaced mid-run is never written through."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from engine.errors import LocalStorageError
from engine.transfer import Transferer
from engine.transfer.placement import DestDirs

from .conftest import Harness, KiB, fast_options, harness

pytestmark = pytest.mark.anyio


def _transferers(h: Harness) -> list[Transferer]:
    """Each way a small file is placed: on the event loop (no fsync, and group commit) and
    in a worker thread (fsync of each file)."""
    return [
        h.transferer(fast_options(fsync=False)),
        Transferer(
            h.session,
            fast_options(fsync=True),
            h.state_dir,
            clock=h.emu.now,
            group_commit=True,
        ),
        h.transferer(fast_options(fsync=True)),
    ]


@pytest.mark.parametrize("way", [0, 1, 2], ids=["loop", "group-commit", "fsync-thread"])
async def test_a_kept_folder_replaced_by_a_symlink_is_not_followed(
    tmp_path: Path, way: int
) -> None:
    async with harness(tmp_path) as h:
        t = _transferers(h)[way]
        first, second, third = h.assets(lambda a: 0 < a.size <= 64 * KiB)[:3]
        await h.fetch(t, first, rel="sub/deep/a.bin")  # the run now holds sub and sub/deep
        outside = tmp_path / "outside"
        outside.mkdir()
        # Mid-run, someone moves the folder out of DEST and leaves a symlink to it behind.
        shutil.move(h.dest / "sub", outside / "sub")
        (h.dest / "sub").symlink_to(outside / "sub", target_is_directory=True)
        with pytest.raises(LocalStorageError, match="symlink"):
            await h.fetch(t, second, rel="sub/deep/b.bin")
        assert sorted(os.listdir(outside / "sub" / "deep")) == ["a.bin"]
        # The deeper folder replaced by a link (to a folder inside DEST, even): refused too.
        (h.dest / "sub").unlink()
        (h.dest / "sub").mkdir()
        (h.dest / "elsewhere").mkdir()
        (h.dest / "sub" / "deep").symlink_to(h.dest / "elsewhere", target_is_directory=True)
        with pytest.raises(LocalStorageError, match="symlink"):
            await h.fetch(t, third, rel="sub/deep/c.bin")
        assert os.listdir(h.dest / "elsewhere") == []
        await t.sync_placed()
        t.close()


@pytest.mark.parametrize("way", [0, 1, 2], ids=["loop", "group-commit", "fsync-thread"])
async def test_a_kept_folder_removed_mid_run_is_made_again(tmp_path: Path, way: int) -> None:
    async with harness(tmp_path) as h:
        t = _transferers(h)[way]
        first, second = h.assets(lambda a: 0 < a.size <= 64 * KiB)[:2]
        await h.fetch(t, first, rel="sub/a.bin")
        moved = tmp_path / "moved"
        shutil.move(h.dest / "sub", moved)
        result = await h.fetch(t, second, rel="sub/b.bin")
        h.check(result, second)
        assert os.listdir(h.dest / "sub") == ["b.bin"]
        assert os.listdir(moved) == ["a.bin"]  # nothing followed the old descriptor
        await t.sync_placed()
        t.close()


def test_walks_reuse_kept_folders_and_check_them(tmp_path: Path) -> None:
    dirs = DestDirs(tmp_path / "dest")
    walk = dirs.walk(("a", "b", "f"))
    assert len(walk.created_in) == 2 and not walk.owned  # made dest/a and dest/a/b; kept
    again = dirs.walk(("a", "b", "g"))
    assert again.folder is walk.folder and not again.created_in
    # The same name now another folder: not the kept one.
    os.rename(tmp_path / "dest" / "a" / "b", tmp_path / "dest" / "a" / "old")
    (tmp_path / "dest" / "a" / "b").mkdir()
    third = dirs.walk(("a", "b", "h"))
    assert third.folder is not walk.folder
    assert os.fstat(third.folder.fd).st_ino == (tmp_path / "dest" / "a" / "b").stat().st_ino
    dirs.close()


def test_without_keeping_every_descriptor_is_the_walks_own(tmp_path: Path) -> None:
    dirs = DestDirs(tmp_path / "dest", keep=False)
    walk = dirs.walk(("a", "b", "f"))
    assert len(walk.owned) == 3  # dest, a, b
    walk.close_owned()
    again = dirs.walk(("f",))
    assert len(again.owned) == 1  # dest itself, opened again
    again.close_owned()
    dirs.close()
