"""This machine, as the files the engine leaves behind must recognise it."""

from __future__ import annotations

import functools

__all__ = ["boot_id"]


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
