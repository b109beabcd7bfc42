"""How to run ``assetsync`` again from here, for hints printed to the user.

``make demo`` runs ``.venv/bin/assetsync``, which is not on ``PATH``: a hint that says
``assetsync status`` would fail with "command not found". The hint names the command the way
this process was started: ``assetsync`` when that resolves to this very program, else the path
it was started by (relative to the current folder when under it), or ``python -m engine``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

__all__ = ["command_prefix"]


def _shown(path: str) -> str:
    absolute = Path(os.path.abspath(path))
    try:
        relative = absolute.relative_to(Path.cwd())
    except ValueError:
        return shlex.quote(str(absolute))
    # "./x" rather than "x": a bare name would be looked up on PATH, not here.
    text = str(relative)
    return shlex.quote(text if os.sep in text else f".{os.sep}{text}")


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def command_prefix(argv0: str | None = None, executable: str | None = None) -> str:
    """The shell words that start ``assetsync`` again, e.g. ``.venv/bin/assetsync``."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    executable = sys.executable if executable is None else executable
    started_as_module = Path(argv0).name == "__main__.py" or argv0 in ("", "-m", "-c")
    if not started_as_module and os.path.isfile(argv0):
        on_path = shutil.which("assetsync")
        if on_path is not None and _same_file(on_path, argv0):
            return "assetsync"
        return _shown(argv0)
    return f"{_shown(executable)} -m engine"
