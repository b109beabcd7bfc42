"""Run one command and measure it: wall time, CPU of its process tree, peak RSS, first file.

CPU and memory come from the kernel, not from sampling: ``os.wait4`` returns the child's
``rusage``, which on Linux covers the child and every descendant it waited for (threads
included). Peak RSS needs one more step: Linux seeds a process's ``ru_maxrss`` with the peak of
the memory image it replaced at ``exec``, which for a child forked from this Python harness is
the harness's own size (~50 MB, whatever the tool uses). So the tool is started through GNU
``time`` (``/usr/bin/time -f %M``), a 2 MB process whose child's ``ru_maxrss`` is the tool's
real peak; CPU still comes from our ``wait4`` (microseconds, and ``time``'s own share is
negligible). Without ``/usr/bin/time`` (Debian package ``time``) the raw ``ru_maxrss`` is kept
and flagged. The child runs in its own session, so a timeout or a Ctrl-C can end its whole
process group and nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

TIME_BIN = "/usr/bin/time"
_QUERY = re.compile(r"\?[^\s\"'<>]*")


@dataclass
class Measurement:
    wall: float  # seconds from spawn to exit
    user: float  # CPU seconds in user mode, child tree
    sys: float  # CPU seconds in the kernel, child tree
    max_rss_kib: int
    rss_exact: bool  # False: ru_maxrss includes the harness's size (no /usr/bin/time)
    returncode: int
    timed_out: bool
    first_file: float | None  # seconds from spawn to the first complete file at the destination
    log_dir: Path

    @property
    def cpu(self) -> float:
        return self.user + self.sys

    def log_tail(self, limit: int = 600) -> str:
        """The end of the tool's output, with every URL query (signatures) cut out."""
        parts = []
        for name in ("stderr.log", "stdout.log"):
            with contextlib.suppress(OSError):
                text = (self.log_dir / name).read_text(errors="replace")
                text = " ".join(_QUERY.sub("?…", text).split())
                if text:
                    parts.append(text[-limit:])
        return " | ".join(parts)


class FirstFileProbe:
    """Polls a destination until a file with an expected name has its expected size.

    Tools write in place (curl, wget2), through temp names (rclone, assetsync) or with control
    files (aria2c, run with ``--file-allocation=none`` so a file never has its final size before
    its last byte). Polling stops at the first hit, while the folder still holds only a handful of
    entries, so its cost does not weigh on the measured tool.
    """

    def __init__(self, dest: Path, sizes: Mapping[str, int], interval: float = 0.002) -> None:
        self.dest = dest
        self.sizes = sizes
        self.interval = interval
        self.found_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def start(self, t0: float) -> None:
        self._t0 = t0
        self._thread = threading.Thread(target=self._run, name="first-file-probe", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._complete_file_exists(self.dest, depth=3):
                self.found_at = time.perf_counter() - self._t0
                return
            self._stop.wait(self.interval)

    def _complete_file_exists(self, folder: Path, depth: int) -> bool:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return False
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False):
                    expected = self.sizes.get(entry.name)
                    if expected is not None and entry.stat().st_size == expected:
                        return True
                elif (
                    depth > 0
                    and entry.is_dir(follow_symlinks=False)
                    and not entry.name.startswith(".")
                    and self._complete_file_exists(Path(entry.path), depth - 1)
                ):
                    return True
            except OSError:
                continue
        return False


def tool_pid(parent: int) -> int:
    """The pid of the process ``parent`` (GNU time) started, once it exists (``parent`` itself
    if none comes within two seconds)."""
    for _ in range(200):
        children = Path(f"/proc/{parent}/task/{parent}/children")
        try:
            pids = children.read_text().split()
        except FileNotFoundError:
            pids = []
        if pids:
            return int(pids[0])
        time.sleep(0.01)
    return parent


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_dir: Path,
    timeout: float,
    cwd: Path | None = None,
    probe: FirstFileProbe | None = None,
    during: Callable[[int], contextlib.AbstractContextManager[object]] | None = None,
) -> Measurement:
    """Run ``argv`` to completion (or ``timeout``) and measure it. ``during(pid)``: a context
    entered once the tool runs (``pid`` is the tool's, not GNU time's) and left when it has
    ended, e.g. a sampler of its resident size. Its output is in ``log_dir`` (stdout.log,
    stderr.log)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    timed_out = threading.Event()
    rss_file = log_dir / "maxrss.txt"
    rss_file.unlink(missing_ok=True)
    exact = os.access(TIME_BIN, os.X_OK)
    if exact:
        argv = [TIME_BIN, "-f", "%M", "-o", str(rss_file), *argv]
    with open(log_dir / "stdout.log", "wb") as out, open(log_dir / "stderr.log", "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        if probe is not None:
            probe.start(t0)

        def on_timeout() -> None:
            timed_out.set()
            _kill_group(proc.pid)

        timer = threading.Timer(timeout, on_timeout)
        timer.daemon = True
        timer.start()
        watching = contextlib.ExitStack()
        try:
            if during is not None:
                watching.enter_context(during(tool_pid(proc.pid) if exact else proc.pid))
            with watching:
                _, status, usage = os.wait4(proc.pid, 0)
                wall = time.perf_counter() - t0
        except BaseException:
            # Ctrl-C (or anything else): the tool and whatever it spawned go too.
            _kill_group(proc.pid)
            with contextlib.suppress(ChildProcessError):
                os.wait4(proc.pid, 0)
            proc.returncode = -9
            raise
        finally:
            timer.cancel()
            if probe is not None:
                probe.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)
        # Helpers a tool left running in its group (none expected) must not outlive the run.
        _kill_group(proc.pid)
    max_rss = usage.ru_maxrss
    if exact:
        try:
            max_rss = int(rss_file.read_text().split()[-1])
        except (OSError, ValueError, IndexError):
            exact = False
    return Measurement(
        wall=wall,
        user=usage.ru_utime,
        sys=usage.ru_stime,
        max_rss_kib=max_rss,
        rss_exact=exact,
        returncode=proc.returncode,
        timed_out=timed_out.is_set(),
        first_file=probe.found_at if probe is not None else None,
        log_dir=log_dir,
    )
