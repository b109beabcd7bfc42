"""Pure: which positions of an epoch's order one prefetcher yields, and where a stopped epoch
resumes.

An epoch's order is a function of (seed, epoch, ids) (:mod:`engine.prefetch.split`), so where an
epoch stands is a few numbers, never a list of what was seen:

* ``base`` and ``done``: every position before ``base`` was consumed, and so were the positions
  in ``done`` (all at or after ``base``). A fresh epoch has ``base`` 0 and nothing done. What is
  left, the *remainder*, is the other positions in order; its ``j``-th one is its ordinal ``j``.
* A :class:`Share` deals the remainder's ordinals to shards in turn: shard ``i`` of ``n`` takes
  ordinals ``i, i + n, i + 2n...``, so the shares differ by at most one item and a loader that
  takes from its workers in turn gives the remainder back in order. ``skip``: the share's first
  items were consumed already (one worker resuming its own share).
* ``equal``: every shard yields the same number of items, as distributed training needs (a rank
  with one batch more than another waits forever in its collective): ``"drop"`` ends every
  shard at ``floor(R / n)`` items, ``"pad"`` extends the order by repeating its first items up
  to ``ceil(R / n)`` each, like ``torch.utils.data.DistributedSampler``. A padded item's
  position is past the end of the order (``total`` and up), its asset the one at the repeated
  ordinal's position.

A worker's state says its share and how many of its items were consumed; :func:`merge_states`
turns the states of every worker of every rank into one state whose remainder is exactly what
none of them consumed, to resume with another number of workers or ranks.

Positions mean something only in the order they were taken in: a state also carries ``order``,
how many ids its prefetcher had in its order and their digest (:class:`OrderMark`). A resumed
epoch checks it against the order it lists (the same first ids; shuffled, the very same ids) and
refuses to go on by position over another.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.prefetch.split import Shard

__all__ = [
    "STATE_FORMAT",
    "EpochProgress",
    "EqualShards",
    "OrderMark",
    "ResumeState",
    "Share",
    "ShareScan",
    "merge_states",
]

EqualShards = Literal["pad", "drop"]
STATE_FORMAT = "assetsync.prefetch/1"


@dataclass(frozen=True, slots=True)
class OrderMark:
    """The first ``count`` ids of an order, by digest (:class:`~engine.prefetch.order.OrderStore`
    keeps it as it stores ids)."""

    count: int
    digest: str

    @classmethod
    def parse(cls, value: object) -> OrderMark | None:
        if value is None:
            return None
        if (
            not isinstance(value, list | tuple)
            or len(value) != 2
            or not isinstance(value[0], int)
            or isinstance(value[0], bool)
            or value[0] < 0
            or not isinstance(value[1], str)
            or len(value[1]) != 32
        ):
            raise ValueError(f"a prefetcher state with a bad order mark: {value!r}")
        return cls(value[0], value[1])

    def state(self) -> list[Any]:
        return [self.count, self.digest]


@dataclass(frozen=True, slots=True)
class Share:
    """One shard's part of an epoch's remainder (see the module docstring)."""

    shard: Shard = field(default_factory=Shard)
    base: int = 0
    done: tuple[int, ...] = ()  # sorted, each at or after base
    skip: int = 0
    equal: EqualShards | None = None

    def __post_init__(self) -> None:
        if self.base < 0 or self.skip < 0:
            raise ValueError("base and skip are not negative")
        if list(self.done) != sorted(set(self.done)) or (self.done and self.done[0] < self.base):
            raise ValueError("done positions are sorted, distinct and not before base")

    def bounded(self, total: int) -> Share:
        """The share over an order of ``total`` positions (done positions past it are moot)."""
        done = self.done[: bisect.bisect_left(self.done, total)]
        return self if len(done) == len(self.done) else dataclasses.replace(self, done=done)

    def ordinal(self, position: int) -> int | None:
        """The remainder ordinal of ``position`` (None: consumed before)."""
        if position < self.base:
            return None
        at = bisect.bisect_left(self.done, position)
        if at < len(self.done) and self.done[at] == position:
            return None
        return position - self.base - at

    def position(self, ordinal: int) -> int:
        """The position of remainder ordinal ``ordinal`` (past the order's end for a pad)."""
        position = self.base + ordinal
        for d in self.done:
            if d > position:
                break
            position += 1
        return position

    def first(self) -> int:
        """The first ordinal this share still yields."""
        return self.shard.index + self.skip * self.shard.count

    def remaining(self, total: int) -> int:
        """R: how many positions of an order of ``total`` are left."""
        return max(0, total - self.base - bisect.bisect_left(self.done, total))

    def end(self, total: int) -> int:
        """The ordinal every shard stops before (pad ordinals past R included)."""
        r, n = self.remaining(total), self.shard.count
        if self.equal == "drop":
            return n * (r // n)
        if self.equal == "pad" and r > 0:
            return n * -(-r // n)
        return r

    def size(self, total: int) -> int:
        """How many items the whole share has (consumed ones included)."""
        n, i = self.shard.count, self.shard.index
        return max(0, -(-(self.end(total) - i) // n))

    def consumed_through(self, position: int, total: int | None = None) -> int:
        """How many of the share's items were consumed once the one at ``position`` was (a
        position at or past ``total`` is a pad)."""
        if total is not None and position >= total:
            ordinal = self.remaining(total) + position - total
        else:
            found = self.ordinal(position)
            if found is None:
                raise ValueError(f"position {position} is not in the remainder")
            ordinal = found
        n, i = self.shard.count, self.shard.index
        if ordinal % n != i:
            raise ValueError(f"position {position} is not in shard {i} of {n}")
        return ordinal // n + 1


class ShareScan:
    """Walks an order from :attr:`start` (a position) on, one position at a time, and says which
    positions are the share's. ``total``: the order's length when known (needed by ``equal``)."""

    def __init__(self, share: Share, total: int | None = None) -> None:
        if share.equal is not None and total is None:
            raise ValueError("equal shards need the order's length")
        self.share = share.bounded(total) if total is not None else share
        self.total = total
        self._ordinal = self.share.first()
        self.start = self.share.position(self._ordinal)
        self._end = self.share.end(total) if total is not None else None
        self._next = self.start

    @property
    def exhausted(self) -> bool:
        """No real position is left for the share (the pads may be)."""
        return self._end is not None and self._ordinal >= min(
            self._end, self.share.remaining(self.total or 0)
        )

    def wants(self, position: int) -> bool:
        """Whether ``position`` (the next one, in order) is the share's."""
        if position != self._next:
            raise ValueError(f"positions are walked in order: {self._next} expected")
        self._next += 1
        if self.share.ordinal(position) is None:
            return False
        ordinal = self._ordinal
        self._ordinal += 1
        if self._end is not None and ordinal >= self._end:
            return False
        n = self.share.shard.count
        return ordinal % n == self.share.shard.index

    def pads(self) -> list[tuple[int, int]]:
        """After the order's end: the share's padded items, as (position past the end,
        position of the repeated item)."""
        if self.share.equal != "pad" or self.total is None:
            return []
        r, end = self.share.remaining(self.total), self.share.end(self.total)
        n, i = self.share.shard.count, self.share.shard.index
        first = max(r, self.share.first())
        start = first + (i - first) % n
        return [
            (self.total + j - r, self.share.position((j - r) % r)) for j in range(start, end, n)
        ]


@dataclass(slots=True)
class EpochProgress:
    """How far a consumer got in one share of one epoch: what a state dict says."""

    epoch: int
    share: Share
    seed: int
    shuffle: bool
    consumed: int = 0  # of the share's items, from its first (skipped ones included)
    finished: bool = False
    total: int | None = None
    order: OrderMark | None = None  # the order the positions are of, as far as it was listed

    def __post_init__(self) -> None:
        self.consumed = max(self.consumed, self.share.skip)

    def took(self, position: int, total: int | None = None) -> None:
        """The consumer took the item at ``position`` (items before it in the share were
        consumed too, whether they were yielded or skipped). ``total``: the order's length,
        when known (a padded item's position is past it)."""
        self.total = total if total is not None else self.total
        self.consumed = self.share.consumed_through(position, self.total)

    def finish(self, total: int) -> None:
        self.total = total
        self.consumed = self.share.size(total)
        self.finished = True

    def state(self) -> dict[str, Any]:
        s = self.share
        return {
            "format": STATE_FORMAT,
            "epoch": self.epoch,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "base": s.base,
            "done": list(s.done),
            "shard": [s.shard.index, s.shard.count],
            "consumed": self.consumed,
            "finished": self.finished,
            "order": None if self.order is None else self.order.state(),
        }


@dataclass(frozen=True, slots=True)
class ResumeState:
    """A parsed state dict: one shard's progress, or a whole job's (``shard`` None)."""

    epoch: int
    seed: int
    shuffle: bool
    base: int
    done: tuple[int, ...]
    shard: Shard | None
    consumed: int
    finished: bool
    order: OrderMark | None = None

    @classmethod
    def parse(cls, state: Mapping[str, Any]) -> ResumeState:
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a prefetcher state (format {STATE_FORMAT!r} expected)")
        try:
            shard = state["shard"]
            parsed = cls(
                epoch=int(state["epoch"]),
                seed=int(state["seed"]),
                shuffle=bool(state["shuffle"]),
                base=int(state["base"]),
                done=tuple(sorted({int(d) for d in state["done"]})),
                shard=None if shard is None else Shard(int(shard[0]), int(shard[1])),
                consumed=int(state["consumed"]),
                finished=bool(state["finished"]),
                # States from before the mark have none: their order cannot be checked.
                order=OrderMark.parse(state.get("order")),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"a prefetcher state with a bad field: {exc}") from None
        if parsed.epoch < 0 or parsed.consumed < 0:
            raise ValueError("a prefetcher state with a negative epoch or count")
        Share(base=parsed.base, done=parsed.done)  # checks them
        return parsed

    def share_for(self, shard: Shard, equal: EqualShards | None) -> Share:
        """The share a prefetcher of ``shard`` resumes."""
        if self.shard is None:
            return Share(shard, self.base, self.done, 0, equal)
        if self.shard != shard:
            raise ValueError(
                f"this state is shard {self.shard.index} of {self.shard.count}'s progress, not "
                f"shard {shard.index} of {shard.count}'s: to resume with another number of "
                "workers or ranks, merge every shard's state with merge_states() first"
            )
        return Share(shard, self.base, self.done, self.consumed, equal)


def merge_states(states: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One job-wide state from the states of every shard of an epoch (every worker of every
    rank): its remainder is exactly what none of them consumed. Load it into a prefetcher or
    dataset of any shard count."""
    parsed = [ResumeState.parse(state) for state in states]
    if not parsed:
        raise ValueError("no state to merge")
    head = parsed[0]
    for p in parsed:
        if (p.epoch, p.seed, p.shuffle, p.base, p.done) != (
            head.epoch,
            head.seed,
            head.shuffle,
            head.base,
            head.done,
        ):
            raise ValueError("these states are not of one epoch of one order")
    order = _furthest_mark(parsed)
    head = dataclasses.replace(head, order=order)
    if len(parsed) == 1 and head.shard is None:
        return _job_state(head, head.base, head.done, head.finished)
    shards = [p.shard for p in parsed]
    if any(s is None for s in shards):
        raise ValueError("a job-wide state merges with nothing")
    count = shards[0].count  # type: ignore[union-attr]
    if sorted(s.index for s in shards if s is not None) != list(range(count)) or any(
        s is not None and s.count != count for s in shards
    ):
        raise ValueError(f"the states of all {count} shards are needed, each once")
    old = Share(base=head.base, done=head.done)
    unfinished = [p.shard.index + p.consumed * count for p in parsed if not p.finished and p.shard]
    if not unfinished:
        return _job_state(head, head.base, head.done, True)
    first = min(unfinished)
    done = {d for d in head.done if d >= old.position(first)}
    for p in parsed:
        assert p.shard is not None
        for m in range(max(0, (first - p.shard.index) // count), p.consumed):
            ordinal = p.shard.index + m * count
            if ordinal > first:
                done.add(old.position(ordinal))
    return _job_state(head, old.position(first), tuple(sorted(done)), False)


def _furthest_mark(parsed: list[ResumeState]) -> OrderMark | None:
    """The mark that covers every state's positions: each shard lists the order itself, so
    their marks are prefixes of one order taken at different moments; the longest covers all
    (two of one length must agree)."""
    marks = [p.order for p in parsed if p.order is not None]
    if not marks:
        return None
    furthest = max(marks, key=lambda m: m.count)
    if any(m.count == furthest.count and m != furthest for m in marks):
        raise ValueError("these states are not of one epoch of one order")
    return furthest


def _job_state(
    head: ResumeState, base: int, done: tuple[int, ...], finished: bool
) -> dict[str, Any]:
    return {
        "format": STATE_FORMAT,
        "epoch": head.epoch,
        "seed": head.seed,
        "shuffle": head.shuffle,
        "base": base,
        "done": list(done),
        "shard": None,
        "consumed": 0,
        "finished": finished,
        "order": None if head.order is None else head.order.state(),
    }
