"""A transfer in a child process, for the kill-and-resume test.

``python -m tests.transfer.child_fetch '<json>'`` downloads one object and prints ``bytes <n>``
after each chunk, so the parent knows when to send SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path, PurePosixPath

import aiohttp

from engine.transfer import ObjectRef, ProgressEvent, Transferer
from tests.transfer.conftest import BODY_PATHS, fast_options


async def main(args: dict[str, str]) -> None:
    def on_progress(event: ProgressEvent) -> None:
        if event.kind == "bytes":
            print(f"bytes {event.done}", flush=True)

    async with aiohttp.ClientSession() as session:

        async def refresh() -> str:
            async with session.get(
                f"{args['api_url']}/api/data/{args['data_id']}/presigned-url",
                headers={"Authorization": f"Bearer {args['token']}"},
            ) as response:
                url: str = (await response.json())["presigned_url"]
                return url

        options = fast_options(thread_body_min=BODY_PATHS[args["body_path"]])
        t = Transferer(session, options, Path(args["state_dir"]), on_progress=on_progress)
        await t.fetch(
            ObjectRef(args["asset_id"], args["data_id"]),
            None,
            refresh,
            Path(args["dest"]),
            PurePosixPath(args["rel"]),
        )
    print("finished", flush=True)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
