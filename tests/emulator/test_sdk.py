"""The platform's own SDK (picsellia 6.37.0) works against the emulator: proof of fidelity.

The SDK is synchronous (requests), so the emulator runs on a background thread here.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.emulator import Emulator, EmulatorThread

picsellia = pytest.importorskip("picsellia")


@pytest.fixture(params=["s3", "mixed"])
def threaded(request: pytest.FixtureRequest) -> Iterator[Emulator]:
    # The SDK's download joins filenames onto the target folder and races on duplicates, so the
    # hostile (and repeated) names stay out of this test; the engine's own tests use them.
    emulator = Emulator(assets=40, seed=5, signing=request.param, nasty_filenames=False)
    with emulator.in_thread() as emu:
        yield emu


def test_sdk_lists_downloads_and_reads_tags(
    threaded: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    emu = threaded
    caplog.set_level(logging.WARNING)
    client = picsellia.Client(api_token=emu.token, host=emu.api_url)
    assert str(client.id) == emu.organization_id
    version = client.get_dataset_version_by_id(emu.dataset_version_id)
    assert str(version.id) == emu.dataset_version_id
    assets = version.list_assets()
    assert [str(a.id) for a in assets] == list(emu.dataset.asset_ids())

    assets.download(tmp_path)
    by_name: dict[str, set[str]] = defaultdict(set)  # nasty_filenames=False: names are unique
    for asset_id in emu.dataset.asset_ids():
        expected = emu.dataset.expected(asset_id)
        by_name[expected.filename].add(expected.sha256)
    written = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert len(written) == len(by_name)
    for path in written:
        name = path.relative_to(tmp_path).as_posix()
        assert {hashlib.sha256(path.read_bytes()).hexdigest()} == by_name[name]

    for asset in list(assets)[:5]:
        expected = emu.dataset.expected(str(asset.id))
        assert [t.name for t in asset.get_tags()] == expected.tags
        assert [t.name for t in asset.get_data_tags()] == expected.data_tags
        assert str(asset.data_id) == expected.data_id
        assert (asset.width, asset.height) == (expected.width, expected.height)
        assert len(asset.list_annotations()) == len(expected.annotations)
        assert asset.reset_url().startswith(emu.api_url)


def test_sdk_filters_and_xget(threaded: Emulator) -> None:
    emu = threaded
    client = picsellia.Client(api_token=emu.token, host=emu.api_url)
    version = client.get_dataset_version_by_id(emu.dataset_version_id)
    ids = list(emu.dataset.asset_ids())
    train = [a for a in ids if "train" in emu.dataset.expected(a).tags]
    assert [str(a.id) for a in version.list_assets(tags=["train"])] == train
    # ids= goes through the XGET method, sent by requests over a real socket.
    picked = version.list_assets(ids=ids[3:6])
    assert [str(a.id) for a in picked] == ids[3:6]
    assert emu.counters.requests["assets_xget"] == 1
    paged = version.list_assets(limit=7, offset=2, order_by=["created_at"])
    assert [str(a.id) for a in paged] == ids[2:9]
    assert {label.name for label in version.list_labels()} >= {"cat", "dog"}


def test_sdk_refreshes_an_expired_url_on_403(tmp_path: Path) -> None:
    with EmulatorThread(assets=3, seed=2, nasty_filenames=False, empty_share=0.0) as emu:
        client = picsellia.Client(api_token=emu.token, host=emu.api_url)
        asset = client.get_dataset_version_by_id(emu.dataset_version_id).list_assets()[0]
        emu.advance_clock(7200)  # the listed URL is now expired: S3 answers 403
        asset.download(tmp_path)
        expected = emu.dataset.expected(str(asset.id))
        content = (tmp_path / expected.filename).read_bytes()
        assert hashlib.sha256(content).hexdigest() == expected.sha256
        assert emu.counters.requests["presign"] == 1
