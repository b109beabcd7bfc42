"""``assetsync emulator`` in its own process, for the benchmarks that must not share its CPU
(or its GIL) with what they measure: start-up info, pid, CPU and peak RSS from ``/proc``, the
control endpoint. Linux only, as the benchmarks are."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["EmulatorProcess", "emulator_process"]


@dataclass
class EmulatorProcess:
    info: dict[str, Any]  # what ``--json`` printed: api_url, token, dataset_version_id, ...
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU of the process so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        return ticks / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def control(self, method: str, path: str) -> Any:
        request = urllib.request.Request(  # noqa: S310 - the emulator on loopback
            f"{self.info['api_url']}/_emulator/{path}",
            method=method,
            headers={"X-Emulator-Secret": self.info["control_secret"]},
        )
        with urllib.request.urlopen(request, timeout=600) as response:  # noqa: S310
            return json.loads(response.read())

    def counters(self) -> dict[str, Any]:
        """The request and byte counters, once every storage response under way has ended."""
        result: dict[str, Any] = self.control("POST", "quiesce")
        return result


@contextmanager
def emulator_process(args: list[str]) -> Iterator[EmulatorProcess]:
    """``assetsync emulator --json`` on 127.0.0.1 with ``args``; stopped (SIGTERM) on exit."""
    command = [sys.executable, "-m", "engine", "emulator", "--json"]
    proc = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", "0", *args],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the emulator did not start")
        yield EmulatorProcess(json.loads(line), proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
