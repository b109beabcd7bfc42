"""``assetsync status``, ``assetsync verify`` and ``assetsync manifest export``."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Literal

import click

from engine.cli.boundary import emit_json, json_option
from engine.cli.common import run_async
from engine.cli.progress import format_bytes
from engine.errors import UsageError
from engine.manifest import Manifest
from engine.safe_text import printable
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
@json_option("One JSON object on stdout (also on errors).")
def status_command(dest: Path, json_output: bool) -> None:
    """What DEST holds, from which version, when it was last synced and how that went."""
    with Manifest.open(dest, create=False) as manifest:
        status = manifest.status()
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
        emit_json(payload)
        return
    states = ", ".join(f"{k} {v}" for k, v in status.states.items() if v)
    version = printable(status.dataset_version or "-")
    click.echo(f"{printable(str(dest))}: dataset version {version}")
    click.echo(f"  {status.assets} assets ({states or 'none'}), {format_bytes(status.total_bytes)}")
    if last is None:
        click.echo("  never synced")
    else:
        outcome = printable(last.outcome or "running (or killed)")
        click.echo(
            f"  last run: started {_when(last.started_at)}, finished {_when(last.finished_at)}, "
            f"outcome {outcome}"
        )


@click.command("verify")
@_dest_option
@json_option("One JSON object on stdout (also on errors).")
def verify_command(dest: Path, json_output: bool) -> None:
    """Re-hash every file against the manifest; bad or missing files are marked and fetched
    again by the next mirror. Exit 1 if any problem was found."""
    report = run_async(lambda: verify(dest))
    if json_output:
        emit_json(
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
            }
        )
    else:
        for p in report.problems:
            click.echo(
                f"{p.state}: {printable(p.path or '-')} (asset {printable(p.asset_id)}): "
                f"{printable(p.detail)}"
            )
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
    with Manifest.open(dest, create=False) as manifest:
        if output is None:
            manifest.export(sys.stdout, fmt)
            return
        try:
            with output.open("w", encoding="utf-8") as fh:
                manifest.export(fh, fmt)
        except OSError as exc:
            raise UsageError(f"cannot write {output}: {exc.strerror}") from None
