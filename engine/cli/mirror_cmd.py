"""``assetsync mirror``: the command users run every night."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import click

from engine.cli.boundary import emit_json, json_option, verbose_option
from engine.cli.common import EXIT_CODES_HELP, run_async, setup_logging
from engine.cli.output import print_plan_line, print_summary
from engine.cli.progress import make_progress
from engine.errors import primary_error
from engine.mirroring import mirror
from engine.pipeline.jobs import PlannedAction
from engine.pipeline.summary import LiveCounters, MirrorSummary
from engine.settings import Settings, load_settings

__all__ = ["mirror_command", "run_mirror"]


def _flag(value: bool) -> bool | None:
    # A flag only ever turns a setting on; absent, the config file or environment decides.
    return True if value else None


def settings_from_options(options: dict[str, Any]) -> Settings:
    """Command-line values over ``ASSETSYNC_*`` over the TOML file over defaults."""
    limits = {k: options.get(k) for k in ("concurrency", "per_host") if options.get(k) is not None}
    transfer: dict[str, Any] = {}
    if options.get("segments") is not None:
        transfer["segments"] = options["segments"]
    if options.get("no_fsync"):
        transfer["fsync"] = False
    overrides: dict[str, Any] = {
        "api_url": options.get("api_url"),
        "dataset_version": options.get("dataset_version"),
        "dest": options.get("dest"),
        "layout": options.get("layout"),
        "delete": options.get("delete"),
        "delete_excluded": _flag(bool(options.get("delete_excluded"))),
        "max_delete": options.get("max_delete"),
        "force": _flag(bool(options.get("force"))),
        "dry_run": _flag(bool(options.get("dry_run"))),
        "tags": tuple(options["tags"]) if options.get("tags") else None,
        "data_tags": tuple(options["data_tags"]) if options.get("data_tags") else None,
        "limits": limits or None,
        "transfer": transfer or None,
    }
    return load_settings(
        overrides, config_file=options.get("config_file"), token_file=options.get("token_file")
    )


async def run_mirror(
    settings: Settings, *, json_output: bool, quiet: bool, verbose: int
) -> MirrorSummary:
    """Run one mirror with the display a terminal or a log file wants."""
    counters = LiveCounters()
    progress = make_progress(counters, quiet=quiet or (json_output and not sys.stderr.isatty()))

    def on_plan(action: PlannedAction) -> None:
        if settings.dry_run and not json_output and not quiet:
            print_plan_line(action)

    if progress is None or settings.dry_run:
        return await mirror(settings, counters=counters, plan_sink=on_plan)
    try:
        with progress:
            async with anyio.create_task_group() as tg:
                tg.start_soon(progress.run)
                try:
                    summary = await mirror(settings, counters=counters, plan_sink=on_plan)
                finally:
                    tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The display's task group wraps whatever the mirror raised: give callers the error.
        error = primary_error(group)
        if error is group:
            raise
        raise error from None
    return summary


@click.command("mirror", epilog=EXIT_CODES_HELP)
@click.option("--api-url", help="Platform base URL (default https://app.picsellia.com).")
@click.option("--dataset-version", help="UUID of the dataset version to mirror.")
@click.option("--dest", type=click.Path(path_type=Path), help="Local folder to mirror into.")
@click.option(
    "--token-file",
    type=click.Path(path_type=Path),
    help="File holding the API token. Precedence: this, then ASSETSYNC_TOKEN or "
    "PICSELLIA_TOKEN, then token_file or token in the config.",
)
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="TOML settings.")
@click.option(
    "--delete/--no-delete",
    default=None,
    help="Remove local files of assets gone from the version (with a filter: only those).",
)
@click.option(
    "--delete-excluded",
    is_flag=True,
    help="With --tag/--data-tag: also remove files of assets the filter leaves out "
    "(implies --delete).",
)
@click.option(
    "--max-delete", type=float, help="Refuse to delete more than this % of files (default 50)."
)
@click.option(
    "--force", is_flag=True, help="Allow deleting more than --max-delete, or a DEST switch."
)
@click.option("--dry-run", is_flag=True, help="Print the plan; touch nothing.")
@json_option("One JSON summary object on stdout (also on errors).")
@click.option("--concurrency", type=int, help="Transfers in flight (default 32).")
@click.option("--per-host", type=int, help="Connections to one storage host (default 32).")
@click.option("--segments", type=int, help="Parallel range segments for one large file.")
@click.option("--no-fsync", is_flag=True, help="Skip fsync before the final rename.")
@click.option("--layout", type=click.Choice(["name", "id"]), help="Name files by filename or id.")
@click.option("--tag", "tags", multiple=True, help="Only assets with this asset tag (repeatable).")
@click.option(
    "--data-tag", "data_tags", multiple=True, help="Only assets with this data tag (repeatable)."
)
@verbose_option()
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
def mirror_command(**options: Any) -> None:
    """Mirror a dataset version into DEST: files, tags, data tags and annotations.

    Incremental: unchanged assets cost no storage request; interrupted downloads resume.
    """
    json_output = bool(options.pop("json_output"))
    quiet = bool(options.pop("quiet"))
    verbose = int(options.pop("verbose"))
    setup_logging(verbose)
    settings = settings_from_options(options)
    summary = run_async(
        lambda: run_mirror(settings, json_output=json_output, quiet=quiet, verbose=verbose)
    )
    if json_output:
        emit_json(summary.to_json())
    else:
        print_summary(summary, quiet=quiet)
    sys.exit(summary.exit_code)
