"""engine.transfer.min_rate: the minimum rate a body must keep over each window."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from engine.transfer.min_rate import RateFloor, TooSlow, rate_floor

rates = st.floats(1.0, 1e7)
windows = st.floats(0.01, 120.0)


@given(
    rate=rates,
    window=windows,
    margin=st.floats(1.01, 1000.0),
    chunks=st.lists(st.integers(1, 1 << 20), max_size=300),
)
def test_a_body_at_or_above_the_rate_never_trips(
    rate: float, window: float, margin: float, chunks: list[int]
) -> None:
    # Bytes arriving at a steady pace above the floor, in chunks of any size: each chunk comes
    # when the pace says its last byte is due. No window can look too slow.
    pace = rate * margin
    floor = RateFloor(rate, window, now=0.0)
    received = 0
    for n in chunks:
        received += n
        floor.feed(n, received / pace)


@given(
    rate=rates,
    window=windows,
    per_window=st.integers(1, 1000),
    slowness=st.floats(1.1, 1e6),
)
def test_a_drip_below_the_rate_ends_at_the_first_arrival_after_a_window(
    rate: float, window: float, per_window: int, slowness: float
) -> None:
    # Equal pieces every `gap` seconds, `slowness` times too slow (or one byte each, when even
    # that is too slow): nothing is said while the first window lasts, and the first arrival at
    # or after its end raises. The gap is drawn per window so the loop stays bounded.
    gap = window / per_window
    size = max(1, int(rate * gap / slowness))
    assume(size < rate * gap)
    floor = RateFloor(rate, window, now=0.0)
    k = 1
    while k * gap < window:
        floor.feed(size, k * gap)
        k += 1
    with pytest.raises(TooSlow, match="min_rate"):
        floor.feed(size, k * gap)


@given(
    rate=rates,
    window=windows,
    arrivals=st.lists(st.tuples(st.integers(0, 1 << 20), st.floats(0.0, 1.0)), max_size=100),
)
def test_nothing_trips_before_a_whole_window(
    rate: float, window: float, arrivals: list[tuple[int, float]]
) -> None:
    floor = RateFloor(rate, window, now=5.0)
    times = sorted(5.0 + share * window * 0.999 for _, share in arrivals)
    for (n, _), now in zip(arrivals, times, strict=True):
        floor.feed(n, now)


def test_each_window_starts_where_the_last_ended() -> None:
    floor = RateFloor(100.0, 10.0, now=0.0)
    floor.feed(2000, 10.0)  # 200 B/s over the first window: fine, a new window starts
    floor.feed(500, 15.0)
    with pytest.raises(TooSlow):
        floor.feed(100, 21.0)  # 600 bytes in 11 s: below 100 B/s


def test_zero_turns_it_off() -> None:
    assert rate_floor(0.0, 30.0, 0.0) is None
    assert isinstance(rate_floor(1.0, 30.0, 0.0), RateFloor)
