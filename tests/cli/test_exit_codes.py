"""Every row of the exit-code table, as cron and people meet it: the default output mode (no
``-q``), through a pipe and through a terminal, and with ``--json``.

Each case asserts the exit code, a short message naming the cause, no traceback anywhere, and
(for runs refused before the platform answered, or by it) that nothing was created on disk.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engine.emulator import Emulator, FaultRule
from engine.pipeline.lock import DestLock
from tests.cli.helpers import (
    ASSETSYNC,
    PtyRun,
    Result,
    closed_port,
    env_for,
    run_pipe,
    run_pty,
    unwritable_prefix,
    wait_for,
)

pytestmark = pytest.mark.slow

MODES = ("pipe", "pty", "json")


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(assets=12, seed=71, large_share=0.0, max_size=16 * 1024).in_thread() as running:
        yield running


@dataclass
class Case:
    """One way a run ends: what to run, and what the user must get."""

    args: list[str]
    env: dict[str, str]
    dest: Path
    prefix: list[str] = field(default_factory=list)
    creates_nothing: bool = True  # refused before anything was created under DEST's parent


def _args(emu: Emulator, dest: Path, *more: str, api_url: str | None = None) -> list[str]:
    return [
        *ASSETSYNC,
        "mirror",
        "--api-url",
        api_url or emu.api_url,
        "--dataset-version",
        emu.dataset_version_id,
        "--dest",
        str(dest),
        *more,
    ]


def _no_token(emu: Emulator, tmp: Path, stack: ExitStack) -> Case:
    dest = tmp / "d"
    return Case(_args(emu, dest), env_for(None), dest)


def _bad_config(emu: Emulator, tmp: Path, stack: ExitStack) -> Case:
    config = tmp / "c.toml"
    config.write_text("= nope")
    dest = tmp / "d"
    return Case(_args(emu, dest, "--config", str(config)), env_for(emu.token), dest)


def _unknown_version(emu: Emulator, tmp: Path, stack: ExitStack) -> Case:
    dest = tmp / "d"
    args = _args(emu, dest, "--dataset-version", "00000000-0000-0000-0000-000000000000")
    return Case(args, env_for(emu.token), dest)


def _unknown_tag(emu: Emulator, tmp: Path, stack: ExitStack) -> Case:
    dest = tmp / "d"
    return Case(_args(emu, dest, "--tag", "nosuchtag"), env_for(emu.token), dest)


def _dest_regular_file(emu: Emulator, tmp: Path, stack: ExitStack) -> Case:
    dest = tmp / "d"
    dest.write_text("precious")
    return Case(_args(emu, dest), env_for(emu.token), dest, creates_nothing=False)


def _dest_under_a_file(emu: Emulator, tmp: Path, stack: ExitStack) -> Case:
    parent = tmp / "file"
    parent.write_text("precious")
    dest = parent / "d"
    return Case(_args(emu, dest), env_for(emu.token), dest, creates_nothing=False)


def _dest_unwritable(emu: Emulator, tmp: Path, stack: ExitStack) -> Case:
    parent = tmp / "readonly"
    parent.mkdir()
    stack.callback(parent.chmod, 0o755)
    prefix = unwritable_prefix(parent)
    if prefix is None:
        pytest.skip("running as root without setpriv: no way to make a folder unwritable")
    dest = parent / "d"
    return Case(_args(emu, dest), env_for(emu.token), dest, prefix=prefix)


def _wrong_token(emu: Emulator, tmp: Path, stack: ExitStack) -> Case:
    dest = tmp / "d"
    return Case(_args(emu, dest), env_for("not-the-token"), dest)


def _lock_held(emu: Emulator, tmp: Path, stack: ExitStack) -> Case:
    dest = tmp / "d"
    dest.mkdir()
    stack.enter_context(DestLock(dest))
    return Case(_args(emu, dest), env_for(emu.token), dest, creates_nothing=False)


def _unreachable_api(emu: Emulator, tmp: Path, stack: ExitStack) -> Case:
    dest = tmp / "d"
    api_url = f"http://127.0.0.1:{closed_port()}"
    return Case(_args(emu, dest, api_url=api_url), env_for(emu.token), dest)


def _assets_failed(emu: Emulator, tmp: Path, stack: ExitStack) -> Case:
    victim = sorted(emu.dataset.asset_ids())[0]
    rule = emu.faults.add(
        FaultRule(
            target="storage",
            kind="status",
            status=404,
            data_id=emu.dataset.expected(victim).data_id,
        )
    )
    stack.callback(emu.faults.remove, rule)
    dest = tmp / "d"
    return Case(_args(emu, dest), env_for(emu.token), dest, creates_nothing=False)


# (case, exit code, fragment of the message, builder)
CASES: list[tuple[str, int, str, Callable[[Emulator, Path, ExitStack], Case]]] = [
    ("no token", 2, "no API token", _no_token),
    ("bad config", 2, "not valid TOML", _bad_config),
    ("unknown version", 2, "not found", _unknown_version),
    ("unknown tag", 2, 'unknown asset tag "nosuchtag"', _unknown_tag),
    ("DEST a regular file", 2, "not a directory", _dest_regular_file),
    ("DEST under a regular file", 2, "is not a directory", _dest_under_a_file),
    ("DEST unwritable", 2, "not writable", _dest_unwritable),
    ("wrong token", 3, "refused the token", _wrong_token),
    ("lock held", 4, "holds the lock", _lock_held),
    ("unreachable API", 1, "Cannot connect", _unreachable_api),
    ("some assets failed", 1, "object not found", _assets_failed),
]


def _run(mode: str, case: Case) -> Result:
    if mode == "pty":
        return run_pty(case.args, case.env, prefix=case.prefix)
    args = [*case.args, "--json"] if mode == "json" else case.args
    return run_pipe(args, case.env, prefix=case.prefix)


def _assert_no_traceback(result: Result) -> None:
    assert "Traceback" not in result.output, result.output
    assert "ExceptionGroup" not in result.output, result.output


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("name", "code", "fragment", "build"), CASES, ids=[c[0] for c in CASES])
def test_each_exit_code_in_each_output_mode(
    emu: Emulator,
    tmp_path: Path,
    mode: str,
    name: str,
    code: int,
    fragment: str,
    build: Callable[[Emulator, Path, ExitStack], Case],
) -> None:
    with ExitStack() as stack:
        case = build(emu, tmp_path, stack)
        before = sorted(p.name for p in tmp_path.iterdir())
        result = _run(mode, case)
        after = sorted(p.name for p in tmp_path.iterdir())
    assert result.code == code, result.output
    _assert_no_traceback(result)
    if name == "some assets failed":
        failed = [line for line in result.lines() if line.strip().startswith("failed:")]
        if mode == "json":
            summary = json.loads(result.stdout)
            assert summary["exit_code"] == 1 and summary["failed"] == 1
            assert fragment in summary["failures"][0]["error"]
        else:
            assert len(failed) == 1 and fragment in failed[0], result.output
            assert len(result.lines()) <= 8, result.output  # the summary and a progress line
        return
    lines = result.lines()
    if mode == "json":
        obj = json.loads(result.stdout)  # exactly one object: loads refuses anything more
        assert obj["exit_code"] == code and obj["outcome"] == "error"
        assert fragment in obj["error"]
        lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("assetsync: error:"), result.output
    assert fragment in lines[0]
    if case.creates_nothing:
        assert after == before, "a refused run created something"
        assert not case.dest.exists()
    if name.startswith("DEST a regular"):
        assert case.dest.read_text() == "precious"


@pytest.fixture
def slow_emu() -> Iterator[Emulator]:
    emulator = Emulator(assets=30, seed=73, large_share=0.1, large_size=2 * 1024 * 1024)
    with emulator.in_thread() as running:
        running.faults.add(FaultRule(target="storage", kind="throttle", bytes_per_second=2_000_000))
        yield running


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_in_each_output_mode(
    slow_emu: Emulator, tmp_path: Path, mode: str, signum: int, code: int
) -> None:
    emu = slow_emu
    total = sum(emu.dataset.expected(a).size for a in emu.dataset.asset_ids())
    args = _args(emu, tmp_path / "d")
    env = env_for(emu.token)
    if mode == "pty":
        run = PtyRun(args, env)
        wait_for(lambda: emu.counters.storage_bytes > total * 0.2)
        run.send_signal(signum)
        result = run.wait()
    else:
        import subprocess

        proc = subprocess.Popen(
            [*args, "--json"] if mode == "json" else args,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        try:
            wait_for(lambda: emu.counters.storage_bytes > total * 0.2)
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
            proc.wait()
        result = Result(proc.returncode, out, err)
    assert result.code == code, result.output
    _assert_no_traceback(result)
    name = signal.Signals(signum).name
    errors = [line for line in result.lines() if line.startswith("assetsync: error:")]
    assert len(errors) == 1 and f"stopped by {name}" in errors[0], result.output
    assert len(result.lines()) <= 6, result.output
    if mode == "json":
        obj = json.loads(result.stdout)
        assert (obj["outcome"], obj["exit_code"]) == ("interrupted", code)
