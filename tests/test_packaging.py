"""The files a newcomer touches first: example configs, docker-compose.yml, the entry points."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from engine.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "config").glob("*.toml")))
def test_example_configs_load(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("PICSELLIA_TOKEN", raising=False)
    text = (ROOT / "config" / name).read_text()
    data = tomllib.loads(text)
    if "token_file" in data:
        token = tmp_path / "token"
        token.write_text("example-token\n")
        text = text.replace(data["token_file"], str(token))
    config = tmp_path / name
    config.write_text(text)
    settings = load_settings(config_file=config)
    assert settings.dataset_version == data["dataset_version"]
    for key in ("layout", "delete", "max_delete"):
        if key in data:
            assert getattr(settings, key) == data[key]
    if "token_file" in data:
        assert settings.token is not None
        assert settings.token.get_secret_value() == "example-token"


def test_docker_compose_file_is_valid():
    tool = shutil.which("docker-compose")
    assert tool is not None, (
        "docker-compose is needed to check docker-compose.yml (.ci/run installs it)"
    )
    done = subprocess.run(
        [tool, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_console_script_and_module_entry_agree():
    by_module = subprocess.run(
        [sys.executable, "-m", "engine", "--help"], capture_output=True, text=True, timeout=60
    )
    assert by_module.returncode == 0
    for command in ("mirror", "demo", "status", "verify", "manifest", "emulator"):
        assert command in by_module.stdout
    assert "Exit codes" in by_module.stdout
    script = shutil.which("assetsync", path=str(Path(sys.executable).parent))
    assert script is not None
    by_script = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert by_script.returncode == 0
    assert "assetsync" in by_script.stdout


def test_library_names_resolve_the_same_whatever_was_imported_first():
    code = (
        "import engine.mirroring, engine.cli.mirror_cmd\n"
        "from engine import mirror, load_settings, MirrorSummary, EngineError, __version__\n"
        "assert callable(mirror) and mirror.__module__ == 'engine.mirroring'\n"
        "assert callable(load_settings) and isinstance(__version__, str)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_version_and_help_do_not_import_the_http_stack():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from engine.cli import cli\n"
        "result = CliRunner().invoke(cli, ['--version'])\n"
        "assert result.exit_code == 0, result.output\n"
        "assert 'aiohttp' not in sys.modules and 'engine.emulator' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
