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
from engine.manifest import Manifest, RunRecord
from engine.manifest.combined import dest_status, open_manifests
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


def _run_json(last: RunRecord | None) -> dict[str, Any] | None:
    if last is None:
        return None
    return {
        "started_at": last.started_at,
        "finished_at": last.finished_at,
        "outcome": last.outcome,
        "counts": last.counts,
    }


def _run_text(last: RunRecord | None) -> str:
    if last is None:
        return "never synced"
    outcome = printable(last.outcome or "running (or killed)")
    return (
        f"started {_when(last.started_at)}, finished {_when(last.finished_at)}, outcome {outcome}"
    )


@click.command("status")
@_dest_option
@json_option("One JSON object on stdout (also on errors).")
def status_command(dest: Path, json_output: bool) -> None:
    """What DEST holds, from which version, when it was last synced and how that went.
    A DEST mirrored in shards (--shard) is read as one, with a line per shard."""
    status = dest_status(dest)
    last = status.last_run
    versions = status.dataset_versions
    if json_output:
        payload: dict[str, Any] = {
            "dest": str(dest),
            "dataset_version": versions[0] if len(versions) == 1 else (versions or None),
            "assets": status.assets,
            "states": status.states,
            "total_bytes": status.total_bytes,
            "runs": status.runs,
            "last_run": _run_json(last),
        }
        if status.shards:
            payload["shards"] = [
                {
                    "shard": part.shard,
                    "assets": part.status.assets,
                    "states": part.status.states,
                    "total_bytes": part.status.total_bytes,
                    "last_run": _run_json(part.status.last_run),
                }
                for part in status.shards
            ]
        emit_json(payload)
        return
    states = ", ".join(f"{k} {v}" for k, v in status.states.items() if v)
    version = printable(", ".join(versions) or "-")
    click.echo(f"{printable(str(dest))}: dataset version {version}")
    click.echo(f"  {status.assets} assets ({states or 'none'}), {format_bytes(status.total_bytes)}")
    click.echo("  never synced" if last is None else f"  last run: {_run_text(last)}")
    for part in status.shards:
        click.echo(
            f"  shard {part.shard}: {part.status.assets} assets, "
            f"last run {_run_text(part.status.last_run)}"
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
    """One object per asset: ids, filename, path, size, sha256, tags, data tags, annotations.
    A DEST mirrored in shards (--shard) is exported as one, in asset id order."""
    with open_manifests(dest) as opened:
        manifests = [manifest for _, manifest in opened]
        if output is None:
            Manifest.export_together(manifests, sys.stdout, fmt)
            return
        try:
            with output.open("w", encoding="utf-8") as fh:
                Manifest.export_together(manifests, fh, fmt)
        except OSError as exc:
            raise UsageError(f"cannot write {output}: {exc.strerror}") from None
