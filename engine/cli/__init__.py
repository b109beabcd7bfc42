"""The ``assetsync`` command line: a click group whose subcommands live in their own modules.

This package is the only place that picks the event loop (uvloop when available) and maps
:class:`~engine.errors.EngineError` to the documented exit codes: the group runs every
subcommand inside :func:`engine.cli.boundary.guarded`. Subcommands are imported when
they run, so ``assetsync mirror`` does not pay for the emulator's server or the demo.
"""

from __future__ import annotations

import gc
import importlib
from typing import Any

import click

from engine._version import __version__
from engine.cli.boundary import guarded
from engine.cli.common import EXIT_CODES_HELP, GC_THRESHOLDS

__all__ = ["SHORT_HELP", "cli", "main"]

# name -> "module:attribute"
_COMMANDS = {
    "mirror": "engine.cli.mirror_cmd:mirror_command",
    "status": "engine.cli.manifest_cmd:status_command",
    "verify": "engine.cli.manifest_cmd:verify_command",
    "manifest": "engine.cli.manifest_cmd:manifest_group",
    "demo": "engine.cli.demo_cmd:demo_command",
    "emulator": "engine.emulator.cli:emulator_command",
}


# `assetsync --help` lists these without importing the commands (the emulator's server, the
# pipeline): each is its command's own short help (a test holds them to it).
SHORT_HELP = {
    "demo": "Start the embedded emulator with a demo dataset and mirror it into DEST.",
    "emulator": "Run the local platform emulator (API + signed storage) until interrupted.",
    "manifest": "Read the manifest of a mirrored folder.",
    "mirror": "Mirror a dataset version into DEST: files, tags, data tags and annotations.",
    "status": "What DEST holds, from which version, when it was last synced and how that went.",
    "verify": "Re-hash every file against the manifest; bad or missing files are marked and "
    "fetched again by the next mirror.",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's own listing shortens each line to the terminal's width: so does this.
        limit = formatter.width - 6 - max(len(name) for name in _COMMANDS)
        rows = [(name, _shorten(SHORT_HELP.get(name, ""), limit)) for name in sorted(_COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        with guarded(ctx):
            return super().invoke(ctx)


def _shorten(text: str, limit: int) -> str:
    return click.Command("", help=text).get_short_help_str(limit)


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
)
@click.version_option(__version__, prog_name="assetsync")
def cli() -> None:
    """Mirror dataset versions from a Picsellia-style platform to local disk."""


def main() -> None:
    """Console-script entry point."""
    # Before the subcommand's imports: they allocate hundreds of thousands of objects and
    # CPython's default threshold (700) would walk the growing heap again and again (70 ms of
    # the 0.56 s it takes to import the mirror). run_async's tune_gc then freezes start-up.
    gc.set_threshold(*GC_THRESHOLDS)
    cli(prog_name="assetsync")
