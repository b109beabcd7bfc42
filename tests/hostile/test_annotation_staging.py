"""The version-wide annotation staging against an API that misbehaves on annotations.

A malformed annotation whose asset cannot be told makes every asset of its request unknown. The
version-wide staging asks 1000 annotations a request from the whole version, so it cannot say
which assets that concerns: it gives up, and each page fetches its own annotations, which
confines the damage to the page that meets it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web

from engine.manifest import Manifest
from tests.hostile.api_proxy import HostileApi, Upstream, json_response
from tests.hostile.test_api_bounds import ASSETS, PAGE, assert_sound, hostile, mirror, with_twist

pytestmark = pytest.mark.slow

__all__ = ["hostile"]  # the fixture, used through with_twist

VICTIM_POSITION = 15  # listing position of the asset whose annotation loses its asset_id


async def unattributed_annotation(request: web.Request, api: Upstream) -> web.StreamResponse | None:
    if request.path.endswith("/annotations/ids") and "asset_ids" not in request.query:
        api.notes.append("version-wide ids")
        return None
    if request.method != "XGET" or not request.path.endswith("/annotations"):
        return None
    victim = list(api.emu.dataset.asset_ids())[VICTIM_POSITION]
    answer = await api.json(request)
    for annotation in answer:
        if annotation["asset_id"] == victim:
            del annotation["asset_id"]
            api.notes.append(len(answer))  # how many annotations that request concerned
            break
    return json_response(answer)


@with_twist(unattributed_annotation)
def test_an_annotation_without_its_asset_fails_its_page_only(
    hostile: HostileApi, tmp_path: Path
) -> None:
    dataset = hostile.emu.dataset
    live = list(dataset.asset_ids())
    victim = live[VICTIM_POSITION]
    assert dataset.expected(victim).annotations, "pick a seed whose victim has annotations"
    start = VICTIM_POSITION // PAGE * PAGE
    page = set(live[start : start + PAGE])
    # A first mirror asks each page's annotations; a rerun asks the version's once, meets the
    # bad annotation, gives up and falls back to the pages. Either way only the victim's page
    # (whose request held the bad annotation) fails.
    for rerun in (False, True):
        hostile.notes.clear()
        run = mirror(hostile, tmp_path / "d")
        summary = assert_sound(run, hostile, tmp_path / "d", 1)
        assert summary["outcome"] == "partial"
        if rerun:
            assert hostile.notes[0] == "version-wide ids"
            assert hostile.notes.count("version-wide ids") == 1
        else:
            assert summary["downloaded"] == ASSETS  # every file is mirrored
            assert "version-wide ids" not in hostile.notes
        failed = {f["asset_id"] for f in summary["failures"]}
        assert failed == page
    with Manifest.open(tmp_path / "d", create=False, read_only=True) as manifest:
        for asset_id in live:
            stored = manifest.annotations(asset_id)
            if asset_id in failed:
                assert stored is None  # never read: not recorded as "none"
            else:
                assert stored == dataset.expected(asset_id).annotations
