"""The emulator's latency options: every API answer and every storage answer's first byte wait
the given time, and nothing waits by default."""

from __future__ import annotations

import time

import aiohttp
import anyio
import pytest

from engine.emulator import Emulator


async def _timed_get(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> float:
    start = time.perf_counter()
    async with session.get(url, headers=headers) as answer:
        assert answer.status == 200, await answer.text()
        await answer.read()
    return time.perf_counter() - start


async def test_api_and_storage_answers_wait_their_latency() -> None:
    with anyio.fail_after(30):
        async with (
            Emulator(assets=3, seed=1, api_latency=0.2, storage_latency=0.3) as emu,
            aiohttp.ClientSession() as session,
        ):
            auth = {"Authorization": f"Bearer {emu.token}"}
            api = await _timed_get(session, f"{emu.api_url}/api/home/ping", headers=auth)
            data_id = emu.dataset.expected(next(iter(emu.dataset.asset_ids()))).data_id
            async with session.get(
                f"{emu.api_url}/api/data/{data_id}/presigned-url", headers=auth
            ) as answer:
                url = (await answer.json())["presigned_url"]
            storage = await _timed_get(session, url)
            # A sleep of d seconds never ends before d has passed: these are lower bounds.
            assert api >= 0.2
            assert storage >= 0.3


def test_latencies_are_off_by_default_and_refused_below_zero() -> None:
    emu = Emulator(assets=1)
    context = emu._context  # the options' one home
    assert (context.api_latency, context.storage_latency) == (0.0, 0.0)
    for bad in ({"api_latency": -1.0}, {"storage_latency": -0.5}):
        with pytest.raises(ValueError, match="latencies"):
            Emulator(assets=1, **bad)
