"""The version's annotations fetched once per run: requests per 1000 annotations, exact content.

A run asks the version's annotation ids in one request (no asset filter) and their bodies 1000 at
a time, instead of asking ids 50 assets at a time per listing page. These tests count the
emulator's requests, and check that what the manifest holds after each run is exactly what the
version holds, through additions, removals and in-place changes of annotations, and through the
page path that a filtered listing or a too-large id list falls back to.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

from engine.emulator import Emulator
from engine.manifest import Manifest
from engine.mirroring import mirror
from tests.mirror.helpers import assert_mirror_matches, settings_for

ASSETS = 2100  # three listing pages of 1000


def _exported_annotations(dest: Path) -> dict[str, Any]:
    buffer = io.StringIO()
    with Manifest.open(dest, create=False, read_only=True) as manifest:
        manifest.export(buffer, "jsonl")
    rows = [json.loads(line) for line in buffer.getvalue().splitlines()]
    return {row["asset_id"]: row["annotations"] for row in rows}


def _assert_annotations_exact(emu: Emulator, dest: Path) -> None:
    exported = _exported_annotations(dest)
    live = list(emu.dataset.asset_ids())
    assert set(exported) == set(live)
    for asset_id in live:
        # Exactly what the API gives, in its order (newest first).
        assert exported[asset_id] == emu.dataset.expected(asset_id).annotations, asset_id


def _annotation_count(emu: Emulator) -> int:
    return sum(len(emu.dataset.expected(a).annotations) for a in emu.dataset.asset_ids())


async def test_rerun_requests_grow_with_assets_over_1000_and_annotations_stay_exact(
    tmp_path: Path,
) -> None:
    dest = tmp_path / "dest"
    async with Emulator(assets=ASSETS, seed=21, large_share=0.0, max_size=4096) as emu:
        ids = list(emu.dataset.asset_ids())
        annotations = _annotation_count(emu)
        assert annotations > 1000  # more than one bulk chunk

        # 1. A first mirror (an empty manifest) asks each page's annotations, 50 assets a
        # request, and never the whole version's: its downloads must not wait for them.
        first = await mirror(settings_for(emu, dest))
        assert first.outcome == "ok", first
        # Pages of 1000, 1000 and 100 assets: 20 + 20 + 2 requests.
        assert emu.counters.requests["annotation_ids"] == math.ceil(ASSETS / 50)
        assert_mirror_matches(emu, dest)
        _assert_annotations_exact(emu, dest)

        # 1b. A rerun whose id list is larger than api_max_body (64 KiB: ~1,700 UUIDs) takes
        # the page path (pages of 50, so that a listing page fits in it).
        emu.counters.reset()
        capped = await mirror(settings_for(emu, dest, api_max_body=64 * 1024, page_size=50))
        assert capped.outcome == "ok", capped
        assert capped.downloaded == 0
        # The version-wide request (refused at the cap), then 50 assets a request per page.
        assert emu.counters.requests["annotation_ids"] == 1 + math.ceil(ASSETS / 50)
        _assert_annotations_exact(emu, dest)

        # 2. The no-change rerun: one id request, a bulk request per 1000 annotations.
        emu.counters.reset()
        again = await mirror(settings_for(emu, dest))
        assert again.outcome == "ok", again
        assert (again.downloaded, again.skipped, again.annotation_changes) == (0, ASSETS, 0)
        requests = emu.counters.requests
        pages = math.ceil(ASSETS / 1000)
        assert requests["annotation_ids"] == 1
        assert requests["annotations_bulk"] == math.ceil(annotations / 1000)
        tag_listings = len(emu.dataset.asset_tag_names()) + len(emu.dataset.data_tag_names())
        assert requests["asset_ids"] <= tag_listings * (pages + 1)
        # Everything else is a constant: ping, version, tags lists, one data lookup...
        others = emu.counters.api_requests - requests["asset_ids"]
        assert others <= pages + math.ceil(annotations / 1000) + 8, dict(requests)
        assert emu.counters.storage_requests == 0

        # 3. Annotations added, removed, changed in place (same id), replaced, emptied.
        grow, shrink, edit, regen, empty = ids[5], ids[1005], ids[2050], ids[7], ids[1500]
        expected = emu.dataset.expected
        emu.dataset.set_annotations(
            grow, [*expected(grow).annotations, {"classifications": [{"label": "new"}]}]
        )
        while not expected(shrink).annotations:
            shrink = ids[ids.index(shrink) + 1]
        emu.dataset.set_annotations(shrink, expected(shrink).annotations[1:])
        while not expected(edit).annotations:
            edit = ids[ids.index(edit) + 1]
        edited = expected(edit).annotations
        edited[0] = {**edited[0], "status": "REFUSED", "attributes": {"edited": 1.5}}
        emu.dataset.set_annotations(edit, edited)
        emu.dataset.mutate_annotations(regen)
        emu.dataset.set_annotations(empty, [])
        emu.counters.reset()
        third = await mirror(settings_for(emu, dest))
        assert third.outcome == "ok", third
        assert third.downloaded == 0
        changed = {grow, shrink, edit, regen, empty}
        assert len(changed) == 5
        # `empty` may have had none already: then it is no change.
        assert third.annotation_changes in (4, 5)
        assert emu.counters.requests["annotation_ids"] == 1
        _assert_annotations_exact(emu, dest)


async def test_a_filtered_listing_asks_its_pages_annotations_only(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    async with Emulator(assets=300, seed=23, large_share=0.0, max_size=4096) as emu:
        tag = emu.dataset.asset_tag_names()[0]
        tagged = [a for a in emu.dataset.asset_ids() if tag in emu.dataset.expected(a).tags]
        assert 0 < len(tagged) < 300
        summary = await mirror(settings_for(emu, dest, tags=(tag,)))
        assert summary.outcome == "ok", summary
        assert summary.downloaded == len(tagged)
        # The page path: the listed assets' ids, 50 a request, never the whole version's.
        assert emu.counters.requests["annotation_ids"] == math.ceil(len(tagged) / 50)
        exported = _exported_annotations(dest)
        assert set(exported) == set(tagged)
        for asset_id in tagged:
            assert exported[asset_id] == emu.dataset.expected(asset_id).annotations
