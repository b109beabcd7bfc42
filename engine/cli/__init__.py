"""The ``assetsync`` command line: a click group whose subcommands live in their own modules.

This package is the only place that picks the event loop (uvloop when available) and maps
:class:`~engine.errors.EngineError` to the documented exit codes.
"""

from __future__ import annotations

import click

from engine import __version__

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="assetsync")
def cli() -> None:
    """Mirror dataset versions from a Picsellia-style platform to local disk."""


def _register() -> None:
    from engine.emulator.cli import emulator_command

    cli.add_command(emulator_command, "emulator")


def main() -> None:
    """Console-script entry point."""
    _register()
    cli(prog_name="assetsync")
