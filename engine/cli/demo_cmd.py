"""``assetsync demo``: the embedded emulator plus a mirror into a local folder, one command.

It is the README's first set-up command: no account, no token, no network beyond loopback. The
emulator runs in the same event loop on a free 127.0.0.1 port; the mirror is the real one.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click
from pydantic import SecretStr

from engine.cli.boundary import emit_json, json_option
from engine.cli.common import run_async, setup_logging
from engine.cli.invocation import command_prefix
from engine.cli.mirror_cmd import run_mirror
from engine.cli.output import print_summary
from engine.emulator import Emulator
from engine.pipeline.summary import MirrorSummary
from engine.safe_text import printable
from engine.settings import Settings, load_settings

__all__ = ["demo_command"]


@click.command("demo")
@click.option(
    "--dest",
    type=click.Path(path_type=Path),
    default=Path("demo-mirror"),
    show_default=True,
    help="Folder to mirror the demo version into.",
)
@click.option("--assets", type=click.IntRange(1, 100_000), default=500, show_default=True)
@click.option(
    "--from-dir",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="Serve your own folder of files as the demo dataset.",
)
@click.option("--seed", type=int, default=7, show_default=True)
@json_option("One JSON summary object on stdout (also on errors).")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
def demo_command(
    dest: Path, assets: int, from_dir: Path | None, seed: int, json_output: bool, quiet: bool
) -> None:
    """Start the embedded emulator with a demo dataset and mirror it into DEST.

    Run it twice: the second run is incremental and downloads nothing.
    """
    setup_logging(0)

    async def main() -> MirrorSummary:
        emulator = Emulator(
            assets=assets, seed=seed, from_dir=from_dir, large_share=0.01, null_url_share=0.05
        )
        async with emulator as emu:
            if not json_output:
                click.echo(
                    f"emulator: {emu.api_url} serving dataset version {emu.dataset_version_id} "
                    f"({assets if from_dir is None else 'your'} assets)",
                    err=True,
                )
            settings: Settings = load_settings(
                {
                    "api_url": emu.api_url,
                    "dataset_version": emu.dataset_version_id,
                    "dest": dest,
                    "token": SecretStr(emu.token),
                    # The demo re-creates its emulator each time; its version id is derived
                    # from the seed, so DEST keeps mirroring the same version.
                }
            )
            return await run_mirror(settings, json_output=json_output, quiet=quiet, verbose=0)

    summary = run_async(main)
    if json_output:
        emit_json(summary.to_json())
    else:
        print_summary(summary)
        run = command_prefix()
        where = shlex.quote(str(dest))
        click.echo(
            f"\nFiles are in {printable(str(dest))}/; try: {run} status --dest {where}   "
            f"{run} manifest export --dest {where} | head -n 2",
            err=True,
        )
    sys.exit(summary.exit_code)
