"""The pure modules load no I/O library: importing one in a fresh interpreter leaves SQLite, the
HTTP clients, asyncio, sockets and anyio unloaded (DESIGN.md: they are the code to test
exhaustively, and a planner that pulls in SQLite to key a path is not pure)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PURE = [
    "engine.layout",
    "engine.signed_urls",
    "engine.plan",
    "engine.digests",
    "engine.state_folder",
    "engine.backoff",
    "engine.host",
    "engine.errors",
    "engine.prefetch.split",
    "engine.prefetch.window",
]

# What no pure module may load, directly or through anything it imports.
IO = [
    "sqlite3",
    "_sqlite3",
    "aiohttp",
    "httptools",
    "asyncio",
    "socket",
    "_socket",
    "ssl",
    "selectors",
    "anyio",
    "uvloop",
    "engine.manifest",
    "engine.transfer",
    "engine.platform",
]

_PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(set(sys.argv[2:]) & set(sys.modules))))
"""


@pytest.mark.parametrize("module", PURE)
def test_importing_a_pure_module_loads_no_io(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, module, *IO],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [], f"{module} loads I/O modules"


def test_the_probe_sees_what_a_module_loads() -> None:
    """The check can fail: the manifest package loads SQLite."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, "engine.manifest", *IO],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "sqlite3" in json.loads(done.stdout)
