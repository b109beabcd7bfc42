"""engine.transfer.ranges: segment plans, Range headers and Content-Range checks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.transfer.ranges import (
    ContentRange,
    RangeMismatch,
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
    assert len(plan) == -(-size // segment_size)
    position = 0
    for start, stop in plan:
        assert start == position
        assert 0 < stop - start <= segment_size
        position = stop
    assert position == size
    assert all(stop - start == segment_size for start, stop in plan[:-1])
    assert plan_segments(size, segment_size) == plan  # a later process rebuilds the same plan


def test_plan_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="segment_size"):
        plan_segments(10, 0)
    with pytest.raises(ValueError, match="size"):
        plan_segments(-1, 4)
    assert plan_segments(0, 4) == []


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
