"""engine.transfer.ranges: segment plans, Range headers and Content-Range checks."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.transfer.ranges import (
    ContentRange,
    RangeMismatch,
    SegmentProgress,
    check_partial_response,
    contiguous_prefix,
    parse_content_range,
    plan_segments,
    range_header,
)

sizes = st.integers(min_value=0, max_value=2**40)
segment_sizes = st.integers(min_value=1, max_value=2**34)


@given(size=sizes, segment_size=segment_sizes)
def test_plan_covers_the_object_exactly_once_in_order(size: int, segment_size: int) -> None:
    # Keep the number of pieces small enough to list.
    segment_size = max(segment_size, size // 10_000 + 1)
    plan = plan_segments(size, segment_size)
    pieces = list(plan)
    assert len(plan) == len(pieces) == -(-size // segment_size)
    position = 0
    for start, stop in pieces:
        assert start == position
        assert 0 < stop - start <= segment_size
        position = stop
    assert position == size
    assert all(stop - start == segment_size for start, stop in pieces[:-1])
    # Indexing (from either end) and slicing agree with the walk.
    assert [plan[i] for i in range(len(plan))] == pieces
    assert [plan[i - len(plan)] for i in range(len(plan))] == pieces
    assert plan[1:-1] == pieces[1:-1] and plan[::3] == pieces[::3]
    assert [plan.length(i) for i in range(len(plan))] == [b - a for a, b in pieces]
    # A later process rebuilds the same plan from the sidecar's two numbers.
    assert plan_segments(size, segment_size) == plan
    assert hash(plan_segments(size, segment_size)) == hash(plan)


@given(size=st.integers(0, 10_000), seg_a=st.integers(1, 20_000), seg_b=st.integers(1, 20_000))
def test_plans_are_equal_when_their_pieces_are(size: int, seg_a: int, seg_b: int) -> None:
    a, b = plan_segments(size, seg_a), plan_segments(size, seg_b)
    assert (a == b) == (list(a) == list(b))
    if a == b:
        assert hash(a) == hash(b)


@given(
    size=st.integers(0, 9_999_999_999_999_999_999),  # any size Content-Range can announce
    segment_size=st.integers(1, 2**40),
    data=st.data(),
)
def test_a_plan_costs_the_same_whatever_the_claimed_size(
    size: int, segment_size: int, data: st.DataObject
) -> None:
    # A 206 once announced 10**18 bytes and the plan, a list, ran out of memory: the plan is
    # arithmetic, a few integers, and any piece is found without walking to it.
    tracemalloc.start()
    try:
        plan = plan_segments(size, segment_size)
        count = plan.pieces
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4096
    assert count == -(-size // segment_size)
    if count:
        index = data.draw(st.integers(0, count - 1))
        start, stop = plan[index]
        assert start == index * segment_size
        assert stop == min(start + segment_size, size)
        assert plan[-1][1] == size
        with pytest.raises(IndexError):
            plan[count]


def test_plan_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="segment_size"):
        plan_segments(10, 0)
    with pytest.raises(ValueError, match="size"):
        plan_segments(-1, 4)
    assert list(plan_segments(0, 4)) == []
    assert len(plan_segments(0, 4)) == 0


# -- progress per piece ------------------------------------------------------------------------

# One step: add bytes to a piece (as a fraction of what it misses), or empty everything.
_steps = st.lists(
    st.one_of(
        st.tuples(st.integers(0, 10_000), st.floats(0.0, 1.0)),
        st.just(("clear", 0.0)),
    ),
    max_size=80,
)


@given(size=st.integers(0, 5_000), segment_size=st.integers(1, 700), steps=_steps)
def test_progress_matches_a_list_of_counts(
    size: int, segment_size: int, steps: list[tuple[int | str, float]]
) -> None:
    plan = plan_segments(size, segment_size)
    progress = SegmentProgress(plan)
    model = [0] * len(plan)
    touched = -1  # the furthest piece given bytes since the last clear
    for where, share in steps:
        if where == "clear" or not model:
            progress.clear()
            model = [0] * len(plan)
            touched = -1
        else:
            assert isinstance(where, int)
            index = where % len(model)
            n = int((plan.length(index) - model[index]) * share)
            assert progress.add(index, n) == model[index] + n
            model[index] += n
            if n:
                touched = max(touched, index)
        assert [progress[i] for i in range(len(plan))] == model
        assert progress.total == sum(model)
        assert progress.pending() == sum(got < plan.length(i) for i, got in enumerate(model))
        assert progress.prefix() == contiguous_prefix(plan, model)
        first_missing = next((i for i, got in enumerate(model) if got < plan.length(i)), len(model))
        assert progress.floor == first_missing
        # Memory: only pieces from the floor to the furthest touched have an entry.
        entries = progress.entries()
        assert entries == [(i, got) for i, got in enumerate(model) if i >= first_missing and got]
        assert len(entries) <= max(0, touched - progress.floor + 1)
    # A sidecar's counts rebuild the same progress.
    again = SegmentProgress(plan, enumerate(model))
    assert [again[i] for i in range(len(plan))] == model and again.floor == progress.floor


@given(size=st.integers(1, 5_000), segment_size=st.integers(1, 700), data=st.data())
def test_progress_refuses_more_than_a_piece_holds(
    size: int, segment_size: int, data: st.DataObject
) -> None:
    plan = plan_segments(size, segment_size)
    progress = SegmentProgress(plan)
    index = data.draw(st.integers(0, len(plan) - 1))
    with pytest.raises(ValueError, match="cannot hold"):
        progress.add(index, plan.length(index) + 1)
    with pytest.raises(ValueError, match="cannot hold"):
        progress.add(index, -1)
    assert progress.total == 0


def test_progress_of_a_huge_plan_stays_small() -> None:
    # Two workers through the first pieces of a plan of 10**18 one-byte pieces, the second
    # piece of each pair finishing first: what is held is the piece ahead of the slowest.
    plan = plan_segments(10**18, 1)
    progress = SegmentProgress(plan)
    for index in range(0, 1000, 2):
        progress.add(index + 1, 1)
        assert progress.entries() == [(index + 1, 1)]
        progress.add(index, 1)
        assert progress.entries() == []
    assert progress.floor == 1000 == progress.prefix() == progress.total
    assert progress.pending() == len(plan) - 1000


@given(start=st.integers(0, 2**50), length=st.integers(1, 2**40))
def test_range_header_is_inclusive(start: int, length: int) -> None:
    assert range_header(start, start + length) == f"bytes={start}-{start + length - 1}"
    assert range_header(start, None) == f"bytes={start}-"
    header = range_header(start, start + length)
    parsed = parse_content_range(header.replace("bytes=", "bytes ") + f"/{start + length}")
    assert parsed == ContentRange(start, start + length, start + length)


@pytest.mark.parametrize(("start", "stop"), [(-1, 5), (5, 5), (6, 5)])
def test_range_header_rejects_empty_ranges(start: int, stop: int) -> None:
    with pytest.raises(ValueError, match="range"):
        range_header(start, stop)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes 0-99/1000", ContentRange(0, 100, 1000)),
        ("bytes 900-999/1000", ContentRange(900, 1000, 1000)),
        ("bytes 0-0/1", ContentRange(0, 1, 1)),
        ("bytes 5-9/*", ContentRange(5, 10, None)),
        ("bytes */1000", ContentRange(None, None, 1000)),
        ("  bytes 1-2/3 ", ContentRange(1, 3, 3)),
        ("bytes */*", None),
        ("bytes 9-5/100", None),
        ("bytes 0-100/100", None),  # ends past the object
        ("bytes=0-99/1000", None),
        ("items 0-1/2", None),
        ("bytes 0-99", None),
        ("bytes -5-10/20", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_content_range(value: str | None, expected: ContentRange | None) -> None:
    assert parse_content_range(value) == expected


@given(st.text(max_size=60))
def test_parse_content_range_never_raises(value: str) -> None:
    parsed = parse_content_range(value)
    if parsed is not None and parsed.start is not None:
        assert parsed.stop is not None and parsed.stop > parsed.start


@given(
    total=st.integers(1, 2**40),
    data=st.data(),
)
def test_check_accepts_the_asked_range_or_a_prefix(total: int, data: st.DataObject) -> None:
    start = data.draw(st.integers(0, total - 1))
    stop = data.draw(st.integers(start + 1, total))
    got_stop = data.draw(st.integers(start + 1, stop))
    value = f"bytes {start}-{got_stop - 1}/{total}"
    assert check_partial_response(value, got_stop - start, start=start, stop=stop, total=total) == (
        start,
        got_stop,
    )
    assert check_partial_response(value, None, start=start, stop=stop, total=None) == (
        start,
        got_stop,
    )


@given(
    total=st.integers(2, 2**40),
    data=st.data(),
)
def test_check_refuses_anything_else(total: int, data: st.DataObject) -> None:
    start = data.draw(st.integers(0, total - 2))
    stop = data.draw(st.integers(start + 1, total - 1))
    wrong_start = data.draw(st.integers(0, total - 1).filter(lambda s: s != start))
    length = stop - start
    bad = [
        (f"bytes {wrong_start}-{total - 1}/{total}", None, total),  # another place
        (f"bytes {start}-{stop}/{total}", None, total),  # one byte more than asked
        (f"bytes {start}-{stop - 1}/{total + 1}", None, total),  # the object changed size
        (f"bytes {start}-{stop - 1}/{total}", length + 1, total),  # lengths disagree
        (f"bytes */{total}", None, total),
        ("garbage", None, total),
        (None, length, total),
    ]
    for value, content_length, expected_total in bad:
        with pytest.raises(RangeMismatch):
            check_partial_response(
                value, content_length, start=start, stop=stop, total=expected_total
            )


@given(size=st.integers(0, 10_000), segment_size=st.integers(1, 3_000), data=st.data())
def test_contiguous_prefix(size: int, segment_size: int, data: st.DataObject) -> None:
    plan = plan_segments(size, segment_size)
    done = [data.draw(st.integers(0, stop - start)) for start, stop in plan]
    prefix = contiguous_prefix(plan, done)
    # Brute force: the first byte not on disk.
    on_disk = bytearray(size)
    for (start, _), got in zip(plan, done, strict=True):
        on_disk[start : start + got] = b"\1" * got
    expected = on_disk.find(0)
    assert prefix == (size if expected == -1 else expected)
