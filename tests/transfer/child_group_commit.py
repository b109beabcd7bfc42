"""Fetch, barrier, record: a child process for the group-commit kill test.

``python -m tests.transfer.child_group_commit <json file>`` fetches the listed objects with
group commit (fsync on), ``workers`` at a time. Every ``batch`` placed files (and at the end) it
calls ``Transferer.sync_placed()`` and then records the files that barrier covered, as a
manifest would: one line ``<rel> <sha256> <size>`` each, appended and fsynced. It prints an event
line at each step, so the parent can kill it at any of them.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path, PurePosixPath
from typing import Any

from engine.transfer import ObjectRef, Transferer, TransferResult
from engine.transfer.http1 import StorageHttp
from tests.transfer.conftest import fast_options


def event(text: str) -> None:
    print(text, flush=True)


async def main(args: dict[str, Any]) -> None:
    options = fast_options(fsync=True, barrier=args["barrier"])
    http = StorageHttp(limit=args["workers"], limit_per_host=args["workers"])
    record = os.open(args["record"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    todo = list(reversed(args["objects"]))
    placed: list[TransferResult] = []
    barrier_due = asyncio.Event()
    finished = False

    async def worker(t: Transferer) -> None:
        while todo:
            asset_id, data_id, url, rel = todo.pop()

            async def refresh(url: str = url) -> str:
                return url

            result = await t.fetch(
                ObjectRef(asset_id, data_id), url, refresh, Path(args["dest"]), PurePosixPath(rel)
            )
            assert result.awaits_barrier
            placed.append(result)
            event(f"fetched {rel}")
            if len(placed) >= args["batch"]:
                barrier_due.set()

    async def committer(t: Transferer) -> None:
        while True:
            await barrier_due.wait()
            barrier_due.clear()
            covered = list(placed)  # every file placed before the barrier is called
            placed.clear()
            event("barrier")
            await t.sync_placed()
            event("durable")
            # The stand-in for committing the batch's manifest rows.
            lines = "".join(f"{r.rel_path} {r.sha256} {r.size}\n" for r in covered)
            os.write(record, lines.encode())
            os.fsync(record)
            event(f"recorded {len(covered)}")
            if finished and not placed:
                return

    t = Transferer(http, options, Path(args["state_dir"]), group_commit=True)
    try:
        commit = asyncio.create_task(committer(t))
        await asyncio.gather(*(worker(t) for _ in range(args["workers"])))
        finished = True
        barrier_due.set()
        await commit
    finally:
        t.close()
        http.close()
        os.close(record)
    event("finished")


if __name__ == "__main__":
    asyncio.run(main(json.loads(Path(sys.argv[1]).read_text())))
