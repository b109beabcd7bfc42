"""How fast is the emulator's built-in storage, next to nginx serving the same bytes?

``python benchmarks/storage_bench.py [--quick]`` starts, on loopback, each emulator variant as its
own process (``assetsync emulator``, as a user runs it) and nginx with secure_link on the same
bytes, then drives each with the same bounded load loop (an aiohttp client, N requests in flight,
a fixed number of requests) and prints requests/s for small objects and MB/s for one large
object, with the ratio to nginx measured in the same run. Every body's length is checked.

Variants: generated content (uvloop, the CLI default), and files on disk (``--from-dir``) on
asyncio, where the emulator uses ``os.sendfile``, and on uvloop, which has no sendfile. The client
is Python too, so on a small machine it can be what limits the small-object rows; the ratio is
what to read.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks.emulator_proc import emulator_process  # noqa: E402
from engine.emulator import Emulator  # noqa: E402
from engine.emulator.nginx import NginxServer  # noqa: E402

MIB = 1024 * 1024


@dataclass
class Target:
    name: str
    small: list[str]  # URLs of the small objects
    large: str  # URL of the large object


@dataclass
class Result:
    requests_per_s: float
    mb_per_s: float


def _dataset_args(kind: str, opts: argparse.Namespace) -> dict[str, Any]:
    """Emulator keywords of the small or the large dataset (the same in every process)."""
    if kind == "small":
        return {
            "assets": opts.small_count,
            "min_size": opts.small_size,
            "max_size": opts.small_size,
            "empty_share": 0.0,
            "large_share": 0.0,
            "nasty_filenames": False,
            "seed": 1,
        }
    return {
        "assets": 1,
        "large_share": 1.0,
        "large_size": opts.large_mib * MIB,
        "empty_share": 0.0,
        "nasty_filenames": False,
        "seed": 2,
    }


def _cli_args(args: dict[str, Any]) -> list[str]:
    out = []
    for key, value in args.items():
        if key == "nasty_filenames":
            out.append("--no-nasty-filenames")
        else:
            out += [f"--{key.replace('_', '-')}", str(value)]
    return out


async def listed_urls(info: dict[str, Any]) -> list[str]:
    headers = {"Authorization": f"Bearer {info['token']}"}
    url = f"{info['api_url']}/api/dataset/version/{info['dataset_version_id']}/assets"
    urls: list[str] = []
    params: dict[str, str] = {"limit": "1000"}
    async with aiohttp.ClientSession(headers=headers) as session:
        while True:
            async with session.get(url, params=params) as response:
                page = await response.json()
            urls += [item["data"]["presigned_url"] for item in page["items"]]
            if not page["next_cursor"]:
                return urls
            params = {"limit": "1000", "cursor": page["next_cursor"]}


async def load(urls: list[str], requests: int, concurrency: int) -> tuple[float, int]:
    """Fetch ``requests`` URLs (round-robin) with ``concurrency`` in flight: (seconds, bytes)."""
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=600)
    next_index = 0
    total = 0

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal next_index, total
            while next_index < requests:
                url = urls[next_index % len(urls)]
                next_index += 1
                async with session.get(url) as response:
                    if response.status != 200:
                        raise RuntimeError(f"status {response.status}")
                    size = 0
                    async for chunk in response.content.iter_chunked(1 << 20):
                        size += len(chunk)
                    if size != int(response.headers["Content-Length"]):
                        raise RuntimeError("short body")
                    total += size

        # Warm-up: connections open, digests cached, page cache filled.
        for url in urls[: min(len(urls), concurrency)]:
            async with session.get(url) as response:
                await response.read()
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start, total


async def measure(target: Target, opts: argparse.Namespace) -> Result:
    seconds, _ = await load(target.small, opts.requests, opts.concurrency)
    large_seconds, large_bytes = await load([target.large], opts.large_repeats, 2)
    return Result(opts.requests / seconds, large_bytes / large_seconds / 1e6)


def print_table(results: dict[str, Result], opts: argparse.Namespace) -> None:
    base = results["nginx (secure_link, sendfile)"]
    print()
    print(
        f"Storage benchmark: loopback, aiohttp client, {opts.concurrency} in flight, "
        f"{opts.requests} x {opts.small_size // 1024} KiB objects; "
        f"{opts.large_repeats} x {opts.large_mib} MiB object, 2 in flight"
    )
    print(f"{'server':<40} {'small req/s':>12} {'vs nginx':>9} {'large MB/s':>11} {'vs nginx':>9}")
    for name, result in results.items():
        print(
            f"{name:<40} {result.requests_per_s:>12,.0f} "
            f"{result.requests_per_s / base.requests_per_s:>9.2f} "
            f"{result.mb_per_s:>11,.0f} {result.mb_per_s / base.mb_per_s:>9.2f}"
        )


async def run(opts: argparse.Namespace, work: Path) -> dict[str, Result]:
    small_args, large_args = _dataset_args("small", opts), _dataset_args("large", opts)
    small_root, large_root = work / "small", work / "large"
    small_root.mkdir()
    large_root.mkdir()
    # The same seeds in-process give the same object names and bytes the processes serve.
    small_twin, large_twin = Emulator(**small_args), Emulator(**large_args)
    small_twin.write_objects(small_root)
    large_twin.write_objects(large_root)
    small_names = [
        small_twin.dataset.expected(a).object_name for a in small_twin.dataset.asset_ids()
    ]
    large_name = large_twin.dataset.expected(next(large_twin.dataset.asset_ids())).object_name

    results: dict[str, Result] = {}
    with NginxServer(work, worker_processes=1) as nginx:
        target = Target(
            "nginx",
            [nginx.signed_url(f"small/{name}") for name in small_names],
            nginx.signed_url(f"large/{large_name}"),
        )
        results["nginx (secure_link, sendfile)"] = await measure(target, opts)

    variants = [
        ("emulator, generated (uvloop)", "uvloop", None),
        ("emulator, files (asyncio, os.sendfile)", "asyncio", True),
        ("emulator, files (uvloop, reads)", "uvloop", True),
    ]
    for label, loop, from_dir in variants:
        if from_dir:
            small_cli = ["--from-dir", str(small_root), "--no-nasty-filenames"]
            large_cli = ["--from-dir", str(large_root)]
        else:
            small_cli, large_cli = _cli_args(small_args), _cli_args(large_args)
        with (
            emulator_process([*small_cli, "--loop", loop]) as small_emu,
            emulator_process([*large_cli, "--loop", loop]) as large_emu,
        ):
            small_urls = await listed_urls(small_emu.info)
            large_urls = await listed_urls(large_emu.info)
            results[label] = await measure(Target(label, small_urls, large_urls[0]), opts)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, smaller object")
    parser.add_argument("--small-count", type=int, default=200, help="distinct small objects")
    parser.add_argument("--small-size", type=int, default=16 * 1024, help="bytes per object")
    parser.add_argument("--requests", type=int, default=6000, help="small requests per server")
    parser.add_argument("--concurrency", type=int, default=16, help="small requests in flight")
    parser.add_argument("--large-mib", type=int, default=256, help="size of the large object")
    parser.add_argument("--large-repeats", type=int, default=6, help="large downloads")
    opts = parser.parse_args()
    if opts.quick:
        opts.requests, opts.large_mib, opts.large_repeats = 1500, 64, 4
    work = Path(tempfile.mkdtemp(prefix="assetsync-storage-bench-"))
    try:
        results = asyncio.run(run(opts, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(results, opts)


if __name__ == "__main__":
    main()
