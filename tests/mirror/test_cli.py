"""The ``assetsync`` command as a process: exit codes, signals, locks, kill and resume."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.emulator import Emulator, FaultRule
from engine.manifest import Manifest
from tests.command import ASSETSYNC, command_env, mirror_command
from tests.mirror.helpers import assert_mirror_matches

pytestmark = pytest.mark.slow


@pytest.fixture
def emu() -> Iterator[Emulator]:
    emulator = Emulator(
        assets=30, seed=51, large_share=0.1, large_size=3 * 1024 * 1024, nasty_filenames=True
    )
    with emulator.in_thread() as running:
        yield running


def _env(token: str | None, **extra: str) -> dict[str, str]:
    return command_env(token, **extra)


def _mirror_args(emu: Emulator, dest: Path, *more: str) -> list[str]:
    return mirror_command(emu, dest, "-q", *more)


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)


def test_success_prints_one_json_summary_and_exits_0(emu: Emulator, tmp_path: Path):
    done = _run(_mirror_args(emu, tmp_path / "d", "--json"), _env(emu.token))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["outcome"] == "ok"
    assert summary["downloaded"] == 30
    assert summary["exit_code"] == 0
    assert emu.token not in done.stdout + done.stderr
    assert_mirror_matches(emu, tmp_path / "d")


@pytest.mark.parametrize(
    ("case", "code", "fragment"),
    [
        ("wrong token", 3, "401"),
        ("no token", 2, "PICSELLIA_TOKEN"),
        ("unknown version", 2, "not found"),
        ("dest is a file", 2, "not a directory"),
        ("concurrency 0", 2, "concurrency"),
        ("bad config", 2, "not valid TOML"),
    ],
)
def test_bad_input_gets_one_line_and_its_exit_code(
    emu: Emulator, tmp_path: Path, case: str, code: int, fragment: str
):
    dest = tmp_path / "d"
    token: str | None = emu.token
    extra: list[str] = []
    if case == "wrong token":
        token = "not-the-token"
    elif case == "no token":
        token = None
    elif case == "unknown version":
        extra = ["--dataset-version", "00000000-0000-0000-0000-000000000000"]
    elif case == "dest is a file":
        dest.write_text("precious")
    elif case == "concurrency 0":
        extra = ["--concurrency", "0"]
    elif case == "bad config":
        config = tmp_path / "c.toml"
        config.write_text("= nope")
        extra = ["--config", str(config)]
    done = _run(_mirror_args(emu, dest, *extra), _env(token))
    assert done.returncode == code, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("assetsync: error:")
    assert fragment in lines[0]
    if case == "dest is a file":
        assert dest.read_text() == "precious"
    if token:
        assert token not in done.stderr


def test_json_error_object_for_schedulers(emu: Emulator, tmp_path: Path):
    done = _run(_mirror_args(emu, tmp_path / "d", "--json"), _env("bad"))
    assert done.returncode == 3
    assert json.loads(done.stdout) == {
        "error": done.stderr.strip().removeprefix("assetsync: error: "),
        "exit_code": 3,
        "outcome": "error",
    }


def _wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def _settle(emu: Emulator) -> None:
    """Wait until storage has stopped sending (every response finished or abandoned)."""
    emu.quiesce_sync()


def _lock_taken(dest: Path) -> bool:
    lock = dest / ".assetsync" / "lock"
    return lock.exists() and lock.stat().st_size > 0


def test_two_concurrent_runs_the_second_exits_4(emu: Emulator, tmp_path: Path):
    dest = tmp_path / "d"
    emu.faults.add(FaultRule(target="storage", kind="throttle", bytes_per_second=3_000_000))
    first = subprocess.Popen(
        _mirror_args(emu, dest),
        env=_env(emu.token),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: _lock_taken(dest))
        second = _run(_mirror_args(emu, dest), _env(emu.token))
        assert second.returncode == 4, second.stderr
        assert f"pid {first.pid}" in second.stderr
        assert first.wait(timeout=120) == 0
    finally:
        first.kill()
        first.wait()
    assert_mirror_matches(emu, dest)


def _committed(dest: Path) -> dict[str, str]:
    with Manifest.open(dest, create=False, read_only=True) as manifest:
        return {r.asset_id: r.data_id for r in manifest.iter_rows() if r.state == "ok"}


def test_sigkill_mid_run_then_rerun_fetches_only_what_is_missing(emu: Emulator, tmp_path: Path):
    dest = tmp_path / "d"
    ids = list(emu.dataset.asset_ids())
    total = sum(emu.dataset.expected(a).size for a in ids)
    emu.faults.add(FaultRule(target="storage", kind="throttle", bytes_per_second=2_000_000))
    victim = subprocess.Popen(
        _mirror_args(emu, dest, "--concurrency", "4", "--no-fsync"),
        env=_env(emu.token),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(lambda: emu.counters.storage_bytes > total * 0.4)
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    assert victim.returncode == -signal.SIGKILL
    committed = _committed(dest)
    assert 0 < len(committed) < len(ids)

    emu.faults.clear()
    _settle(emu)  # responses to the dead client are still draining into the kernel
    emu.counters.reset()
    done = _run(_mirror_args(emu, dest, "--json"), _env(emu.token))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["skipped"] == len(committed)
    assert summary["downloaded"] == len(ids) - len(committed)
    # Committed files cost nothing, and bytes kept in partial files were not fetched again:
    # storage sent exactly the bytes that were missing.
    for asset_id, data_id in committed.items():
        assert emu.counters.storage_bytes_for(data_id) == 0, asset_id
    missing = sum(emu.dataset.expected(a).size for a in ids if a not in committed)
    assert summary["bytes_resumed"] > 0
    assert emu.counters.storage_bytes == missing - summary["bytes_resumed"]
    assert_mirror_matches(emu, dest)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_stop_gracefully_and_the_next_run_completes(
    emu: Emulator, tmp_path: Path, signum: int, code: int
):
    dest = tmp_path / "d"
    ids = list(emu.dataset.asset_ids())
    total = sum(emu.dataset.expected(a).size for a in ids)
    emu.faults.add(FaultRule(target="storage", kind="throttle", bytes_per_second=2_000_000))
    run = subprocess.Popen(
        _mirror_args(emu, dest),
        env=_env(emu.token),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: emu.counters.storage_bytes > total * 0.3)
        run.send_signal(signum)
        _, err = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == code, err
    assert "resumes" in err
    with Manifest.open(dest, create=False, read_only=True) as manifest:
        last = manifest.last_run()
        assert last is not None
        assert last.outcome == "interrupted"
        saved = sum(1 for r in manifest.iter_rows() if r.state == "ok")
    assert saved > 0  # what finished before the signal was committed
    emu.faults.clear()
    done = _run(_mirror_args(emu, dest), _env(emu.token))
    assert done.returncode == 0, done.stderr
    assert_mirror_matches(emu, dest)


def test_status_verify_and_export_commands(emu: Emulator, tmp_path: Path):
    dest = tmp_path / "d"
    assert _run(_mirror_args(emu, dest), _env(emu.token)).returncode == 0
    status = _run([*ASSETSYNC, "status", "--dest", str(dest), "--json"], _env(None))
    assert status.returncode == 0
    info = json.loads(status.stdout)
    assert info["dataset_version"] == emu.dataset_version_id
    assert info["assets"] == 30
    assert info["last_run"]["outcome"] == "ok"

    exported = _run([*ASSETSYNC, "manifest", "export", "--dest", str(dest)], _env(None))
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert {r["asset_id"] for r in rows} == set(emu.dataset.asset_ids())
    as_json = _run(
        [*ASSETSYNC, "manifest", "export", "--dest", str(dest), "--format", "json"], _env(None)
    )
    assert json.loads(as_json.stdout) == rows

    victim = next(r for r in rows if r["size"])
    (dest / victim["path"]).write_bytes(b"\0" * victim["size"])
    verified = _run([*ASSETSYNC, "verify", "--dest", str(dest), "--json"], _env(None))
    assert verified.returncode == 1
    report = json.loads(verified.stdout)
    assert report["problems"] == 1
    assert report["details"][0]["asset_id"] == victim["asset_id"]

    missing = _run([*ASSETSYNC, "status", "--dest", str(tmp_path / "nowhere")], _env(None))
    assert missing.returncode == 2
    assert missing.stderr.startswith("assetsync: error:")


def test_a_failed_asset_is_named_in_one_line_without_secrets_and_exits_1(
    emu: Emulator, tmp_path: Path
):
    dest = tmp_path / "d"
    victim = next(a for a in emu.dataset.asset_ids() if emu.dataset.expected(a).size > 0)
    data_id = emu.dataset.expected(victim).data_id
    emu.faults.add(FaultRule(target="storage", kind="status", status=404, data_id=data_id))
    done = _run(_mirror_args(emu, dest, "-v"), _env(emu.token))
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.strip().startswith("failed:")]
    assert len(lines) == 1
    assert victim in lines[0]
    assert "not found" in lines[0]
    # The URL in the message lost its signature; neither the token nor any signature leaks.
    output = done.stdout + done.stderr
    assert emu.token not in output
    assert "X-Amz-Signature=" not in output.replace("X-Amz-Signature=REDACTED", "")
    summary = json.loads(_run(_mirror_args(emu, dest, "--json"), _env(emu.token)).stdout)
    assert summary["failed"] == 1
    assert summary["failures"][0]["asset_id"] == victim
    assert summary["exit_code"] == 1


def test_demo_mirrors_then_reruns_incrementally(tmp_path: Path):
    """The README's first command: the embedded emulator and a real mirror, twice."""
    args = [*ASSETSYNC, "demo", "--dest", str(tmp_path / "demo"), "--assets", "40", "--json"]
    first = _run(args, _env(None))
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert (summary["outcome"], summary["downloaded"], summary["failed"]) == ("ok", 40, 0)
    again = json.loads(_run(args, _env(None)).stdout)
    assert (again["downloaded"], again["skipped"]) == (0, 40)
