"""What training jobs need from the PyTorch adapter, with real DataLoaders over the emulator:
mid-epoch resume through torchdata's StatefulDataLoader (0 and 2 workers, 2 workers resumed on
1), persistent workers that follow set_epoch, and equal batch counts on every rank.

These need the ``torch`` extra (torch and torchdata): without it they are skipped, with the
reason in pytest's summary (``-ra``, on by default here); the pure arithmetic they rest on is
tested without torch in ``test_resume_state.py`` and ``test_resume.py``.
"""

from __future__ import annotations

import functools
import importlib.util
from collections import Counter
from pathlib import Path

import pytest

from engine.emulator import Emulator
from tests.prefetch.helpers import listing, settings_for

HAVE_TORCH = (
    importlib.util.find_spec("torch") is not None
    and importlib.util.find_spec("torchdata") is not None
)
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="the torch extra is not installed")


def _asset_id(item):
    assert item.path is not None and item.path.stat().st_size == item.size
    return item.asset_id


def _logged(log: Path, item):
    """The transform, noting each item it was given (workers append to one file)."""
    with log.open("a") as fh:
        fh.write(item.asset_id + "\n")
    return _asset_id(item)


def _given(log: Path) -> Counter:
    return Counter(log.read_text().split())


def _id_and_epoch(item):
    return item.asset_id, item.epoch, item.index


def _flat(batches) -> list[str]:
    return [asset_id for batch in batches for asset_id in batch]


def _downloaded_once(emu: Emulator, order: list[str]) -> None:
    """Every asset's bytes were served once: no request repeated, no byte sent twice."""
    assert emu.counters.storage_requests == len(order)
    assert emu.counters.storage_bytes == sum(emu.dataset.expected(a).size for a in order)


def test_the_torch_extra_is_installed():
    if not HAVE_TORCH:
        pytest.skip("torch or torchdata not importable: the adapter's job tests did not run")
    import importlib.metadata

    import torch
    import torchdata  # noqa: F401

    assert torch.__version__.startswith("2.13.0")
    assert importlib.metadata.version("torchdata") == "0.11.0"  # the extra's pin


def _dataset(settings, log: Path, **prefetch):
    from engine.prefetch import PrefetchDataset

    transform = functools.partial(_logged, log)
    return PrefetchDataset(
        settings, transform=transform, window=8, shuffle=True, seed=11, **prefetch
    )


def _stop_after(loader, batches: int) -> tuple[list[str], dict]:
    """Take ``batches`` batches, then the loader's state, then stop the loader (its
    workers shut down, their prefetchers close)."""
    iterator = iter(loader)
    taken = [next(iterator) for _ in range(batches)]
    state = loader.state_dict()
    del iterator
    loader._iterator = None  # the loader keeps its last iterator: let its workers go now
    return _flat(taken), state


@needs_torch
@pytest.mark.parametrize("workers", [0, 2])
def test_a_stateful_loader_resumes_mid_epoch_without_repeating_or_refetching(
    tmp_path: Path, workers: int
):
    from torchdata.stateful_dataloader import StatefulDataLoader

    log = tmp_path / "given.log"
    with Emulator(assets=60, seed=91, large_share=0.0, empty_share=0.0).in_thread() as emu:
        order = listing(emu)
        settings = settings_for(emu, tmp_path / "d")
        # prefetch_factor 1: a worker prepares at most one batch the loader has not yielded.
        loading = {"prefetch_factor": 1} if workers else {}
        first_ds = _dataset(settings, log)
        first_ds.set_epoch(2)
        loader = StatefulDataLoader(first_ds, batch_size=5, num_workers=workers, **loading)
        first, state = _stop_after(loader, 6)
        assert len(first) == 30

        second_ds = _dataset(settings, log)
        second_ds.set_epoch(2)
        resumed = StatefulDataLoader(second_ds, batch_size=5, num_workers=workers, **loading)
        resumed.load_state_dict(state)
        rest = _flat(resumed)
        assert Counter(first + rest) == Counter(order)  # each asset exactly once
        _downloaded_once(emu, order)
        # The resumed dataset did not go through the items already yielded again (a loader
        # fast-forwarding a dataset without state would have: 30 of them). Only the batches
        # the first loader's workers had prepared but not yielded come twice.
        given = _given(log)
        assert set(given) == set(order)
        assert given.total() - len(order) <= workers * 5


@needs_torch
def test_two_workers_resumed_on_one(tmp_path: Path):
    from torchdata.stateful_dataloader import StatefulDataLoader

    from engine.prefetch import merge_states
    from engine.prefetch.torch_dataset import worker_states

    log = tmp_path / "given.log"
    with Emulator(assets=60, seed=92, large_share=0.0, empty_share=0.0).in_thread() as emu:
        order = listing(emu)
        settings = settings_for(emu, tmp_path / "d")
        loader = StatefulDataLoader(
            _dataset(settings, log), batch_size=4, num_workers=2, prefetch_factor=1
        )
        first, state = _stop_after(loader, 9)
        assert len(first) == 36

        dataset = _dataset(settings, log)
        dataset.load_state_dict(merge_states(worker_states(state)))
        rest = _flat(StatefulDataLoader(dataset, batch_size=4, num_workers=1))
        assert Counter(first + rest) == Counter(order)
        _downloaded_once(emu, order)
        given = _given(log)
        assert set(given) == set(order)
        assert given.total() - len(order) <= 2 * 4  # the batches prepared, not yielded


@needs_torch
def test_persistent_workers_follow_set_epoch(tmp_path: Path):
    from torch.utils.data import DataLoader

    from engine.prefetch import PrefetchDataset

    with Emulator(assets=24, seed=93, large_share=0.0).in_thread() as emu:
        order = listing(emu)
        settings = settings_for(emu, tmp_path / "d")
        dataset = PrefetchDataset(settings, transform=_id_and_epoch, window=4, shuffle=True, seed=5)
        loader = DataLoader(dataset, batch_size=None, num_workers=2, persistent_workers=True)
        orders = []
        for epoch in range(3):
            dataset.set_epoch(epoch)
            got = list(loader)
            assert {e for _, e, _ in got} == {epoch}  # item.epoch is the epoch set
            ids = [asset_id for asset_id, _, _ in got]
            assert Counter(ids) == Counter(order)
            assert [index for _, _, index in got] == list(range(len(order)))
            orders.append(ids)
        assert len({tuple(o) for o in orders}) == 3  # three different orders
        del loader


@needs_torch
@pytest.mark.parametrize("equal", ["pad", "drop"])
def test_every_rank_gets_the_same_number_of_batches(tmp_path: Path, equal: str):
    """129 assets, 2 ranks x 2 workers, batch 32: without equal shards one rank gets 3
    batches and the other 2, and a DDP job hangs at the end of the epoch."""
    from torch.utils.data import DataLoader

    from engine.prefetch import PrefetchDataset

    with Emulator(assets=129, seed=94, large_share=0.0, empty_share=0.0).in_thread() as emu:
        order = listing(emu)
        settings = settings_for(emu, tmp_path / "d")
        per_rank = []
        for rank in range(2):
            dataset = PrefetchDataset(
                settings,
                transform=_asset_id,
                window=16,
                rank=rank,
                world_size=2,
                **({} if equal == "pad" else {"equal_shards": equal}),
            )
            per_rank.append(list(DataLoader(dataset, batch_size=32, num_workers=2)))
        assert len(per_rank[0]) == len(per_rank[1])
        seen = Counter(_flat(per_rank[0]) + _flat(per_rank[1]))
        if equal == "pad":
            assert set(seen) == set(order)  # every asset, and 3 repeated to even the shares
            assert sum(seen.values()) == 4 * 33
        else:
            assert sum(seen.values()) == 4 * 32 and max(seen.values()) == 1


_RANK = """
import pickle, sys
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from engine.prefetch import PrefetchDataset

store, rank, settings_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
with open(settings_file, "rb") as fh:
    settings = pickle.load(fh)
dataset = PrefetchDataset(settings, window=8)  # rank and world size from torch.distributed
assert (dataset.rank, dataset.world_size) == (rank, 2)
batches = 0
for batch in DataLoader(dataset, batch_size=32, num_workers=2, collate_fn=len):
    total = torch.tensor([batch])
    dist.all_reduce(total)  # what DDP does each step: a rank with a batch more waits here
    batches += 1
dist.barrier()
print(batches)
dist.destroy_process_group()
"""


@needs_torch
@pytest.mark.slow
def test_two_gloo_ranks_on_loopback_step_together(tmp_path: Path):
    """Two processes of a gloo job (on loopback), each a DataLoader with 2 workers over 129
    assets, batch 32: every step's all_reduce is met by the other rank, and both end."""
    import os
    import pickle
    import subprocess
    import sys

    with Emulator(assets=129, seed=95, large_share=0.0).in_thread() as emu:
        settings_file = tmp_path / "settings.pickle"
        settings_file.write_bytes(pickle.dumps(settings_for(emu, tmp_path / "d")))
        env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": os.getcwd()}
        store = tmp_path / "store"
        ranks = [
            subprocess.Popen(
                [sys.executable, "-c", _RANK, str(store), str(rank), str(settings_file)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for rank in range(2)
        ]
        try:
            outputs = [process.communicate(timeout=120) for process in ranks]
        finally:
            for process in ranks:
                process.kill()
        for process, (_, err) in zip(ranks, outputs, strict=True):
            assert process.returncode == 0, err[-2000:]
        counts = [int(out.split()[-1]) for out, _ in outputs]
        assert counts == [4, 4]  # 33 items per worker (padded): 2 batches each
