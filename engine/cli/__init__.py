"""The ``assetsync`` command line: a click group whose subcommands live in their own modules.

This package is the only place that picks the event loop (uvloop when available) and maps
:class:`~engine.errors.EngineError` to the documented exit codes: the group runs every
subcommand inside :func:`engine.cli.boundary.guarded`. Subcommands are imported when
they run, so ``assetsync mirror`` does not pay for the emulator's server or the demo.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from engine._version import __version__
from engine.cli.boundary import guarded
from engine.cli.common import EXIT_CODES_HELP

__all__ = ["cli", "main"]

# name -> "module:attribute"
_COMMANDS = {
    "mirror": "engine.cli.mirror_cmd:mirror_command",
    "status": "engine.cli.manifest_cmd:status_command",
    "verify": "engine.cli.manifest_cmd:verify_command",
    "manifest": "engine.cli.manifest_cmd:manifest_group",
    "demo": "engine.cli.demo_cmd:demo_command",
    "emulator": "engine.emulator.cli:emulator_command",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

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
    cli(prog_name="assetsync")
