"""``primary_error``: the one rule for what an exception group stands for."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from engine.errors import (
    AuthError,
    DiskFullError,
    LockHeldError,
    ObjectChanged,
    PermanentTransferError,
    TransientTransferError,
    UsageError,
    primary_error,
)


def test_not_a_group_is_itself() -> None:
    error = KeyError("x")
    assert primary_error(error) is error


def test_the_first_engine_error_wins_however_deep() -> None:
    auth = AuthError("refused")
    group = ExceptionGroup(
        "outer",
        [ValueError("came along"), ExceptionGroup("inner", [auth, LockHeldError("held")])],
    )
    assert primary_error(group) is auth


def test_a_bug_surfaces_as_itself() -> None:
    bug = KeyError("page")
    assert primary_error(ExceptionGroup("g", [ExceptionGroup("h", [bug]), OSError()])) is bug


def test_a_cancellation_or_interrupt_keeps_the_group() -> None:
    group = BaseExceptionGroup("g", [ValueError("x"), KeyboardInterrupt()])
    assert primary_error(group) is group
    # ... unless an engine error explains the failure.
    usage = UsageError("bad")
    assert primary_error(BaseExceptionGroup("g", [asyncio.CancelledError(), usage])) is usage


async def test_what_a_task_group_raises() -> None:
    async def fail() -> None:
        raise UsageError("from a task")

    async def nested() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep, 10)
            async with anyio.create_task_group() as inner:
                inner.start_soon(fail)

    with pytest.raises(BaseExceptionGroup) as info:
        await nested()
    error = primary_error(info.value)
    assert isinstance(error, UsageError) and str(error) == "from a task"


def test_what_explains_the_failure_wins_over_what_came_along() -> None:
    """One ranking for every task group (it was the segment downloader's own): the local disk,
    then what no retry fixes, then a changed object, then a transient error."""
    reset = TransientTransferError("reset")
    changed = ObjectChanged("changed")
    gone = PermanentTransferError("404")
    full = DiskFullError("ENOSPC")
    assert primary_error(ExceptionGroup("g", [reset, changed])) is changed
    assert primary_error(ExceptionGroup("g", [reset, changed, gone])) is gone
    assert primary_error(ExceptionGroup("g", [reset, ExceptionGroup("h", [gone, full])])) is full
    # Of two that explain as much, the first.
    auth, held = AuthError("refused"), LockHeldError("held")
    assert primary_error(ExceptionGroup("g", [reset, auth, held])) is auth


def test_a_lone_interrupt_or_generator_exit_is_itself() -> None:
    """A group holding nothing but one BaseException stands for it (a generator closed inside
    a task group's exit must see its GeneratorExit, not a group)."""
    for leaf in (KeyboardInterrupt(), GeneratorExit()):
        assert primary_error(BaseExceptionGroup("g", [leaf])) is leaf
