"""The tools the suite runs, in report order: assetsync first, then its peers."""

from __future__ import annotations

from benchmarks.peers.aria2c import Aria2c
from benchmarks.peers.assetsync import Assetsync
from benchmarks.peers.base import Invocation, Platform, RunContext, Tool, UrlEntry
from benchmarks.peers.curl import Curl
from benchmarks.peers.local_copy import LocalCopy
from benchmarks.peers.python_tools import NaiveAiohttp, PlatformSdk
from benchmarks.peers.rclone import Rclone
from benchmarks.peers.wget2 import Wget2

__all__ = [
    "TOOL_NAMES",
    "Invocation",
    "Platform",
    "RunContext",
    "Tool",
    "UrlEntry",
    "make_tools",
]

TOOL_NAMES = [
    "assetsync",
    "aria2c",
    "rclone",
    "wget2",
    "curl",
    "picsellia-sdk",
    "naive-aiohttp",
    "cp",
]


def make_tools(
    names: list[str], *, assetsync_args: list[str] | None = None, sdk_workers: int | None = None
) -> list[Tool]:
    factories = {
        "assetsync": lambda: Assetsync(assetsync_args),
        "aria2c": Aria2c,
        "rclone": Rclone,
        "wget2": Wget2,
        "curl": Curl,
        "picsellia-sdk": lambda: PlatformSdk(sdk_workers),
        "naive-aiohttp": NaiveAiohttp,
        "cp": LocalCopy,
    }
    unknown = [n for n in names if n not in factories]
    if unknown:
        raise ValueError(f"unknown tools {unknown}; choose from {TOOL_NAMES}")
    return [factories[n]() for n in names]
