"""``assetsync status``, ``assetsync verify`` and ``assetsync manifest export``."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Literal

import click

from engine.cli.common import exit_for, run_async
from engine.cli.progress import format_bytes
from engine.errors import EngineError
from engine.manifest import Manifest
from engine.verify import verify

__all__ = ["manifest_group", "status_command", "verify_command"]

_dest_option = click.option(
    "--dest", required=True, type=click.Path(path_type=Path), help="The mirrored folder."
)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


@click.command("status")
@_dest_option
@click.option("--json", "json_output", is_flag=True, help="One JSON object on stdout.")
def status_command(dest: Path, json_output: bool) -> None:
    """What DEST holds, from which version, when it was last synced and how that went."""
    try:
        with Manifest.open(dest, create=False) as manifest:
            status = manifest.status()
    except EngineError as exc:
        exit_for(exc)
    last = status.last_run
    if json_output:
        payload: dict[str, Any] = {
            "dest": str(dest),
            "dataset_version": status.dataset_version,
            "assets": status.assets,
            "states": status.states,
            "total_bytes": status.total_bytes,
            "runs": status.runs,
            "last_run": None
            if last is None
            else {
                "started_at": last.started_at,
                "finished_at": last.finished_at,
                "outcome": last.outcome,
                "counts": last.counts,
            },
        }
        click.echo(json.dumps(payload, sort_keys=True))
        return
    states = ", ".join(f"{k} {v}" for k, v in status.states.items() if v)
    click.echo(f"{dest}: dataset version {status.dataset_version or '-'}")
    click.echo(f"  {status.assets} assets ({states or 'none'}), {format_bytes(status.total_bytes)}")
    if last is None:
        click.echo("  never synced")
    else:
        outcome = last.outcome or "running (or killed)"
        click.echo(
            f"  last run: started {_when(last.started_at)}, finished {_when(last.finished_at)}, "
            f"outcome {outcome}"
        )


@click.command("verify")
@_dest_option
@click.option("--json", "json_output", is_flag=True, help="One JSON object on stdout.")
def verify_command(dest: Path, json_output: bool) -> None:
    """Re-hash every file against the manifest; bad or missing files are marked and fetched
    again by the next mirror. Exit 1 if any problem was found."""
    try:
        report = run_async(lambda: verify(dest))
    except EngineError as exc:
        exit_for(exc)
    if json_output:
        click.echo(
            json.dumps(
                {
                    "checked": report.checked,
                    "ok": report.ok,
                    "bytes": report.bytes,
                    "problems": report.problem_count,
                    "details": [
                        {
                            "asset_id": p.asset_id,
                            "path": p.path,
                            "state": p.state,
                            "detail": p.detail,
                        }
                        for p in report.problems
                    ],
                },
                sort_keys=True,
            )
        )
    else:
        for p in report.problems:
            click.echo(f"{p.state}: {p.path} (asset {p.asset_id}): {p.detail}")
        click.echo(
            f"verified {report.checked} files ({format_bytes(report.bytes)}): {report.ok} ok, "
            f"{report.problem_count} marked for the next mirror"
        )
    sys.exit(report.exit_code)


@click.group("manifest")
def manifest_group() -> None:
    """Read the manifest of a mirrored folder."""


@manifest_group.command("export")
@_dest_option
@click.option("--format", "fmt", type=click.Choice(["jsonl", "json"]), default="jsonl")
@click.option(
    "--output", "-o", type=click.Path(path_type=Path), help="Write here instead of stdout."
)
def export_command(dest: Path, fmt: Literal["jsonl", "json"], output: Path | None) -> None:
    """One object per asset: ids, filename, path, size, sha256, tags, data tags, annotations."""
    try:
        with Manifest.open(dest, create=False) as manifest:
            if output is None:
                manifest.export(sys.stdout, fmt)
            else:
                with output.open("w", encoding="utf-8") as fh:
                    manifest.export(fh, fmt)
    except EngineError as exc:
        exit_for(exc)
    except BrokenPipeError:
        # The reader went away (`| head`): not an error. Point stdout at /dev/null so the
        # interpreter's final flush does not complain a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except OSError as exc:
        click.echo(f"assetsync: error: cannot write {output}: {exc.strerror}", err=True)
        sys.exit(2)
