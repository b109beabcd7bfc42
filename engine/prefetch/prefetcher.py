"""``Prefetcher``: a dataset version's files on local disk just before a data loader wants them.

::

    async with Prefetcher(settings, window=64) as prefetcher:      # async
        async for item in prefetcher:                               # one epoch
            train_on(item.path, item.annotations)

    with Prefetcher(settings, shuffle=True, seed=7) as prefetcher:  # plain threads
        for epoch in range(3):
            for item in prefetcher:                                 # epoch 0, 1, 2
                ...

    for item in Prefetcher(settings):                               # one epoch, one session
        ...

The session (lock, manifest, HTTP, transfer core) lives from entering to leaving the context;
each iteration is the next epoch (or pick one: ``prefetcher.epoch(5)``). Leaving an iteration
early is fine: the epoch stops at the next one or when the context closes. The plain iterator
runs the engine's event loop on a background thread (:mod:`engine.prefetch.sync`).
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Literal

from engine.errors import primary_error
from engine.prefetch.epoch import CANCEL_GRACE, EpochRun
from engine.prefetch.items import PrefetchItem, PrefetchStats
from engine.prefetch.options import FailurePolicy, Order, PrefetchOptions, options_with
from engine.prefetch.resume import EpochProgress, OrderMark, ResumeState, Share
from engine.prefetch.session import Session
from engine.prefetch.split import Shard
from engine.settings import Settings
from engine.sharding import WHOLE, AssetShard, resolve_shard

__all__ = ["EpochIterator", "Prefetcher"]


class _Unset(enum.Enum):
    UNSET = 0


UNSET = _Unset.UNSET
Maybe = Literal[_Unset.UNSET]


class Prefetcher:
    """Yields a dataset version's assets as :class:`~engine.prefetch.PrefetchItem`, each as
    soon as its file is complete and verified under ``settings.dest``.

    ``settings``: the run's :class:`~engine.settings.Settings` (API, token, dataset version,
    DEST, tag filter, layout, concurrency, transfer options). ``asset_ids``: an explicit order
    of asset ids instead of the version's listing (not with a tag filter; ids must not repeat);
    it is read once per session (streamed to disk), so give a list to open the prefetcher twice.
    ``options``: a :class:`~engine.prefetch.PrefetchOptions`; the keywords after it override
    its fields (see it for their meaning). ``shard``: ``(index, count)``: this process takes the
    epoch order's positions ``k`` with ``k % count == index`` (the torch adapter sets it per
    DataLoader worker). ``clock``: epoch seconds for URL expiry (tests move it).

    Mid-epoch resume: :meth:`state_dict` says where the consumer stands (plain data: a
    checkpoint can hold it); a new prefetcher given it by :meth:`load_state_dict` yields the
    rest of that epoch, nothing the consumer took before, without asking the storage for it
    again. ``equal_shards``: see :class:`~engine.prefetch.PrefetchOptions`.

    ``machine_shard``: this node's shard of the version, as ``mirror --shard`` takes it
    (an :class:`~engine.sharding.AssetShard`, ``"K/N"`` or ``"auto"``): only its assets are
    listed or taken from ``asset_ids`` (:class:`~engine.prefetch.order.OrderStore`), then split
    by ``shard`` between the node's ranks and workers. ``PrefetchDataset`` passes it on.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        asset_ids: Iterable[str] | None = None,
        options: PrefetchOptions | None = None,
        window: int | Maybe = UNSET,
        window_bytes: int | str | Maybe | None = UNSET,
        order: Order | Maybe = UNSET,
        max_bytes: int | str | Maybe | None = UNSET,
        hold: int | Maybe = UNSET,
        shuffle: bool | Maybe = UNSET,
        seed: int | Maybe = UNSET,
        on_failure: FailurePolicy | Maybe = UNSET,
        equal_shards: Literal["pad", "drop"] | Maybe | None = UNSET,
        shard: Shard | tuple[int, int] | None = None,
        clock: Callable[[], float] = time.time,
        cancel_grace: float = CANCEL_GRACE,
        machine_shard: AssetShard | str | None = None,
    ) -> None:
        given = {
            "window": window,
            "window_bytes": window_bytes,
            "order": order,
            "max_bytes": max_bytes,
            "hold": hold,
            "shuffle": shuffle,
            "seed": seed,
            "on_failure": on_failure,
            "equal_shards": equal_shards,
        }
        changes = {k: v for k, v in given.items() if v is not UNSET}
        self.options = options_with(options, changes)
        self.settings = settings
        self.shard = shard if isinstance(shard, Shard) else Shard(*(shard or (0, 1)))
        self.machine = (
            machine_shard
            if isinstance(machine_shard, AssetShard)
            else resolve_shard(machine_shard, os.environ).shard
            if machine_shard is not None
            else WHOLE
        )
        self._asset_ids = asset_ids
        self._clock = clock
        self._grace = cancel_grace
        self._session: Session | None = None
        self._current: EpochRun | None = None
        self._next_epoch = 0
        self._resume: ResumeState | None = None
        self._progress: EpochProgress | None = None
        self._stats = PrefetchStats()
        self._runner: Any = None  # engine.prefetch.sync.SyncRunner while entered with `with`

    @property
    def stats(self) -> PrefetchStats:
        """Counters over the session (the last one, once closed)."""
        return self._session.refresh_stats() if self._session is not None else self._stats

    # -- async ---------------------------------------------------------------------------------

    async def __aenter__(self) -> Prefetcher:
        if self._session is not None:
            raise RuntimeError("this prefetcher is already open")
        session = Session(
            self.settings,
            self.options,
            asset_ids=self._asset_ids,
            shard=self.shard,
            clock=self._clock,
            machine=self.machine,
        )
        await session.__aenter__()
        session.on_error = self._wake
        self._stats = session.stats
        self._session = session
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        try:
            await self._stop_current()
        finally:
            try:
                await session.__aexit__(exc_type, exc, tb)
            except BaseExceptionGroup as group:
                error = primary_error(group)
                if error is group:
                    raise
                raise error from None

    def __aiter__(self) -> EpochIterator:
        return self.epoch()

    def epoch(self, number: int | None = None) -> EpochIterator:
        """The items of epoch ``number`` (default: the one after the last started). An epoch
        starts on its first item and stops the one before it. Iterate it with ``async for``
        (inside ``async with``) or ``for`` (inside ``with``)."""
        if number is not None and number < 0:
            raise ValueError("epochs are numbered from 0")
        resume, self._resume = self._resume, None
        if resume is not None and number not in (None, resume.epoch):
            resume = None  # another epoch than the one the state was taken in: from its start
        if number is None:
            number = resume.epoch if resume is not None else self._next_epoch
        self._next_epoch = number + 1
        o = self.options
        share = Share(self.shard, equal=o.equal_shards)
        finished = False
        order = None
        if resume is not None:
            share = resume.share_for(self.shard, o.equal_shards)
            finished = resume.finished
            order = resume.order  # what the epoch checks its order against before it goes on
        progress = EpochProgress(number, share, o.seed, o.shuffle, finished=finished, order=order)
        self._progress = progress
        return EpochIterator(self, number, progress)

    # -- mid-epoch resume ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Where the consumer stands in the current epoch (after the items it took), as plain
        data: load it into a new prefetcher (:meth:`load_state_dict`) to yield the rest of that
        epoch, nothing it took again. The state of one shard: merge every shard's with
        :func:`~engine.prefetch.merge_states` to resume with another split."""
        if self._progress is not None:
            return self._progress.state()
        o = self.options
        if self._resume is not None:
            r = self._resume
            progress = EpochProgress(
                r.epoch,
                r.share_for(self.shard, o.equal_shards),
                o.seed,
                o.shuffle,
                finished=r.finished,
                order=r.order,
            )
            return progress.state()
        return EpochProgress(self._next_epoch, Share(self.shard), o.seed, o.shuffle).state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The next epoch iterated (or ``epoch(n)`` of the state's epoch) resumes where
        ``state`` stands: a state of this shard (same index and count), or a merged one."""
        parsed = ResumeState.parse(state)
        o = self.options
        if (parsed.seed, parsed.shuffle) != (o.seed, o.shuffle):
            raise ValueError(
                f"the state was taken with shuffle={parsed.shuffle} seed={parsed.seed}, this "
                f"prefetcher has shuffle={o.shuffle} seed={o.seed}: its order would differ"
            )
        parsed.share_for(self.shard, o.equal_shards)  # refuses another shard's state now
        self._resume = parsed
        self._progress = None

    async def _start(self, number: int, share: Share, resumed: OrderMark | None) -> EpochRun:
        session = self._session
        if session is None:
            raise RuntimeError("open the prefetcher first: async with Prefetcher(...) as p")
        await self._stop_current()
        run = EpochRun(session, number, share=share, resumed=resumed)
        session.on_progress = run.on_progress
        session.stats.epochs += 1
        self._current = run
        session.tg.start_soon(run.run)
        return run

    async def _stop_current(self) -> None:
        run, self._current = self._current, None
        if run is None:
            return
        if not run.ended.is_set():
            run.cancel(self._grace)
            await run.ended.wait()
        run.close()

    async def _stop(self, run: EpochRun) -> None:
        if run is self._current:
            await self._stop_current()

    def _wake(self) -> None:
        if self._current is not None:
            self._current._notify()

    # -- plain iteration -------------------------------------------------------------------------

    def __enter__(self) -> Prefetcher:
        from engine.prefetch.sync import SyncRunner

        if self._runner is not None or self._session is not None:
            raise RuntimeError("this prefetcher is already open")
        runner = SyncRunner(self)
        runner.start()
        self._runner = runner
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.close(exc_type, exc, tb)

    def __iter__(self) -> Iterator[PrefetchItem]:
        return iter(self.epoch())

    def close(self) -> None:
        """Close a prefetcher opened with ``with`` (same as leaving the block)."""
        self.__exit__(None, None, None)


class EpochIterator:
    """One epoch's items: ``async for`` (the prefetcher opened with ``async with``) or ``for``
    (opened with ``with``, or not opened: then a session is opened for this epoch alone).
    ``aclose()`` / leaving ``async with`` stops the epoch at once."""

    def __init__(self, prefetcher: Prefetcher, number: int, progress: EpochProgress) -> None:
        self.prefetcher = prefetcher
        self.number = number
        self.progress = progress
        self._run: EpochRun | None = None

    def __aiter__(self) -> EpochIterator:
        return self

    async def __anext__(self) -> PrefetchItem:
        if self.progress.finished:
            raise StopAsyncIteration  # resumed from a state taken after the epoch's end
        if self._run is None:
            # A resumed epoch's progress starts with its state's order mark.
            progress = self.progress
            self._run = await self.prefetcher._start(
                number=self.number, share=progress.share, resumed=progress.order
            )
        try:
            return self._took(await self._run.next())
        except StopAsyncIteration:
            self._ended()
            raise

    def next_ready(self) -> PrefetchItem | None:
        """On the loop: the next item if it is there now (see :meth:`EpochRun.next_ready`);
        ``None`` when it must be awaited (also before the epoch has started)."""
        if self._run is None:
            return None
        try:
            item = self._run.next_ready()
        except StopAsyncIteration:
            self._ended()
            raise
        return None if item is None else self._took(item)

    def _total(self) -> int | None:
        order = self._run.s.order if self._run is not None else None
        return order.count if order is not None and order.complete else None

    def _took(self, item: PrefetchItem) -> PrefetchItem:
        self.progress.took(item.index, self._total())
        self._mark_order()
        return item

    def _mark_order(self) -> None:
        """The state says which order its positions are of (as far as it is listed now)."""
        assert self._run is not None
        count, digest = self._run.s.order.listed
        mark = self.progress.order
        if count and (mark is None or mark.count != count):
            self.progress.order = OrderMark(count, digest)

    def _ended(self) -> None:
        if self._run is not None:
            self._mark_order()
        total = self._total()
        if total is not None:
            self.progress.finish(total)

    async def aclose(self) -> None:
        if self._run is not None:
            await self.prefetcher._stop(self._run)

    async def __aenter__(self) -> EpochIterator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __iter__(self) -> Iterator[PrefetchItem]:
        pf = self.prefetcher
        if pf._runner is not None:
            return pf._runner.items(self)  # type: ignore[no-any-return]
        if pf._session is not None:
            raise RuntimeError("opened with `async with`: iterate with `async for`")
        return self._one_session()

    def _one_session(self) -> Iterator[PrefetchItem]:
        with self.prefetcher as pf:
            yield from pf._runner.items(self)
