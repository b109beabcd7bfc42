"""What the command prints for people, and how it ends when nobody reads it.

- a closed stdout (``| head``) ends every command quietly with 141, never in a traceback;
- a dry run says how many files it would download, not "0 B";
- ``assetsync demo`` ends with a command that works from where it ran;
- server-controlled text (storage's XML, file names) cannot drive the terminal;
- an internal error is one line (the traceback only with ``-vv``), and ``--json`` still prints
  its one object.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from engine.emulator import Emulator
from tests.cli.helpers import ASSETSYNC, Result, env_for, run_pipe, run_pty
from tests.command import mirror_command
from tests.hostile.scripted import Conn, ScriptedServer, hostile_storage

pytestmark = pytest.mark.slow

EXIT_BROKEN_PIPE = 141


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(assets=40, seed=81, large_share=0.0, max_size=8 * 1024).in_thread() as running:
        yield running


def _mirror(emu: Emulator, dest: Path, *more: str) -> list[str]:
    return mirror_command(emu, dest, *more)


@pytest.fixture(scope="module")
def mirrored(emu: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("mirrored") / "d"
    done = run_pipe(_mirror(emu, dest, "-q"), env_for(emu.token))
    assert done.code == 0, done.output
    return dest


def _no_reader(args: Sequence[str], env: dict[str, str]) -> Result:
    """Run with a stdout pipe whose reader is gone before the command writes a byte."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            list(args),
            env=env,
            stdout=write_end,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    return Result(done.returncode, "", done.stderr)


def test_dry_run_piped_into_head_ends_quietly(emu: Emulator, tmp_path: Path) -> None:
    command = shlex.join(_mirror(emu, tmp_path / "d", "--dry-run"))
    # The user's pipeline, with pipefail so the shell reports assetsync's own status.
    script = f'set -o pipefail; {command} | head -1; echo "status=${{PIPESTATUS[0]}}" >&2'
    done = subprocess.run(
        ["bash", "-c", script],
        env=env_for(emu.token),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.count("\n") == 1 and done.stdout.startswith("download "), done.stdout
    assert done.stderr.strip() == f"status={EXIT_BROKEN_PIPE}", done.stderr


@pytest.mark.parametrize(
    "command",
    ["mirror", "mirror --dry-run", "status", "verify", "manifest export", "demo", "emulator"],
)
def test_every_command_ends_quietly_when_stdout_is_closed(
    emu: Emulator, mirrored: Path, tmp_path: Path, command: str
) -> None:
    if command.startswith("mirror"):
        args = _mirror(emu, mirrored, *command.split()[1:])
    elif command == "demo":
        args = [*ASSETSYNC, "demo", "--dest", str(tmp_path / "demo"), "--assets", "5"]
    elif command == "emulator":
        args = [*ASSETSYNC, "emulator", "--assets", "3", "--json"]
    else:
        args = [*ASSETSYNC, *command.split(), "--dest", str(mirrored)]
    done = _no_reader(args, env_for(emu.token))
    assert done.code == EXIT_BROKEN_PIPE, done.stderr
    assert "Traceback" not in done.stderr
    assert "Exception ignored" not in done.stderr
    # Whatever went to stderr before stdout failed (the demo's emulator line) is fine; no
    # error was reported for the closed pipe itself.
    assert "error" not in done.stderr.lower(), done.stderr


def test_dry_run_does_not_claim_a_size(emu: Emulator, tmp_path: Path) -> None:
    human = run_pipe(_mirror(emu, tmp_path / "d", "--dry-run"), env_for(emu.token))
    assert human.code == 0, human.output
    counts = [line for line in human.lines() if "would download" in line]
    assert len(counts) == 1
    assert "would download 40 (size unknown until fetched)" in counts[0]
    assert "0 B" not in human.output
    as_json = run_pipe(_mirror(emu, tmp_path / "d", "--dry-run", "--json"), env_for(emu.token))
    summary = json.loads(as_json.stdout)
    assert summary["outcome"] == "dry-run"
    assert summary["downloaded"] == 40
    assert summary["bytes_downloaded"] is None
    assert not (tmp_path / "d").exists()


def _venv_script() -> Path | None:
    script = Path(sys.executable).parent / "assetsync"
    return script if script.is_file() else None


def test_demo_ends_with_a_command_that_works_from_where_it_ran(tmp_path: Path) -> None:
    script = _venv_script()
    if script is None:
        pytest.skip("no console script next to this interpreter (not a venv install)")
    # As `make demo` runs it: the venv's script by a relative path, the venv not on PATH.
    cwd = script.parent.parent.parent
    relative = script.relative_to(cwd)
    env = env_for(None)
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != script.parent
    )
    dest = tmp_path / "demo-mirror"
    done = run_pipe([str(relative), "demo", "--dest", str(dest), "--assets", "5"], env, cwd=cwd)
    assert done.code == 0, done.output
    hint = done.stderr.strip().splitlines()[-1]
    match = re.search(r"try: (.+ status --dest \S+)", hint)
    assert match is not None, hint
    status = subprocess.run(
        ["sh", "-c", match.group(1)], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0, (hint, status.stderr)
    assert "5 assets" in status.stdout


# -- server-controlled text -------------------------------------------------------------------

ESC_CLEAR = "\x1b[2J"
FORGED = "ok: everything mirrored"


async def _evil_404(conn: Conn) -> None:
    """Storage answering every GET with a 404 whose XML carries an ESC sequence and a line
    break followed by a forged "ok" line."""
    body = (
        f"<Error><Code>NoSuchKey{ESC_CLEAR}</Code>"
        f"<Message>gone\r\n{FORGED}\x1b[0m</Message></Error>"
    ).encode()
    head = b"HTTP/1.1 404 Not Found\r\nContent-Type: application/xml\r\n"
    while await conn.read_request() is not None:
        await conn.send(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)


@pytest.mark.parametrize("mode", ["pipe", "pty"])
def test_storage_xml_cannot_drive_the_terminal(tmp_path: Path, mode: str) -> None:
    with ScriptedServer(_evil_404) as server, hostile_storage(server, assets=2).in_thread() as emu:
        args = _mirror(emu, tmp_path / "d")
        run = run_pty if mode == "pty" else run_pipe
        done = run(args, env_for(emu.token))
    assert done.code == 1, done.output
    assert ESC_CLEAR not in done.output
    failed = [line for line in done.lines() if line.strip().startswith("failed:")]
    assert len(failed) == 2, done.output
    assert all("NoSuchKey\\x1b[2J (gone\\x0d\\x0aok: everything mirrored" in f for f in failed)
    # No line of its own: the forged "ok" stays inside the failure it came with.
    assert not any(line.startswith(FORGED) for line in done.lines())
    if mode == "pipe":
        assert "\x1b" not in done.output  # nothing at all for a terminal to act on


def test_a_bidi_override_in_a_file_name_is_shown_escaped(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "invoice\u202egpj.exe").write_bytes(b"MZ not a picture")
    with Emulator(from_dir=source).in_thread() as emu:
        done = run_pipe(_mirror(emu, tmp_path / "d", "--dry-run"), env_for(emu.token))
    assert done.code == 0, done.output
    plan = [line for line in done.lines() if line.startswith("download")]
    assert len(plan) == 1
    assert "invoice\\u202egpj.exe" in plan[0]
    assert "\u202e" not in done.output


# -- internal errors --------------------------------------------------------------------------


@pytest.fixture
def damaged(emu: Emulator, tmp_path: Path) -> Path:
    """A mirror whose manifest was damaged by hand: the last run's options are not JSON (with a
    control character in them). The engine does not expect this; nothing translates it."""
    dest = tmp_path / "d"
    assert run_pipe(_mirror(emu, dest, "-q"), env_for(emu.token)).code == 0
    with sqlite3.connect(dest / ".assetsync" / "manifest.sqlite") as conn:
        conn.execute("""UPDATE runs SET options = '{"layout": "na' || char(27) || '[2Jme'""")
    return dest


@pytest.mark.parametrize("mode", ["pipe", "pty"])
def test_an_internal_error_is_one_line(emu: Emulator, damaged: Path, mode: str) -> None:
    run = run_pty if mode == "pty" else run_pipe
    done = run(_mirror(emu, damaged), env_for(emu.token))
    assert done.code == 1, done.output
    assert "Traceback" not in done.output
    assert done.lines() == [
        "assetsync: error: internal error: JSONDecodeError: "
        "Invalid control character at: line 1 column 15 (char 14)"
    ]


def test_an_internal_error_with_json_prints_one_object(emu: Emulator, damaged: Path) -> None:
    done = run_pipe(_mirror(emu, damaged, "--json"), env_for(emu.token))
    assert done.code == 1
    obj = json.loads(done.stdout)
    assert obj["exit_code"] == 1 and obj["outcome"] == "error"
    assert obj["error"].startswith("internal error: JSONDecodeError: ")
    assert "Traceback" not in done.output


def test_an_internal_error_shows_its_traceback_under_vv(emu: Emulator, damaged: Path) -> None:
    done = run_pipe(_mirror(emu, damaged, "-vv"), env_for(emu.token))
    assert done.code == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "json.decoder.JSONDecodeError" in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("assetsync: error: internal error: JSONDecodeError")


def test_other_commands_share_the_boundary(emu: Emulator, damaged: Path) -> None:
    human = run_pipe([*ASSETSYNC, "status", "--dest", str(damaged)], env_for(None))
    assert human.code == 1
    assert human.lines() == [
        "assetsync: error: internal error: JSONDecodeError: "
        "Invalid control character at: line 1 column 15 (char 14)"
    ]
    as_json = run_pipe([*ASSETSYNC, "status", "--dest", str(damaged), "--json"], env_for(None))
    assert json.loads(as_json.stdout)["exit_code"] == 1
    missing = run_pipe(
        [*ASSETSYNC, "verify", "--dest", str(damaged.parent / "nowhere"), "--json"], env_for(None)
    )
    assert missing.code == 2
    assert json.loads(missing.stdout)["exit_code"] == 2
    assert missing.stderr.startswith("assetsync: error: destination")
