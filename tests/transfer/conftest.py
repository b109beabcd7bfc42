"""Helpers for transfer tests: an emulator, a session, fast options, URL providers, checks."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import aiohttp
import pytest

from engine.emulator import Emulator
from engine.emulator.dataset import ExpectedAsset
from engine.settings import RetryPolicy, Timeouts, TransferOptions
from engine.transfer import ObjectRef, ProgressEvent, Transferer, TransferResult
from engine.transfer.urls import UrlProvider

KiB = 1024
MiB = 1024 * KiB

LARGE = "large"  # segmented, several workers (3 MiB + 12345: 13 segments)
MEDIUM = "medium"  # several segments, one stream
SMALL = "small"  # one chunk: read whole, no partial file of its own


# The two ways a body larger than one chunk reaches the disk (engine.transfer.body): read by
# the event loop, or by a pump thread straight from its socket. A module that uses the
# ``body_path`` fixture runs each of its tests both ways (fast_options reads the choice).
BODY_PATHS = {"loop": 1 << 40, "pump": 0}
_body_path = ["loop"]


@pytest.fixture(params=sorted(BODY_PATHS))
def body_path(request: pytest.FixtureRequest) -> Iterator[str]:
    _body_path[0] = request.param
    yield request.param
    _body_path[0] = "loop"


def current_body_path() -> str:
    return _body_path[0]


def fast_options(**overrides: Any) -> TransferOptions:
    """Small chunks and segments so that small objects exercise every path; quick retries."""
    values: dict[str, Any] = {
        "chunk_size": 64 * KiB,
        "segment_threshold": 1 * MiB,
        "segment_size": 256 * KiB,
        "segments": 4,
        "url_margin": 30.0,
        "unknown_url_lifetime": 60.0,
        "fsync": False,
        "timeouts": Timeouts(connect=5.0, read=10.0, stall=10.0),
        "retry": RetryPolicy(attempts=6, base_delay=0.01, max_delay=0.05, max_retry_after=0.2),
        "thread_body_min": BODY_PATHS[_body_path[0]],
    }
    values.update(overrides)
    return TransferOptions(**values)


@dataclass
class Harness:
    emu: Emulator
    session: aiohttp.ClientSession
    root: Path
    events: list[ProgressEvent] = field(default_factory=list)
    presigns: int = 0

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def dest(self) -> Path:
        return self.root / "dest"

    def transferer(
        self,
        options: TransferOptions | None = None,
        *,
        clock: Callable[[], float] | None = None,
        on_progress: Callable[[ProgressEvent], None] | None = None,
    ) -> Transferer:
        def record(event: ProgressEvent) -> None:
            self.events.append(event)
            if on_progress is not None:
                on_progress(event)

        return Transferer(
            self.session,
            options or fast_options(),
            self.state_dir,
            on_progress=record,
            clock=clock or self.emu.now,
        )

    async def presign(self, data_id: str) -> str:
        """A fresh URL from the platform API, as the engine's refresh does it."""
        self.presigns += 1
        async with self.session.get(
            f"{self.emu.api_url}/api/data/{data_id}/presigned-url",
            headers={"Authorization": f"Bearer {self.emu.token}"},
        ) as response:
            assert response.status == 200, await response.text()
            url: str = (await response.json())["presigned_url"]
            return url

    def refresher(self, data_id: str) -> UrlProvider:
        async def refresh() -> str:
            return await self.presign(data_id)

        return refresh

    def assets(self, predicate: Callable[[ExpectedAsset], bool]) -> list[ExpectedAsset]:
        return [
            expected
            for asset_id in self.emu.dataset.asset_ids()
            if predicate(expected := self.emu.dataset.expected(asset_id))
        ]

    def one(self, predicate: Callable[[ExpectedAsset], bool]) -> ExpectedAsset:
        found = self.assets(predicate)
        assert found, "the emulator's dataset has no asset of that kind: change its knobs"
        return found[0]

    async def fetch(
        self,
        transferer: Transferer,
        asset: ExpectedAsset,
        *,
        url: str | None = None,
        listing_url: bool = True,
        rel: str | None = None,
    ) -> TransferResult:
        if url is None and listing_url:
            url = await self.presign(asset.data_id)
        return await transferer.fetch(
            ObjectRef(asset.asset_id, asset.data_id),
            url,
            self.refresher(asset.data_id),
            self.dest,
            PurePosixPath(rel or f"files/{asset.asset_id}.bin"),
        )

    def check(self, result: TransferResult, asset: ExpectedAsset) -> None:
        """The file is in place with the right bytes, and no partial is left behind."""
        path = self.dest / str(result.rel_path)
        assert result.size == asset.size
        assert result.sha256 == asset.sha256
        assert path.stat().st_size == asset.size
        assert sha256_of(path) == asset.sha256
        assert self.partials() == []

    def partials(self) -> list[str]:
        folder = self.state_dir / "partial"
        return sorted(os.listdir(folder)) if folder.exists() else []


def pick(h: Harness, kind: str) -> ExpectedAsset:
    """An asset of the size class ``kind`` from :func:`sizes_dataset`."""
    if kind == LARGE:
        return h.one(lambda a: a.size >= 3 * MiB)
    if kind == SMALL:
        return h.one(lambda a: 1000 < a.size <= 64 * KiB)
    return h.one(lambda a: 300 * KiB < a.size < MiB)


async def settle(emu: Emulator) -> None:
    """Wait until storage stops sending: a response a client abandoned (cancelled, killed) goes
    on until the server notices, and those bytes must not count for the next transfer."""
    await emu.quiesce()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def sizes_dataset(**overrides: Any) -> dict[str, Any]:
    """Emulator knobs giving every size class: empty, one chunk, several chunks and segments
    read by one stream, and large segmented objects with multipart ETags."""
    knobs: dict[str, Any] = {
        "assets": 24,
        "seed": 3,
        "min_size": 100,
        "max_size": 900 * KiB,
        "large_share": 0.25,
        "large_size": 3 * MiB + 12345,
        "empty_share": 0.1,
        "multipart_part_size": 1 * MiB,
        "nasty_filenames": False,
    }
    knobs.update(overrides)
    return knobs


@asynccontextmanager
async def harness(tmp_path: Path, **emulator: Any) -> AsyncIterator[Harness]:
    async with (
        Emulator(**sizes_dataset(**emulator)) as emu,
        aiohttp.ClientSession() as session,
    ):
        yield Harness(emu=emu, session=session, root=tmp_path)
