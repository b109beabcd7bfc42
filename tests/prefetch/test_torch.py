"""The PyTorch adapter: DataLoader workers split the epoch without duplicates.

torch is the ``torch`` extra (``pip install -e '.[torch]'``: torch 2.13.0, the CPU build). When
it is importable, a real ``DataLoader`` with 2 worker processes runs over the emulator. When it
is not, these tests do NOT skip: they drive the same split by hand (the two prefetchers the two
workers would open, with :func:`shard_for`), which checks everything but torch's own plumbing.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import anyio

from engine.emulator import Emulator
from engine.prefetch import Prefetcher, shard_for
from tests.prefetch.helpers import listing, settings_for, sha256_of

HAVE_TORCH = importlib.util.find_spec("torch") is not None


def _checked(item):
    """The transform a worker applies: the file must be complete when the item arrives."""
    assert item.path is not None
    return item.asset_id, item.index, sha256_of(item.path)


def _epoch_with_two_workers(settings, epoch: int, **prefetch) -> list[tuple[str, int, str]]:
    if HAVE_TORCH:
        from torch.utils.data import DataLoader

        from engine.prefetch import PrefetchDataset

        dataset = PrefetchDataset(settings, transform=_checked, window=8, **prefetch)
        dataset.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=None, num_workers=2)
        return list(loader)

    # Without torch: the two workers' prefetchers, run side by side, taken from in turn.
    shares: list[list[tuple[str, int, str]]] = [[], []]

    async def worker(index: int) -> None:
        shard = shard_for(index, 2)
        async with Prefetcher(settings, window=8, shard=shard, **prefetch) as prefetcher:
            shares[index] = [_checked(item) async for item in prefetcher.epoch(epoch)]

    async def both() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker, 0)
            tg.start_soon(worker, 1)

    anyio.run(both)
    merged = []
    for pair in zip(shares[0], shares[1] + [None], strict=False):  # type: ignore[operator]
        merged += [x for x in pair if x is not None]
    return merged


def test_two_workers_give_each_asset_exactly_once(tmp_path: Path):
    with Emulator(assets=41, seed=51).in_thread() as emu:
        order = listing(emu)
        settings = settings_for(emu, tmp_path / "d")
        got = _epoch_with_two_workers(settings, 0)
        ids = [asset_id for asset_id, _, _ in got]
        assert Counter(ids) == Counter(order)  # every asset, once
        assert ids == order  # taking from the workers in turn keeps the listing's order
        for asset_id, index, digest in got:
            assert digest == emu.dataset.expected(asset_id).sha256
            assert order[index] == asset_id

        # Shuffled epochs: still each asset once, in an order that changes with the epoch.
        first = [a for a, _, _ in _epoch_with_two_workers(settings, 1, shuffle=True, seed=9)]
        second = [a for a, _, _ in _epoch_with_two_workers(settings, 2, shuffle=True, seed=9)]
        assert Counter(first) == Counter(second) == Counter(order)
        assert first != order and second != first
        assert emu.counters.storage_requests == len(order)  # later epochs used the files


def test_torch_is_installed_for_the_adapter_tests():
    """Says plainly which variant of the adapter test ran (see the module docstring)."""
    if not HAVE_TORCH:
        print("torch not importable: the worker split was tested without torch")
    else:
        import torch

        assert torch.__version__.startswith("2.13.0")
