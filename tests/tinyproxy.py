"""Debian's tinyproxy as a real forward proxy for tests: started on a free 127.0.0.1 port with
its own config and log in a temporary folder; the log is the witness of what went through."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

TINYPROXY = shutil.which("tinyproxy") or next(
    (p for p in ("/usr/bin/tinyproxy", "/usr/sbin/tinyproxy") if os.access(p, os.X_OK)), None
)
USER, PASSWORD = "alice", "s3cr3t-pr0xy"


@dataclass
class Tinyproxy:
    port: int
    log: Path

    def url(self, credentials: bool = True) -> str:
        auth = f"{USER}:{PASSWORD}@" if credentials else ""
        return f"http://{auth}127.0.0.1:{self.port}"

    def requests(self) -> list[str]:
        """The request lines the proxy received ("GET http://...", "CONNECT host:port ...")."""
        found = re.findall(r"Request \(file descriptor \d+\): (.*)", self.log.read_text())
        return [line.strip() for line in found]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_tinyproxy(folder: Path) -> Iterator[Tinyproxy]:
    """tinyproxy requiring ``USER``/``PASSWORD`` (Basic), until the block ends; skips the test
    when tinyproxy is not installed."""
    if TINYPROXY is None:
        pytest.skip("tinyproxy is not installed (apt-get install tinyproxy; .ci/run does)")
    port = _free_port()
    log = folder / "tinyproxy.log"
    config = folder / "tinyproxy.conf"
    config.write_text(
        f'Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile "{log}"\nLogLevel Info\n'
        f"MaxClients 100\nAllow 127.0.0.1\nDisableViaHeader Yes\nBasicAuth {USER} {PASSWORD}\n"
    )
    proxy = subprocess.Popen(
        [TINYPROXY, "-d", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proxy.poll() is not None:
                    pytest.fail("tinyproxy did not start")
                time.sleep(0.05)
        yield Tinyproxy(port, log)
    finally:
        proxy.terminate()
        proxy.wait(10)
