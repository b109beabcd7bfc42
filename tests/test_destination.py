"""``check_destination`` looks and never writes. (An unwritable folder is covered end to end in
``tests/cli/test_exit_codes.py``, which can take the privilege away even from root.)"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.destination import check_destination
from engine.errors import UsageError


def test_a_new_dest_under_an_existing_folder_is_fine_and_not_created(tmp_path: Path) -> None:
    dest = tmp_path / "a" / "b" / "c"
    assert check_destination(dest, writable=True) == dest
    assert list(tmp_path.iterdir()) == []


def _regular_file(tmp: Path) -> Path:
    (tmp / "f").write_text("x")
    return tmp / "f"


def _under_a_regular_file(tmp: Path) -> Path:
    return _regular_file(tmp) / "d" / "e"


def _symlink(tmp: Path) -> Path:
    (tmp / "real").mkdir()
    os.symlink(tmp / "real", tmp / "link")
    return tmp / "link"


def _dangling_symlink(tmp: Path) -> Path:
    os.symlink(tmp / "nowhere", tmp / "dangling")
    return tmp / "dangling"


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (_regular_file, "exists and is not a directory"),
        (_under_a_regular_file, "f is not a directory"),
        (_symlink, "is a symlink"),
        (_dangling_symlink, "is a symlink"),
    ],
)
def test_unusable_destinations(tmp_path: Path, make: Callable[[Path], Path], fragment: str) -> None:
    dest = make(tmp_path)
    before = sorted(os.listdir(tmp_path))
    for writable in (True, False):
        with pytest.raises(UsageError, match=fragment):
            check_destination(dest, writable=writable)
    assert sorted(os.listdir(tmp_path)) == before
