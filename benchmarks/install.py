"""Install the peer tools from the distribution when they are missing (never skip silently).

Missing tools that cannot be installed (no root, no apt-get, ``--no-install``) are still run
through the suite and reported as MISSING with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterable

from benchmarks.measure import TIME_BIN
from benchmarks.peers import Tool
from engine.emulator.nginx import DEFAULT_NGINX

_APT_TIMEOUT = 900.0


def _apt(args: list[str]) -> bool:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        done = subprocess.run(
            ["apt-get", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_APT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def ensure_installed(
    tools: Iterable[Tool], *, allow: bool, log: Callable[[str], None] = print
) -> None:
    packages = sorted(
        {t.apt_package for t in tools if t.apt_package and t.binary and t.resolved() is None}
    )
    if not os.access(DEFAULT_NGINX, os.X_OK):
        packages.append("nginx")
    if not os.access(TIME_BIN, os.X_OK):
        packages.append("time")  # GNU time: the tools' true peak RSS (see measure.py)
    if not packages:
        return
    if not allow:
        log(f"not installing {packages} (--no-install): those tools are reported as MISSING")
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        log(f"cannot install {packages} (needs root and apt-get): reported as MISSING")
        return
    log(f"installing {' '.join(packages)} with apt-get ...")
    if not _apt(["install", "-y", "-qq", *packages]):
        _apt(["update", "-qq"])
        if not _apt(["install", "-y", "-qq", *packages]):
            log(f"apt-get install {' '.join(packages)} failed: reported as MISSING")
