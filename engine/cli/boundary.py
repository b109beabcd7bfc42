"""Whatever ends a command, its user gets one line on stderr and a documented exit code.

Every subcommand runs inside :func:`guarded` (the command group's ``invoke`` wraps them all),
so no command needs its own ``try``: an :class:`~engine.errors.EngineError` becomes its one-line
message and exit code, a closed stdout (``| head``) a quiet exit, and anything else, a bug, one
line ``internal error: TYPE: message`` with exit 1 and the traceback only under ``-vv``. With
``--json`` the command's one JSON object is printed whatever happened.

The options that change how an ending is reported (``--json``, ``-v``) record themselves in the
click context's ``meta`` (shared by a group and its subcommands) as they are parsed, so the
boundary knows them even when the command never started.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import click

from engine.errors import EngineError, Interrupted, primary_error
from engine.safe_text import safe_message

__all__ = [
    "EXIT_BROKEN_PIPE",
    "OutputState",
    "emit_json",
    "guarded",
    "json_option",
    "output_state",
    "verbose_option",
]

F = TypeVar("F", bound=Callable[..., Any])

# What a shell reports for a tool killed by SIGPIPE (128 + 13): `yes | head -1` under pipefail.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
_META_KEY = "assetsync.output"


@dataclass(slots=True)
class OutputState:
    """How the running command reports: filled in by its options as click parses them."""

    json: bool = False
    verbosity: int = 0
    json_printed: bool = False


def output_state(ctx: click.Context | None = None) -> OutputState:
    context = ctx if ctx is not None else click.get_current_context()
    state = context.meta.get(_META_KEY)
    if not isinstance(state, OutputState):
        state = OutputState()
        context.meta[_META_KEY] = state
    return state


def _remember_json(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    output_state(ctx).json = bool(value)
    return value


def _remember_verbosity(ctx: click.Context, param: click.Parameter, value: int) -> int:
    output_state(ctx).verbosity = int(value or 0)
    return value


def json_option(help: str) -> Callable[[F], F]:
    """``--json`` (as ``json_output``), known to the boundary as soon as it is parsed."""
    return click.option(
        "--json",
        "json_output",
        is_flag=True,
        help=help,
        callback=_remember_json,
    )


def verbose_option() -> Callable[[F], F]:
    """``-v`` / ``-vv`` (as ``verbose``); ``-vv`` also shows an internal error's traceback."""
    return click.option(
        "-v",
        "--verbose",
        count=True,
        help="More log output (-vv for debug).",
        callback=_remember_verbosity,
    )


def emit_json(payload: dict[str, Any]) -> None:
    """The command's one JSON object on stdout (the boundary then prints no error object)."""
    click.echo(json.dumps(payload, sort_keys=True))
    with contextlib.suppress(RuntimeError):  # outside a click context (a library caller)
        output_state().json_printed = True


def _reader_gone(fd: int) -> bool:
    """Whether ``fd`` is a pipe or socket whose reader has gone (POLLERR/POLLHUP on it)."""
    try:
        poller = select.poll()
        poller.register(fd, 0)  # error conditions are always reported
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError):
        return False


def _is_closed_output(error: BaseException) -> bool:
    # A broken pipe from a socket is not ours to hide: only our own output's reader leaving is.
    if not (isinstance(error, OSError) and error.errno == errno.EPIPE):
        return False
    return any(_reader_gone(stream.fileno()) for stream in _std_streams())


def _std_streams() -> Iterator[Any]:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.fileno()
            yield stream


def _quiet_exit_for_closed_output() -> NoReturn:
    # The Python documentation's recipe: point stdout at /dev/null so the interpreter's final
    # flush does not fail (and complain) a second time.
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            if _reader_gone(stream.fileno()):
                os.dup2(devnull, stream.fileno())
    os.close(devnull)
    sys.exit(EXIT_BROKEN_PIPE)


def _say(line: str) -> None:
    """Write to stderr; a stderr that is gone must not turn an error into a traceback."""
    with contextlib.suppress(OSError, ValueError):
        click.echo(line, err=True)


def _report(state: OutputState, message: str, code: int, outcome: str) -> NoReturn:
    message = safe_message(message)
    if state.json and not state.json_printed:
        # A scheduler reading --json gets one object whatever happened.
        with contextlib.suppress(OSError, ValueError):
            emit_json({"outcome": outcome, "error": message, "exit_code": code})
    _say(f"assetsync: error: {message}")
    sys.exit(code)


def _show_traceback(error: BaseException) -> None:
    text = "".join(traceback.format_exception(error))
    _say("\n".join(safe_message(line) for line in text.rstrip("\n").split("\n")))


def _flush_stdout() -> None:
    with contextlib.suppress(ValueError, AttributeError):
        sys.stdout.flush()


@contextlib.contextmanager
def guarded(ctx: click.Context) -> Iterator[None]:
    """Run a command; turn whatever ends it into the documented line and exit code."""
    state = output_state(ctx)
    try:
        try:
            yield
        finally:
            # Output still buffered must meet a closed pipe here, not at interpreter exit.
            _flush_stdout()
    except (SystemExit, click.exceptions.Exit, click.ClickException, click.Abort):
        raise  # a chosen exit code, or click's own usage errors (exit 2)
    except BaseException as exc:
        error = primary_error(exc)
        if _is_closed_output(error):
            _quiet_exit_for_closed_output()
        if isinstance(error, KeyboardInterrupt):
            # SIGINT before the event loop took over the signal (start-up, settings).
            _report(state, "interrupted by SIGINT", 128 + signal.SIGINT, "interrupted")
        if isinstance(error, Interrupted):
            _report(state, str(error), error.code, "interrupted")
        if isinstance(error, EngineError):
            _report(state, str(error), error.exit_code, "error")
        if state.verbosity >= 2:
            _show_traceback(error)
        name = type(error).__name__
        detail = str(error)
        _report(
            state,
            f"internal error: {name}: {detail}" if detail else f"internal error: {name}",
            1,
            "error",
        )
