"""This machine, as the files the engine leaves behind must recognise it."""

from __future__ import annotations

import functools
import os

__all__ = ["boot_id", "pid_alive"]


@functools.cache
def boot_id() -> str | None:
    """This boot's id (Linux), or None where the kernel does not say.

    A lock record or a partial file's resume state written under another boot id was written
    before a reboot: its process is gone, and its unsynced bytes may be too.
    """
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process of this pid exists on this machine (ours or not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it is just not ours
    return True
