"""Child process of the SIGKILL test: applies batches to a manifest forever.

Usage: python -m tests.manifest.crash_child DEST FIRST_GEN. Batch ``gen`` rewrites the 500 assets
of slot ``gen % SLOTS`` (rows, tags, annotations, shapes) with generation ``gen``, and prints
``applying <gen>`` before and ``committed <gen>`` after each ``apply``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from engine.manifest import AssetUpdate, Manifest
from tests.manifest.helpers import update

SLOTS = 6
BATCH = 500


def batch(gen: int) -> list[AssetUpdate]:
    slot = gen % SLOTS
    return [
        update(f"s{slot}-{k:03d}", gen=gen, path=f"{slot}/{k}-{gen % 2}.jpg") for k in range(BATCH)
    ]


def main() -> None:
    dest, gen = Path(sys.argv[1]), int(sys.argv[2])
    with Manifest.open(dest) as m:
        run = m.begin_run("dv", "http://127.0.0.1", {})
        while True:
            updates = batch(gen)
            print(f"applying {gen}", flush=True)
            m.apply(updates, run)
            print(f"committed {gen}", flush=True)
            gen += 1


if __name__ == "__main__":
    main()
