"""Running ``assetsync`` the way people and cron do: a subprocess, through a pipe or a terminal.

:func:`run_pipe` gives the command pipes for stdout and stderr (cron, ``| tee``, a CI log);
:class:`PtyRun` gives it a pseudo-terminal for both (a person at a shell: the progress bar is
on). Both read everything the command wrote and wait for it to exit.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.command import command_env

ASSETSYNC = [sys.executable, "-m", "engine"]
TIMEOUT = 120.0

# CSI sequences (colours, cursor moves) and OSC sequences rich writes on a terminal.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


def env_for(token: str | None, **extra: str) -> dict[str, str]:
    """The command's test environment (:func:`tests.command.command_env`), without fsync."""
    return command_env(token, ASSETSYNC_TRANSFER__FSYNC="false", **extra)


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str  # with a terminal: everything (stdout and stderr share it)
    stderr: str  # with a terminal: empty

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def lines(self) -> list[str]:
        """Non-empty lines of all output, terminal control sequences removed."""
        text = _ANSI.sub("", self.output).replace("\r\n", "\n")
        # A terminal redraw ends a line with \r: what is left on screen is after the last one.
        return [line.rsplit("\r", 1)[-1] for line in text.split("\n") if line.strip()]


def run_pipe(
    args: Sequence[str], env: dict[str, str], *, prefix: Sequence[str] = (), cwd: Path | None = None
) -> Result:
    done = subprocess.run(
        [*prefix, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
    )
    return Result(done.returncode, done.stdout, done.stderr)


class PtyRun:
    """The command on a pseudo-terminal: stdin, stdout and stderr all a tty, as at a shell.

    A thread keeps reading the terminal while the command runs (a full terminal buffer would
    block the command's progress display), so a test can wait for a moment to send a signal.
    """

    def __init__(
        self, args: Sequence[str], env: dict[str, str], *, prefix: Sequence[str] = ()
    ) -> None:
        master, slave = pty.openpty()
        try:
            self.proc = subprocess.Popen(
                [*prefix, *args],
                env={**env, "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"},
                stdin=slave,
                stdout=slave,
                stderr=slave,
                close_fds=True,
            )
        finally:
            os.close(slave)
        self._master = master
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            ready, _, _ = select.select([self._master], [], [], 0.1)
            if not ready:
                if self.proc.poll() is not None and not self._pending():
                    return
                continue
            try:
                data = os.read(self._master, 65536)
            except OSError:  # EIO: the last holder of the terminal's other side is gone
                return
            if not data:
                return
            self._chunks.append(data)

    def _pending(self) -> bool:
        ready, _, _ = select.select([self._master], [], [], 0)
        return bool(ready)

    def send_signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = TIMEOUT) -> Result:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=10)
        with contextlib.suppress(OSError):
            os.close(self._master)
        text = b"".join(self._chunks).decode("utf-8", "replace")
        return Result(code, text, "")


def run_pty(args: Sequence[str], env: dict[str, str], *, prefix: Sequence[str] = ()) -> Result:
    return PtyRun(args, env, prefix=prefix).wait()


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unwritable_prefix(folder: Path) -> list[str] | None:
    """Make ``folder`` unwritable for the command; the words to start it with, or ``None`` if
    this machine offers no way (root without ``setpriv``).

    As a user, ``chmod 555`` does it. Root writes anywhere through CAP_DAC_OVERRIDE, so the
    command runs under ``setpriv`` with that capability (and its relatives) dropped from its
    bounding set: a real permission refusal, not a simulated one.
    """
    folder.chmod(0o555)
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)
