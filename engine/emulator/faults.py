"""Fault injection: rules that match requests and change how they are answered.

A :class:`FaultRule` matches a request when its ``target`` names the request's side (``"api"`` or
``"storage"``) or its endpoint kind (see :mod:`engine.emulator.counters`), its ``data_id`` (if
set) is the object concerned, it has fired fewer than ``count`` times (None: no limit) and a
draw from the controller's seeded RNG falls under ``probability``. Rules are consulted in the
order they were added:

* ``status``: the first matching rule answers ``status`` (JSON on the API, XML on storage) with
  ``Retry-After: retry_after`` when set. ``retry_after`` is written as given, fractions included,
  so tests can ask clients to wait 0.01 s (a real server sends whole seconds).
* ``drop``: the connection is closed after ``after_bytes`` body bytes (None: a random offset
  inside the body, drawn from the seeded RNG).
* ``stall``: no byte is sent for ``seconds`` once ``after_bytes`` body bytes are out (None:
  before the first body byte).
* ``throttle``: body bytes go out at ``bytes_per_second``; one rule is one shared link, so
  concurrent responses matching it share that bandwidth.
* ``ignore_range``: storage answers 200 with the whole object whatever the ``Range``.
* ``ignore_if_range``: storage honours ``Range`` but not ``If-Range``: a range request whose
  validator is stale (the object was rewritten, see :meth:`Emulator.rewrite_object`) gets a 206
  of the *current* object, with its new ETag, instead of a 200. Fires only on requests that
  carry ``If-Range``.
* ``misrange``: a 206 whose ``Content-Range`` is not what was asked for. ``shift`` moves the
  served range by that many bytes (clamped to the object; the body and ``Content-Length`` are
  those of the bytes really sent, so the header is honest about the wrong bytes), and
  ``total_shift`` adds that many bytes to the total size it announces (``bytes a-b/<size+N>``,
  never below 0). At least one of the two must be non-zero. Fires only on answers that would be
  a 206, and only where it changes them (a shift before byte 0 of a range starting at 0 does
  not fire, and waits for a later answer).
* ``chunked``: the body goes out with ``Transfer-Encoding: chunked`` and no ``Content-Length``
  (on 200 and 206 answers, and on API answers). Combine with ``ignore_range`` for a body whose
  length nobody announces.
* ``drift``: before a listing page that continues a listing (has a cursor, or an offset > 0),
  ``add`` assets are appended and ``remove`` random live assets are deleted.

Every matching body rule (``drop``, ``stall``, ``throttle``, ``chunked``) applies (a throttled
response can also stall, a chunked one be dropped); ``hits`` counts firings.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

__all__ = ["FAULT_KINDS", "BodyPlan", "FaultController", "FaultRule", "TokenBucket"]

FaultKind = Literal[
    "status",
    "drop",
    "stall",
    "ignore_range",
    "ignore_if_range",
    "misrange",
    "chunked",
    "throttle",
    "drift",
]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)  # one list: the type is the source
_BODY_KINDS = ("drop", "stall", "throttle", "chunked")
_ids = itertools.count(1)


class TokenBucket:
    """Paces bytes to a rate; callers share it, so it models one link."""

    def __init__(self, bytes_per_second: float) -> None:
        self.rate = float(bytes_per_second)
        self._next_free = 0.0

    async def take(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        start = max(now, self._next_free)
        self._next_free = start + count / self.rate
        delay = self._next_free - now
        if delay > 0:
            await asyncio.sleep(delay)

    def piece_size(self) -> int:
        """Write size that keeps pacing smooth (about 20 writes a second, at least 1 KiB)."""
        return max(1024, int(self.rate / 20))


@dataclass(eq=False)
class FaultRule:
    """One fault (see the module docstring for the meaning of each field)."""

    target: str
    kind: FaultKind
    status: int = 503
    retry_after: float | None = None
    after_bytes: int | None = None
    seconds: float = 0.0
    bytes_per_second: float | None = None
    add: int = 0
    remove: int = 0
    shift: int = 0
    total_shift: int = 0
    count: int | None = None
    probability: float = 1.0
    data_id: str | None = None
    hits: int = field(default=0, init=False)
    id: str = field(default="", init=False)
    _bucket: TokenBucket | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}")
        if self.kind == "throttle" and not self.bytes_per_second:
            raise ValueError("a throttle rule needs bytes_per_second > 0")
        if self.kind == "misrange" and not (self.shift or self.total_shift):
            raise ValueError("a misrange rule needs a non-zero shift or total_shift")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        self.id = f"rule-{next(_ids)}"
        if self.kind == "throttle":
            assert self.bytes_per_second is not None
            self._bucket = TokenBucket(self.bytes_per_second)

    @property
    def bucket(self) -> TokenBucket | None:
        return self._bucket

    def exhausted(self) -> bool:
        return self.count is not None and self.hits >= self.count

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultRule:
        allowed = {f.name for f in fields(cls) if f.init}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        return cls(**data)


@dataclass
class BodyPlan:
    """How to send one body: where to drop, where to stall, which links to pace through."""

    drop_at: int | None = None
    stalls: list[tuple[int, float]] = field(default_factory=list)
    buckets: list[TokenBucket] = field(default_factory=list)
    chunked: bool = False

    @property
    def plain(self) -> bool:
        return self.drop_at is None and not self.stalls and not self.buckets and not self.chunked


class FaultController:
    """The live set of rules, plus the URL time-to-live (both changeable at runtime)."""

    def __init__(self, *, url_ttl: float, seed: int = 0) -> None:
        self.url_ttl = float(url_ttl)
        self.rules: list[FaultRule] = []
        self._rng = random.Random(f"assetsync-emulator-faults:{seed}")

    @property
    def rng(self) -> random.Random:
        return self._rng

    def add(self, rule: FaultRule) -> FaultRule:
        self.rules.append(rule)
        return rule

    def remove(self, rule_or_id: FaultRule | str) -> bool:
        before = len(self.rules)
        wanted = rule_or_id if isinstance(rule_or_id, str) else rule_or_id.id
        self.rules = [r for r in self.rules if r.id != wanted]
        return len(self.rules) != before

    def clear(self) -> None:
        self.rules.clear()

    def _fire(self, rule: FaultRule, kind: str, data_id: str | None) -> bool:
        side = "storage" if kind == "storage" else "api"
        if rule.target not in (side, kind) or rule.exhausted():
            return False
        if rule.data_id is not None and rule.data_id != data_id:
            return False
        if rule.probability < 1.0 and self._rng.random() >= rule.probability:
            return False
        rule.hits += 1
        return True

    def status_rule(self, kind: str, data_id: str | None = None) -> FaultRule | None:
        for rule in list(self.rules):
            if rule.kind == "status" and self._fire(rule, kind, data_id):
                return rule
        return None

    def ignore_range(self, kind: str, data_id: str | None) -> bool:
        fired = [r for r in list(self.rules) if r.kind == "ignore_range"]
        return any([self._fire(rule, kind, data_id) for rule in fired])

    def ignore_if_range(self, kind: str, data_id: str | None) -> bool:
        fired = [r for r in list(self.rules) if r.kind == "ignore_if_range"]
        return any([self._fire(rule, kind, data_id) for rule in fired])

    def misrange_rule(
        self, kind: str, data_id: str | None, misstates: Callable[[FaultRule], bool]
    ) -> FaultRule | None:
        """The first misrange rule that fires among those that would make this answer wrong
        (``misstates``): a shift clamped away at either end of the object is no fault."""
        for rule in list(self.rules):
            if rule.kind == "misrange" and misstates(rule) and self._fire(rule, kind, data_id):
                return rule
        return None

    def drift_rules(self, kind: str) -> list[FaultRule]:
        return [r for r in list(self.rules) if r.kind == "drift" and self._fire(r, kind, None)]

    def body_plan(self, kind: str, data_id: str | None, body_size: int) -> BodyPlan:
        plan = BodyPlan()
        for rule in list(self.rules):
            if rule.kind not in _BODY_KINDS or not self._fire(rule, kind, data_id):
                continue
            if rule.kind == "drop":
                at = rule.after_bytes
                if at is None:
                    at = self._rng.randrange(body_size) if body_size > 0 else 0
                plan.drop_at = at if plan.drop_at is None else min(plan.drop_at, at)
            elif rule.kind == "stall":
                plan.stalls.append((rule.after_bytes or 0, rule.seconds))
            elif rule.kind == "chunked":
                plan.chunked = True
            elif rule.bucket is not None:
                plan.buckets.append(rule.bucket)
        plan.stalls.sort()
        return plan
