"""Human-readable output: the final summary and a dry run's plan lines.

Everything that came from a server or a file system (ids, filenames, paths, error messages) goes
through :func:`engine.safe_text.printable`: a terminal shows it, it never acts on it.
"""

from __future__ import annotations

import click

from engine.cli.progress import format_bytes
from engine.pipeline.jobs import PlannedAction
from engine.pipeline.summary import MirrorSummary
from engine.safe_text import printable, safe_message

__all__ = ["print_plan_line", "print_summary", "summary_lines"]

# A dry run fetches nothing, and the listing carries no sizes: what it would download is a
# number of files, never a number of bytes.
SIZE_UNKNOWN = "size unknown until fetched"


def print_plan_line(action: PlannedAction) -> None:
    path = printable(action.path) if action.path is not None else "-"
    reason = printable(action.reason)
    click.echo(f"{action.action:8} {path}  ({reason}; asset {printable(action.asset_id)})")


def summary_lines(summary: MirrorSummary, *, quiet: bool = False) -> list[str]:
    s = summary
    if s.bytes_downloaded is None:
        volume, speed = SIZE_UNKNOWN, ""
    else:
        rate = s.bytes_downloaded / s.duration_seconds if s.duration_seconds > 0 else 0.0
        volume, speed = format_bytes(s.bytes_downloaded), f" ({format_bytes(rate)}/s)"
    verb = "would download" if s.outcome == "dry-run" else "downloaded"
    lines = [
        f"assetsync: {s.outcome}: dataset version {printable(s.dataset_version)} -> "
        f"{printable(s.dest)}",
        f"  listed {s.listed}; {verb} {s.downloaded} ({volume}), "
        f"skipped {s.skipped}, updated {s.updated}, deleted {s.deleted}, failed {s.failed}",
        f"  tag changes {s.tag_changes}, annotation changes {s.annotation_changes}; "
        f"URL refreshes {s.url_refreshes}, retries {s.retries}, resumes {s.resumes}",
        f"  took {s.duration_seconds:.1f} s{speed}",
    ]
    if s.deletion_note and (s.planned_deletions or s.deleted or s.deletions_kept):
        lines.append(f"  deletions: {safe_message(s.deletion_note)}")
    if s.error:
        lines.append(f"  error: {safe_message(s.error)}")
    lines += [f"  warning: {safe_message(warning)}" for warning in s.warnings]
    for failure in s.failures:
        lines.append(
            f'  failed: {printable(failure.asset_id)} "{printable(failure.filename)}": '
            f"{safe_message(failure.error)}"
        )
    if s.failed > len(s.failures):
        lines.append(f"  ... and {s.failed - len(s.failures)} more failures")
    if quiet and s.outcome == "ok" and not s.warnings:
        lines = lines[:1]
    return lines


def print_summary(summary: MirrorSummary, *, quiet: bool = False) -> None:
    click.echo("\n".join(summary_lines(summary, quiet=quiet)))
