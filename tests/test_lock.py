"""engine.pipeline.lock: real processes contending for DEST/.assetsync/lock."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import LockHeldError, UsageError
from engine.pipeline.lock import DestLock, LockInfo, read_holder

HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from engine.errors import EngineError
    from engine.pipeline.lock import DestLock
    try:
        lock = DestLock(Path(sys.argv[1]), stale_after=float(sys.argv[2]))
        lock.acquire()
    except EngineError as exc:
        print(exc, file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)
    print("locked", flush=True)
    sys.stdin.read()  # hold until the test closes our stdin
    lock.release()
    """
)


def start(dest: Path, stale_after: float = 3600.0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(dest), str(stale_after)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def wait_locked(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "locked":
        _, err = proc.communicate()
        pytest.fail(f"holder did not lock: {line!r} {err!r}")


def boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def write_record(dest: Path, *, pid: int, host: str, boot: str | None, age: float) -> Path:
    state = dest / ".assetsync"
    state.mkdir(parents=True, exist_ok=True)
    path = state / "lock"
    started = time.time() - age
    record = {"pid": pid, "host": host, "boot_id": boot, "started_at": started}
    path.write_text(json.dumps(record) + "\n")
    os.utime(path, (started, started))
    return path


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_second_process_gets_lock_held_error_then_the_lock(tmp_path: Path, procs) -> None:
    holder = start(tmp_path)
    procs.append(holder)
    wait_locked(holder)

    contender = start(tmp_path)
    procs.append(contender)
    _, err = contender.communicate(timeout=60)
    assert contender.returncode == LockHeldError.exit_code == 4
    message = err.strip()
    assert "\n" not in message
    assert f"pid {holder.pid}" in message
    assert "since " in message
    assert str(tmp_path) in message

    holder.communicate(input="", timeout=60)  # clean release
    assert holder.returncode == 0
    assert read_holder(tmp_path) is None  # release empties the record
    with DestLock(tmp_path) as lock:
        assert lock.held


def test_sigkilled_holder_releases(tmp_path: Path, procs) -> None:
    holder = start(tmp_path)
    procs.append(holder)
    wait_locked(holder)
    recorded = read_holder(tmp_path)
    assert recorded is not None
    assert recorded.pid == holder.pid

    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=60)
    # The record is still there (nobody cleaned up), but the kernel dropped the flock.
    assert read_holder(tmp_path) is not None
    with DestLock(tmp_path, stale_after=10**6) as lock:
        assert lock.info is not None
        assert lock.info.pid == os.getpid()
        assert read_holder(tmp_path) == LockInfo(
            pid=os.getpid(),
            host=lock.info.host,
            boot_id=lock.info.boot_id,
            started_at=lock.info.started_at,
            heartbeat=(tmp_path / ".assetsync" / "lock").stat().st_mtime,
        )


def test_two_locks_in_one_process_conflict(tmp_path: Path) -> None:
    with DestLock(tmp_path), pytest.raises(LockHeldError, match=f"pid {os.getpid()}"):
        DestLock(tmp_path).acquire()
    again = DestLock(tmp_path)
    again.acquire()  # free again
    again.release()


def test_dead_pid_on_this_kernel_is_reclaimed_whatever_its_age(tmp_path: Path) -> None:
    write_record(tmp_path, pid=dead_pid(), host=socket.gethostname(), boot=boot_id(), age=1)
    with DestLock(tmp_path, stale_after=3600) as lock:
        assert lock.info is not None
        assert lock.info.pid == os.getpid()


def test_other_host_with_fresh_heartbeat_is_respected(tmp_path: Path) -> None:
    # flock is free (not shared across hosts on some NFS mounts) but the record is fresh.
    write_record(tmp_path, pid=4242, host="elsewhere", boot="other-boot", age=60)
    with pytest.raises(LockHeldError) as info:
        DestLock(tmp_path, stale_after=3600).acquire()
    assert "pid 4242 on elsewhere since" in str(info.value)
    assert read_holder(tmp_path) is not None  # untouched
    assert read_holder(tmp_path).pid == 4242  # type: ignore[union-attr]


def test_other_host_stale_is_reclaimed(tmp_path: Path) -> None:
    write_record(tmp_path, pid=4242, host="elsewhere", boot="other-boot", age=7200)
    with DestLock(tmp_path, stale_after=3600) as lock:
        assert lock.info is not None
        assert read_holder(tmp_path).pid == os.getpid()  # type: ignore[union-attr]


def test_same_host_before_reboot_is_reclaimed(tmp_path: Path) -> None:
    if boot_id() is None:
        pytest.skip("no boot id on this system")
    write_record(tmp_path, pid=1, host=socket.gethostname(), boot="previous-boot", age=1)
    with DestLock(tmp_path, stale_after=3600):
        pass


def test_heartbeat_keeps_a_long_run_fresh(tmp_path: Path) -> None:
    lock = DestLock(tmp_path, stale_after=3600)
    lock.acquire()
    try:
        path = tmp_path / ".assetsync" / "lock"
        os.utime(path, (1_000_000, 1_000_000))
        lock.touch()
        assert path.stat().st_mtime > 1_000_000
    finally:
        lock.release()
    lock.release()  # twice is fine


def test_garbage_record_is_ignored(tmp_path: Path) -> None:
    state = tmp_path / ".assetsync"
    state.mkdir()
    (state / "lock").write_bytes(b"\x00not json\xff")
    with DestLock(tmp_path):
        pass


def test_never_writes_outside_dest(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    outside = tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (dest / ".assetsync").symlink_to(outside)
    with pytest.raises(UsageError, match="symlink"):
        DestLock(dest).acquire()
    assert list(outside.iterdir()) == []

    (dest / ".assetsync").unlink()
    (dest / ".assetsync").mkdir()
    target = outside / "victim"
    target.write_text("keep")
    (dest / ".assetsync" / "lock").symlink_to(target)
    with pytest.raises(UsageError, match="symlink"):
        DestLock(dest).acquire()
    assert target.read_text() == "keep"
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]


def test_bad_destinations(tmp_path: Path) -> None:
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        DestLock(afile).acquire()
    with pytest.raises(UsageError, match="does not exist"):
        DestLock(tmp_path / "missing", create=False).acquire()
    with pytest.raises(UsageError):
        DestLock(afile / "below").acquire()
    with DestLock(tmp_path / "new" / "dest"):  # created on demand
        assert (tmp_path / "new" / "dest" / ".assetsync" / "lock").is_file()
