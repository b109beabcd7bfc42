"""How long to wait before trying again: one rule for the API client and the transfer core.

* the n-th consecutive failure (n from 1) waits a uniformly random time in
  ``[0, min(max_delay, base_delay * 2**(n-1))]`` ("full jitter", AWS's "exponential backoff and
  jitter": it spreads a herd of clients best);
* a server's ``Retry-After`` replaces that (the server knows when it will take us back), capped
  at ``max_retry_after`` so a hostile or broken server cannot park a run for a day.

``Retry-After`` is read as RFC 9110 (section 10.2.3) says: delay-seconds, or an HTTP-date in any
of the three formats a recipient must accept; the obsolete asctime format carries no zone and is
GMT like the others (a date read as local time would be off by the machine's UTC offset).
Fractions of a second are accepted, which real servers do not send but which keeps tests fast.

Pure: the random source and the clock are passed in; nothing sleeps here.
"""

from __future__ import annotations

import random
from datetime import UTC
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the settings load pydantic-settings, which loads asyncio
    from engine.settings import RetryPolicy

__all__ = ["jitter_ceiling", "parse_retry_after", "retry_delay"]


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value; None when absent or malformed, never
    negative."""
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
    # Here, not at the top: email.utils imports socket, and this module stays free of I/O.
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime (or "-0000"): HTTP dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def jitter_ceiling(policy: RetryPolicy, failures: int) -> float:
    """The largest jittered delay after ``failures`` consecutive failures."""
    exponent = min(max(failures - 1, 0), 62)  # 2**62 * base overflows nothing, then capped
    return min(policy.max_delay, policy.base_delay * float(2**exponent))


def retry_delay(
    policy: RetryPolicy, failures: int, rng: random.Random, retry_after: float | None = None
) -> float:
    """Seconds to wait after ``failures`` consecutive failures (see the module docstring)."""
    if retry_after is not None:
        return min(max(0.0, retry_after), policy.max_retry_after)
    return rng.uniform(0.0, jitter_ceiling(policy, failures))
