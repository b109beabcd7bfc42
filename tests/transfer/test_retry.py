"""engine.transfer.retry: backoff with full jitter, Retry-After, budget reset by bytes kept."""

from __future__ import annotations

import random
from email.utils import formatdate

from hypothesis import given
from hypothesis import strategies as st

from engine.backoff import parse_retry_after
from engine.settings import RetryPolicy
from engine.transfer.retry import Backoff

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


# One attempt: the bytes of the piece on disk after each of its writes (they may start below
# what an earlier attempt reached: a restart from zero), and whether it ended for being slow.
attempts_strategy = st.lists(
    st.tuples(st.lists(st.integers(0, 50), max_size=4), st.booleans()), max_size=60
)


@given(policy=policies, start=st.integers(0, 50), attempts=attempts_strategy)
def test_only_bytes_kept_beyond_the_most_ever_kept_reset_the_budget(
    policy: RetryPolicy, start: int, attempts: list[tuple[list[int], bool]]
) -> None:
    # The rule, restated plainly: a failed attempt made progress if it was not slow and kept
    # more bytes than any earlier attempt (slow ones included) or the resume it started from.
    # Giving up happens at the failure that makes `policy.attempts` in a row without progress.
    backoff = Backoff(policy, random.Random(2), kept=start)
    most = start
    in_a_row = 0
    for kept_during, slow in attempts:
        for total in kept_during:
            backoff.kept(total)
        reached = max(kept_during, default=0)
        progressed = not slow and reached > most
        most = max(most, reached)
        in_a_row = 1 if progressed else in_a_row + 1
        delay = backoff.next_delay(progress=not slow)
        if in_a_row >= policy.attempts:
            assert delay is None
            return
        assert delay is not None


@given(policy=policies, cut_at=st.integers(1, 10**9))
def test_a_body_cut_at_the_same_place_on_every_restart_spends_the_budget(
    policy: RetryPolicy, cut_at: int
) -> None:
    # A server ignoring Range cuts the body at the same byte every time: each attempt starts
    # from zero and keeps `cut_at` bytes. Only the first gets further than before.
    backoff = Backoff(policy, random.Random(3))
    tries = 0
    while True:
        tries += 1
        assert tries <= policy.attempts, "the budget never ran out"
        for total in range(0, cut_at + 1, max(1, cut_at // 5)):
            backoff.kept(total)
        backoff.kept(cut_at)
        if backoff.next_delay() is None:
            break
    assert tries == policy.attempts


@given(policy=policies, drip=st.integers(1, 100))
def test_a_drip_ended_as_too_slow_spends_the_budget_though_it_keeps_bytes(
    policy: RetryPolicy, drip: int
) -> None:
    # Each attempt resumes where the last stopped and keeps a few more bytes before the
    # minimum rate ends it: new bytes every time, and still no progress.
    backoff = Backoff(policy, random.Random(4))
    kept = 0
    for _ in range(policy.attempts - 1):
        kept += drip
        backoff.kept(kept)
        assert backoff.next_delay(progress=False) is not None
    kept += drip
    backoff.kept(kept)
    assert backoff.next_delay(progress=False) is None


def test_parse_retry_after() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("5", now) == 5.0
    assert parse_retry_after(" 0.25 ", now) == 0.25
    assert parse_retry_after("-3", now) == 0.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now) == 30.0
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now) == 0.0
    for bad in (None, "", "soon", "nan", "inf", "Mon, 99 Foo 2026"):
        assert parse_retry_after(bad, now) is None


def test_retry_after_dates_without_a_zone_are_gmt() -> None:
    """RFC 9110: a recipient accepts all three HTTP-date formats; asctime's has no zone and is
    GMT. (The API client read it as local time, the transfer core refused it.)"""
    now = 784111777.0 - 30  # Sun, 06 Nov 1994 08:49:37 GMT, less 30 s
    assert parse_retry_after("Sun Nov  6 08:49:37 1994", now) == 30.0
    assert parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now) == 30.0
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now) == 30.0


@given(st.text(max_size=40), st.floats(0, 4e9))
def test_parse_retry_after_never_raises(value: str, now: float) -> None:
    got = parse_retry_after(value, now)
    assert got is None or got >= 0.0
