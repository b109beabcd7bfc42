"""The ``assetsync`` command line: a click group whose subcommands live in their own modules.

This package is the only place that picks the event loop (uvloop when available) and maps
:class:`~engine.errors.EngineError` to the documented exit codes.
"""

from __future__ import annotations

import click

from engine import __version__
from engine.cli.common import EXIT_CODES_HELP

__all__ = ["cli", "main"]


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
)
@click.version_option(__version__, prog_name="assetsync")
def cli() -> None:
    """Mirror dataset versions from a Picsellia-style platform to local disk."""


def _register() -> None:
    # Imported here so that `assetsync --version` does not pay for aiohttp and the engine.
    from engine.cli.demo_cmd import demo_command
    from engine.cli.manifest_cmd import manifest_group, status_command, verify_command
    from engine.cli.mirror_cmd import mirror_command
    from engine.emulator.cli import emulator_command

    cli.add_command(mirror_command, "mirror")
    cli.add_command(status_command, "status")
    cli.add_command(verify_command, "verify")
    cli.add_command(manifest_group, "manifest")
    cli.add_command(demo_command, "demo")
    cli.add_command(emulator_command, "emulator")


def main() -> None:
    """Console-script entry point."""
    _register()
    cli(prog_name="assetsync")
