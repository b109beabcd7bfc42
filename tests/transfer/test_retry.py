"""engine.transfer.retry: backoff with full jitter, Retry-After, budget reset by progress."""

from __future__ import annotations

import random
from email.utils import formatdate

from hypothesis import given
from hypothesis import strategies as st

from engine.settings import RetryPolicy
from engine.transfer.retry import Backoff, parse_retry_after

policies = st.builds(
    RetryPolicy,
    attempts=st.integers(1, 20),
    base_delay=st.floats(0, 5),
    max_delay=st.floats(0, 60),
    max_retry_after=st.floats(0, 300),
)


@given(policy=policies, seed=st.integers(0, 2**32))
def test_delays_are_bounded_and_the_budget_ends(policy: RetryPolicy, seed: int) -> None:
    backoff = Backoff(policy, random.Random(seed))
    delays = []
    while (delay := backoff.next_delay()) is not None:
        delays.append(delay)
        assert len(delays) < policy.attempts
    assert len(delays) == policy.attempts - 1
    for n, delay in enumerate(delays, start=1):
        assert 0.0 <= delay <= min(policy.max_delay, policy.base_delay * 2 ** (n - 1))


@given(policy=policies, retry_after=st.floats(0, 10_000))
def test_retry_after_is_honoured_and_capped(policy: RetryPolicy, retry_after: float) -> None:
    backoff = Backoff(policy, random.Random(0))
    delay = backoff.next_delay(retry_after)
    if policy.attempts == 1:
        assert delay is None
    else:
        assert delay == min(retry_after, policy.max_retry_after)


@given(policy=policies, failures=st.lists(st.booleans(), max_size=200))
def test_progress_resets_the_budget(policy: RetryPolicy, failures: list[bool]) -> None:
    # True = a failure, False = bytes arrived. Giving up happens exactly when `attempts`
    # failures come in a row.
    backoff = Backoff(policy, random.Random(1))
    in_a_row = 0
    for failed in failures:
        if not failed:
            backoff.progress()
            in_a_row = 0
            continue
        in_a_row += 1
        delay = backoff.next_delay()
        if in_a_row >= policy.attempts:
            assert delay is None
            return
        assert delay is not None


def test_parse_retry_after() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("5", now) == 5.0
    assert parse_retry_after(" 0.25 ", now) == 0.25
    assert parse_retry_after("-3", now) == 0.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now) == 30.0
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now) == 0.0
    for bad in (None, "", "soon", "nan", "inf", "Mon, 99 Foo 2026"):
        assert parse_retry_after(bad, now) is None


@given(st.text(max_size=40), st.floats(0, 4e9))
def test_parse_retry_after_never_raises(value: str, now: float) -> None:
    got = parse_retry_after(value, now)
    assert got is None or got >= 0.0
