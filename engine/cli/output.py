"""Human-readable output: the final summary and a dry run's plan lines."""

from __future__ import annotations

import click

from engine.cli.progress import format_bytes
from engine.jobs import PlannedAction
from engine.summary import MirrorSummary

__all__ = ["print_plan_line", "print_summary"]


def print_plan_line(action: PlannedAction) -> None:
    path = action.path if action.path is not None else "-"
    click.echo(f"{action.action:8} {path}  ({action.reason}; asset {action.asset_id})")


def print_summary(summary: MirrorSummary, *, quiet: bool = False) -> None:
    s = summary
    rate = s.bytes_downloaded / s.duration_seconds if s.duration_seconds > 0 else 0.0
    verb = "would download" if s.outcome == "dry-run" else "downloaded"
    lines = [
        f"assetsync: {s.outcome}: dataset version {s.dataset_version} -> {s.dest}",
        f"  listed {s.listed}; {verb} {s.downloaded} ({format_bytes(s.bytes_downloaded)}), "
        f"skipped {s.skipped}, updated {s.updated}, deleted {s.deleted}, failed {s.failed}",
        f"  tag changes {s.tag_changes}, annotation changes {s.annotation_changes}; "
        f"URL refreshes {s.url_refreshes}, retries {s.retries}, resumes {s.resumes}",
        f"  took {s.duration_seconds:.1f} s ({format_bytes(rate)}/s)",
    ]
    if s.deletion_note and (s.planned_deletions or s.deleted):
        lines.append(f"  deletions: {s.deletion_note}")
    if s.error:
        lines.append(f"  error: {s.error}")
    for failure in s.failures:
        lines.append(f"  failed: {failure.asset_id} {failure.filename!r}: {failure.error}")
    if s.failed > len(s.failures):
        lines.append(f"  ... and {s.failed - len(s.failures)} more failures")
    if quiet and s.outcome == "ok":
        lines = lines[:1]
    click.echo("\n".join(lines))
