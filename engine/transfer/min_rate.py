"""A minimum rate for a body: what ends a drip that never lets a stall timeout fire.

A stall timeout restarts on every byte, so a server sending one byte every few seconds held a
request for ever. :class:`RateFloor` asks instead that over each window of ``window`` seconds
the body average at least ``rate`` bytes per second. Pure and cheap: no timer, no task; the
caller passes its clock (the event loop's, or ``time.monotonic`` on a pump thread) with each
arrival, and the check is a subtraction and a comparison.

Windows are measured between arrivals: one starts at an arrival and ends at the first arrival
at least ``window`` seconds later, when its bytes are compared with ``rate`` times its length.
A silence longer than the window is the stall timeout's to end, so a too-slow body ends within
``window`` plus ``stall`` seconds.
"""

from __future__ import annotations

__all__ = ["RateFloor", "TooSlow"]


class TooSlow(Exception):
    """The body fell below the minimum rate (callers translate it to ``SlowBodyError``)."""


class RateFloor:
    """At least ``rate`` bytes/s over every ``window`` seconds of one body."""

    __slots__ = ("_bytes", "_start", "rate", "window")

    def __init__(self, rate: float, window: float, now: float) -> None:
        self.rate = rate
        self.window = window
        self._start = now
        self._bytes = 0

    def feed(self, n: int, now: float) -> None:
        """``n`` bytes arrived at ``now``; raises :class:`TooSlow` if the window that just ended
        carried fewer than ``rate`` per second."""
        self._bytes += n
        elapsed = now - self._start
        if elapsed >= self.window:
            if self._bytes < self.rate * elapsed:
                raise TooSlow(
                    f"{self._bytes} bytes in {elapsed:.1f} s, below the minimum rate of "
                    f"{self.rate:g} bytes/s (transfer.timeouts.min_rate)"
                )
            self._start = now
            self._bytes = 0


def rate_floor(rate: float, window: float, now: float) -> RateFloor | None:
    """A floor for a body starting at ``now``, or None when the minimum rate is off (0)."""
    return RateFloor(rate, window, now) if rate > 0 else None
