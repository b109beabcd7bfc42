"""The ``assetsync`` command as the tests run it: its environment, and a measured run.

Every test that runs the command as a process builds its environment with :func:`command_env`
(the caller's environment without any assetsync or platform setting, the token, quick retries)
and, when it must bound the run's time and memory, runs it with :func:`run_measured`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ASSETSYNC", "Run", "command_env", "run_measured"]

ASSETSYNC = [sys.executable, "-m", "engine"]


def mirror_command(emu: Any, dest: Path, *more: str) -> list[str]:
    """``assetsync mirror`` of the emulator's version into ``dest``, then ``more``."""
    return [
        *ASSETSYNC,
        "mirror",
        "--api-url",
        emu.api_url,
        "--dataset-version",
        emu.dataset_version_id,
        "--dest",
        str(dest),
        *more,
    ]


def command_env(token: str | None, **extra: str) -> dict[str, str]:
    """The caller's environment without ``ASSETSYNC_*``/``PICSELLIA_*``, the token in
    ``PICSELLIA_TOKEN`` (none: unset), quick retries (a test must not sit in a backoff for
    seconds), then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASSETSYNC_", "PICSELLIA_"))}
    if token is not None:
        env["PICSELLIA_TOKEN"] = token
    env["ASSETSYNC_TRANSFER__RETRY__BASE_DELAY"] = "0.01"
    env["ASSETSYNC_TRANSFER__RETRY__MAX_DELAY"] = "0.05"
    env.update(extra)
    return env


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    peak_rss: int  # bytes: the command's own peak resident memory
    seconds: float

    @property
    def summary(self) -> dict[str, Any]:
        """The one JSON object a ``--json`` run prints."""
        lines = self.stdout.strip().splitlines()
        assert len(lines) == 1, self.stdout[-2000:]
        value = json.loads(lines[0])
        assert isinstance(value, dict)
        return value


# The command runs under this small launcher, whose only child it is: its RUSAGE_CHILDREN peak
# is the command's. (Measured from pytest itself, a child's ru_maxrss also counts the pages of
# pytest it was forked from, hundreds of MiB late in the suite.) An address-space limit, when
# given, is set here and inherited: a run that tries to build a 7 GB list fails with MemoryError
# instead of eating a shared machine's RAM.
_LAUNCHER = """
import resource, subprocess, sys
limit = int(sys.argv[2])
if limit:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
code = subprocess.call(sys.argv[3:])
with open(sys.argv[1], "w") as out:
    out.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code if code >= 0 else 128 - code)
"""


def run_measured(
    argv: Sequence[str],
    env: dict[str, str],
    *,
    hang_guard: float,
    address_space: int = 0,
) -> Run:
    """Run ``argv`` to its end and measure it; fail the test (after killing the command) if it
    has not ended within ``hang_guard`` seconds."""
    hung = threading.Event()
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory() as tmp,
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
    ):
        peak_file = Path(tmp) / "peak"
        proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, str(peak_file), str(address_space), *argv],
            stdout=out,
            stderr=err,
            env=env,
            start_new_session=True,  # the hang guard ends the launcher and the command
        )

        def kill() -> None:
            hung.set()
            os.killpg(proc.pid, signal.SIGKILL)

        guard = threading.Timer(hang_guard, kill)
        guard.start()
        try:
            code = proc.wait()
        except BaseException:  # interrupted (pytest's timeout, ^C): leave nothing running
            kill()
            proc.wait()
            raise
        finally:
            guard.cancel()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
        assert not hung.is_set(), f"hung: killed after {hang_guard} s; {stderr[-2000:]}"
        peak_kib = int(peak_file.read_text())
    return Run(code, stdout, stderr, peak_kib * 1024, time.monotonic() - started)
