"""Retry timing of a transfer: the one backoff rule (:mod:`engine.backoff`), and a budget reset
by progress (bytes kept on disk beyond the most kept before).

Pure: the random source and the clock are passed in, nothing sleeps here. The caller asks
:meth:`Backoff.next_delay` after each failure and sleeps for the answer, or gives up on ``None``.
"""

from __future__ import annotations

import random

from engine.backoff import jitter_ceiling, parse_retry_after, retry_delay
from engine.settings import RetryPolicy

__all__ = ["Backoff", "parse_retry_after"]


class Backoff:
    """Counts failures without progress and says how long to wait before the next attempt.

    The n-th consecutive failure (n from 1) waits a uniformly random time in
    ``[0, min(max_delay, base_delay * 2**(n-1))]`` ("full jitter", which spreads a herd of
    clients best). A server's ``Retry-After`` replaces that, capped at ``max_retry_after``.
    After ``attempts`` consecutive failures the answer is None: give up.

    Progress resets the count: :meth:`kept` reports the bytes on disk of the piece this budget
    is for, and a failed attempt made progress if, by then, more bytes were kept than ever
    before. Bytes that arrive and are thrown away are not progress: a body cut at the same
    place on every restart from zero spends the budget. Neither are the bytes of an attempt that
    failed for being too slow (``progress=False``), so a drip that keeps a few bytes per
    attempt ends too; a later attempt must go beyond them to count.
    """

    __slots__ = ("_counted", "_rng", "best", "failures", "policy")

    def __init__(
        self, policy: RetryPolicy, rng: random.Random | None = None, *, kept: int = 0
    ) -> None:
        self.policy = policy
        self._rng = rng if rng is not None else random.Random()
        self.failures = 0
        self.best = kept  # the most bytes ever kept
        self._counted = kept  # ``best`` as of the last failure

    def kept(self, total: int) -> None:
        """``total`` bytes of the piece are on disk now (cheap: called as bytes land)."""
        if total > self.best:
            self.best = total

    def ceiling(self, failures: int) -> float:
        """The largest jittered delay after ``failures`` consecutive failures."""
        return jitter_ceiling(self.policy, failures)

    def next_delay(
        self, retry_after: float | None = None, *, progress: bool = True
    ) -> float | None:
        """Record a failure; seconds to wait before retrying, or None when the budget is spent.

        ``progress=False``: whatever this attempt kept does not reset the budget."""
        if progress and self.best > self._counted:
            self.failures = 0
        self._counted = self.best
        self.failures += 1
        if self.failures >= self.policy.attempts:
            return None
        return retry_delay(self.policy, self.failures, self._rng, retry_after)
