"""How fast is the emulator's platform API for what a mirror asks of it?

``python benchmarks/emulator_api_bench.py [--assets N] [--passes P] [--json]`` starts
``assetsync emulator`` as its own process on loopback (the dataset options of
``benchmarks/mirror_bench.py``: small files, ordinary names), then, with one aiohttp client,
times what ``assetsync mirror`` requests of the API for a whole version, phase by phase:

``listing``
    the cursor listing of every asset, 1000 a page (signed URLs included);
``annotations``
    per page of 1000 assets: ``annotations/ids`` for 50 assets a request (as the engine and the
    SDK ask), then the bulk annotation ``XGET`` in chunks of 1000 ids;
``tags``
    the version's tags and the datalake's data tags, then for every tag the ids listing filtered
    with ``q`` (``tags.name = "…"`` / ``data.tags.name = "…"``), every page;
``xget``
    the ``XGET`` listing by ids for every page (how the engine refreshes URLs in batches).

Each phase prints requests, seconds, requests/s and the CPU seconds the emulator process spent on
it (``/proc/<pid>/stat``). The whole sequence runs ``--passes`` times against the same process:
pass 1 is what a first mirror meets, the next passes what a no-change rerun meets. Requests go one
at a time (the emulator serves one at a time too: it is one Python thread), every loop is bounded
by the page count, and the answers are checked (every asset listed once, counts as announced) so a
broken run is not counted. The emulator's peak RSS is printed at the end (``VmHWM``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks.emulator_proc import EmulatorProcess, emulator_process  # noqa: E402

PAGE = 1000
ANNOTATION_IDS_PER_REQUEST = 50


def _dataset_args(opts: argparse.Namespace) -> list[str]:
    return [
        "--assets",
        str(opts.assets),
        "--seed",
        str(opts.seed),
        "--min-size",
        "1024",
        "--max-size",
        "16384",
        "--large-share",
        "0",
        "--empty-share",
        "0",
        "--no-nasty-filenames",
    ]


@dataclass
class Phase:
    name: str
    requests: int = 0
    seconds: float = 0.0
    cpu: float = 0.0


@dataclass
class Pass:
    phases: list[Phase] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.phases)

    @property
    def cpu(self) -> float:
        return sum(p.cpu for p in self.phases)

    @property
    def requests(self) -> int:
        return sum(p.requests for p in self.phases)


class Client:
    def __init__(self, session: aiohttp.ClientSession, info: dict[str, Any]) -> None:
        self.session = session
        self.base = info["api_url"]
        self.dv = f"/api/dataset/version/{info['dataset_version_id']}"
        self.requests = 0

    async def call(self, method: str, path: str, params: Any = None, body: Any = None) -> Any:
        self.requests += 1
        async with self.session.request(
            method, self.base + path, params=params, json=body
        ) as response:
            raw = await response.read()
            if response.status != 200:
                raise RuntimeError(f"{method} {path}: {response.status} {raw[:200]!r}")
        return json.loads(raw)


async def list_assets(client: Client, max_pages: int) -> list[list[str]]:
    pages: list[list[str]] = []
    params: dict[str, str] = {"limit": str(PAGE)}
    for _ in range(max_pages):
        page = await client.call("GET", f"{client.dv}/assets", params)
        pages.append([item["id"] for item in page["items"]])
        if not page["next_cursor"]:
            return pages
        params = {"limit": str(PAGE), "cursor": page["next_cursor"]}
    raise RuntimeError("the listing did not end within the expected number of pages")


async def fetch_annotations(client: Client, pages: list[list[str]]) -> int:
    total = 0
    for ids in pages:
        annotation_ids: list[str] = []
        for start in range(0, len(ids), ANNOTATION_IDS_PER_REQUEST):
            chunk = ids[start : start + ANNOTATION_IDS_PER_REQUEST]
            params = [("asset_ids", a) for a in chunk]
            annotation_ids += await client.call("GET", f"{client.dv}/annotations/ids", params)
        for start in range(0, len(annotation_ids), PAGE):
            chunk = annotation_ids[start : start + PAGE]
            found = await client.call("XGET", f"{client.dv}/annotations", body=chunk)
            if len(found) != len(chunk):
                raise RuntimeError("the bulk XGET lost annotations")
            total += len(found)
    return total


async def list_tags(client: Client, lake: str, max_pages: int) -> int:
    members = 0
    asset_tags = (await client.call("GET", f"{client.dv}/tags"))["items"]
    data_tags = (await client.call("GET", f"/api/datalake/{lake}/tags", {"limit": "1000"}))["items"]
    filters = [f"tags.name = {json.dumps(t['name'])}" for t in asset_tags]
    filters += [f"data.tags.name = {json.dumps(t['name'])}" for t in data_tags]
    for q in filters:
        params: dict[str, str] = {"limit": str(PAGE), "q": q}
        seen = 0
        for _ in range(max_pages):
            page = await client.call("GET", f"{client.dv}/assets/ids/paginated", params)
            seen += len(page["items"])
            if not page["next_cursor"]:
                break
            params = {"limit": str(PAGE), "q": q, "cursor": page["next_cursor"]}
        else:
            raise RuntimeError(f"the listing of {q} did not end")
        if seen != page["count"]:
            raise RuntimeError(f"{q}: {seen} ids listed, count says {page['count']}")
        members += seen
    return members


async def xget_assets(client: Client, pages: list[list[str]]) -> int:
    found = 0
    for ids in pages:
        answer = await client.call("XGET", f"{client.dv}/assets", body={"ids": ids})
        if answer["count"] != len(ids):
            raise RuntimeError("XGET by ids lost assets")
        found += answer["count"]
    return found


async def one_pass(client: Client, emu: EmulatorProcess, assets: int) -> Pass:
    result = Pass()
    max_pages = assets // PAGE + 2
    pages: list[list[str]] = []

    async def timed(name: str, run: Any) -> Any:
        before_cpu, before_requests = emu.cpu_seconds(), client.requests
        start = time.perf_counter()
        value = await run()
        phase = Phase(name, client.requests - before_requests, time.perf_counter() - start)
        phase.cpu = emu.cpu_seconds() - before_cpu
        result.phases.append(phase)
        return value

    pages = await timed("listing", lambda: list_assets(client, max_pages))
    listed = [a for page in pages for a in page]
    if len(listed) != assets or len(set(listed)) != assets:
        raise RuntimeError(f"listed {len(listed)} ids ({len(set(listed))} distinct), not {assets}")
    await timed("annotations", lambda: fetch_annotations(client, pages))
    await timed("tags", lambda: list_tags(client, emu.info["datalake_id"], max_pages))
    await timed("xget", lambda: xget_assets(client, pages))
    return result


async def run(opts: argparse.Namespace) -> tuple[list[Pass], float]:
    with emulator_process(_dataset_args(opts)) as emu:
        info, pid = emu.info, emu.pid
        headers = {"Authorization": f"Bearer {info['token']}"}
        timeout = aiohttp.ClientTimeout(total=600)
        with profiler(pid, opts.profile):
            async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
                client = Client(session, info)
                await client.call("GET", "/api/home/ping")  # the connection is open
                passes = [await one_pass(client, emu, opts.assets) for _ in range(opts.passes)]
        return passes, emu.peak_rss_mb()


@contextmanager
def profiler(pid: int, out: str | None) -> Iterator[None]:
    """``py-spy record`` on the emulator process while the passes run (``--profile OUT``)."""
    if out is None:
        yield
        return
    spy = Path(sys.executable).with_name("py-spy")
    command = [
        str(spy),
        "record",
        "-p",
        str(pid),
        "-o",
        out,
        "-f",
        "raw",
        "-r",
        "250",
        "--nonblocking",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the first request
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        proc.wait(timeout=60)


def print_report(passes: list[Pass], peak: float, opts: argparse.Namespace) -> None:
    print(
        f"Emulator API benchmark: {opts.assets:,} assets (seed {opts.seed}), one client on "
        f"loopback, one request at a time; emulator CPU from /proc"
    )
    print(
        f"{'pass':<5} {'phase':<12} {'requests':>9} {'seconds':>9} {'req/s':>9} {'emu CPU s':>10}"
    )
    for number, one in enumerate(passes, 1):
        for phase in [*one.phases, Phase("total", one.requests, one.seconds, one.cpu)]:
            rate = phase.requests / phase.seconds if phase.seconds else float("inf")
            print(
                f"{number:<5} {phase.name:<12} {phase.requests:>9,} {phase.seconds:>9.2f} "
                f"{rate:>9,.0f} {phase.cpu:>10.2f}"
            )
    print(f"emulator peak RSS: {peak:.0f} MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--assets", type=int, default=20_000, help="assets in the version")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--passes", type=int, default=2, help="times the whole sequence runs")
    parser.add_argument("--json", action="store_true", help="also print one JSON object")
    parser.add_argument("--profile", metavar="OUT", help="py-spy raw profile of the emulator")
    opts = parser.parse_args()
    if opts.assets < 1 or not 1 <= opts.passes <= 10:
        parser.error("--assets must be >= 1 and --passes 1..10")
    passes, peak = asyncio.run(run(opts))
    print_report(passes, peak, opts)
    if opts.json:
        print(
            json.dumps(
                {
                    "assets": opts.assets,
                    "peak_rss_mb": peak,
                    "passes": [[p.__dict__ for p in one.phases] for one in passes],
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
