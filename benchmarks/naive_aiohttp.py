"""The naive baseline: aiohttp + uvloop, N workers, each file read and written whole.

What a competent Python programmer writes in ten minutes: one session, a fixed number of
workers pulling from a list, ``await response.read()`` then a blocking write (a streaming
write in 1 MiB chunks for large files). No retries, no resume, no verification. Usage::

    python benchmarks/naive_aiohttp.py --urls LIST.tsv --dest DIR [--concurrency 32]

LIST.tsv holds one ``<name>\\t<url>`` per line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import aiohttp
import uvloop

_STREAM_ABOVE = 8 << 20


async def _worker(session: aiohttp.ClientSession, queue: list[tuple[str, str]], dest: Path) -> None:
    while queue:
        name, url = queue.pop()
        async with session.get(url) as response:
            response.raise_for_status()
            if (response.content_length or 0) > _STREAM_ABOVE:
                with open(dest / name, "wb") as fh:
                    async for chunk in response.content.iter_chunked(1 << 20):
                        fh.write(chunk)
            else:
                (dest / name).write_bytes(await response.read())


async def _main(urls: Path, dest: Path, concurrency: int) -> None:
    jobs = []
    for line in urls.read_text(encoding="utf-8").splitlines():
        name, url = line.split("\t", 1)
        jobs.append((name, url))
    jobs.reverse()  # pop() from the end keeps the listing order
    dest.mkdir(parents=True, exist_ok=True)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(_worker(session, jobs, dest) for _ in range(concurrency)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", type=Path, required=True)
    parser.add_argument("--dest", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    uvloop.run(_main(args.urls, args.dest, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
