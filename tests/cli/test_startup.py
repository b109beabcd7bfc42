"""What a command loads before it does anything: `--help` and usage errors stay cheap, and a
run builds only the API models it uses."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# The HTTP stack, the manifest's SQLite, pydantic and the pipeline: what a run needs, and what
# `mirror --help` must not pay for (0.74 -> 0.10 s of CPU here when it stopped loading them).
HEAVY = ["aiohttp", "sqlite3", "pydantic", "anyio", "engine.mirroring", "engine.transfer"]

_PROBE = """
import json, sys
from engine.cli import cli
try:
    cli(sys.argv[1:-{heavy}], prog_name="assetsync")
except SystemExit:
    pass
print(json.dumps(sorted(set(sys.argv[-{heavy}:]) & set(sys.modules))), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["mirror", "--help"], ["mirror", "--layout", "nope"], ["--help"]])
def test_help_and_usage_errors_load_no_io_stack(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=len(HEAVY)), *args, *HEAVY],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout or "Error" in done.stderr  # click printed the help or the usage error
    loaded = json.loads(done.stderr.strip().splitlines()[-1])
    assert loaded == [], f"assetsync {' '.join(args)} loaded {loaded}"


def test_the_bulk_annotation_models_are_built_only_when_used() -> None:
    probe = (
        "from engine.platform import models\n"
        "before = models.BulkAnnotation.__pydantic_complete__\n"
        "models.BulkAnnotation.model_validate({'id': 'a', 'asset_id': 'b'})\n"
        "print(before, models.BulkAnnotation.__pydantic_complete__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["False", "True"]


def test_the_listed_short_help_is_each_commands_own() -> None:
    import click

    from engine.cli import SHORT_HELP, cli

    ctx = click.Context(cli)
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        assert command is not None
        assert SHORT_HELP[name] == command.get_short_help_str(limit=10**6), name
