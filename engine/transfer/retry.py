"""Retry timing: exponential backoff with full jitter, ``Retry-After``, a budget reset by progress.

Pure: the random source and the clock are passed in, nothing sleeps here. The caller asks
:meth:`Backoff.next_delay` after each failure and sleeps for the answer, or gives up on ``None``.
"""

from __future__ import annotations

import random
from email.utils import parsedate_to_datetime

from engine.settings import RetryPolicy

__all__ = ["Backoff", "parse_retry_after"]


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date).

    None when absent or malformed; never negative. Fractions are accepted, which real servers do
    not send but which keeps tests fast.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN, inf
            return None
        return max(0.0, seconds)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT
        return None
    return max(0.0, when.timestamp() - now)


class Backoff:
    """Counts failures without progress and says how long to wait before the next attempt.

    The n-th consecutive failure (n from 1) waits a uniformly random time in
    ``[0, min(max_delay, base_delay * 2**(n-1))]`` ("full jitter", which spreads a herd of
    clients best). A server's ``Retry-After`` replaces that, capped at ``max_retry_after``.
    After ``attempts`` consecutive failures the answer is None: give up. :meth:`progress`
    (bytes arrived) resets the count.
    """

    __slots__ = ("_rng", "failures", "policy")

    def __init__(self, policy: RetryPolicy, rng: random.Random | None = None) -> None:
        self.policy = policy
        self._rng = rng if rng is not None else random.Random()
        self.failures = 0

    def progress(self) -> None:
        self.failures = 0

    def ceiling(self, failures: int) -> float:
        """The largest jittered delay after ``failures`` consecutive failures."""
        exponent = min(max(failures - 1, 0), 62)  # 2**62 * base overflows nothing, then capped
        return min(self.policy.max_delay, self.policy.base_delay * float(2**exponent))

    def next_delay(self, retry_after: float | None = None) -> float | None:
        """Record a failure; seconds to wait before retrying, or None when the budget is spent."""
        self.failures += 1
        if self.failures >= self.policy.attempts:
            return None
        if retry_after is not None:
            return min(max(0.0, retry_after), self.policy.max_retry_after)
        return self._rng.uniform(0.0, self.ceiling(self.failures))
