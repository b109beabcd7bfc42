"""A node's shard for the prefetcher (``machine_shard``): the same assets as ``mirror --shard``,
then split by position between the node's workers, every asset to one node and one worker."""

from __future__ import annotations

from pathlib import Path

from engine.emulator import Emulator
from engine.prefetch import Prefetcher, shard_for
from engine.sharding import AssetShard, shard_of
from tests.prefetch.helpers import listing, settings_for


async def test_each_node_and_worker_gets_its_own_assets_once(tmp_path: Path) -> None:
    nodes, workers = 3, 2
    async with Emulator(assets=50, seed=41) as emu:
        order = listing(emu)
        taken: list[str] = []
        for node in range(nodes):
            settings = settings_for(emu, tmp_path / f"node{node}")
            for worker in range(workers):
                async with Prefetcher(
                    settings,
                    machine_shard=f"{node}/{nodes}",
                    shard=shard_for(worker, workers),
                    window=8,
                ) as prefetcher:
                    items = [item async for item in prefetcher]
                assert all(item.ok for item in items)
                ids = [item.asset_id for item in items]
                assert all(shard_of(a, nodes) == node for a in ids)
                # The node's order is the version's with the others left out, split by position.
                mine = [a for a in order if shard_of(a, nodes) == node]
                assert ids == mine[worker::workers]
                taken += ids
        assert sorted(taken) == sorted(order)


async def test_explicit_ids_are_cut_to_the_node_too(tmp_path: Path) -> None:
    async with Emulator(assets=20, seed=42) as emu:
        wanted = listing(emu)[::-1]
        settings = settings_for(emu, tmp_path / "d")
        shard = AssetShard(1, 2)
        async with Prefetcher(settings, asset_ids=wanted, machine_shard=shard) as prefetcher:
            ids = [item.asset_id async for item in prefetcher]
        assert ids == [a for a in wanted if shard.holds(a)]
        assert emu.counters.storage_requests == len(ids)
