from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import UsageError
from engine.settings import DEFAULT_API_MAX_BODY, load_settings


def test_precedence_cli_over_env_over_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'dataset_version = "from-file"\nlayout = "id"\n'
        "[transfer]\nsegments = 7\nchunk_size = 65536\n[limits]\nconcurrency = 5\n"
    )
    monkeypatch.setenv("ASSETSYNC_TRANSFER__CHUNK_SIZE", "131072")
    monkeypatch.setenv("ASSETSYNC_LAYOUT", "name")
    s = load_settings({"dataset_version": "from-cli", "limits": {"per_host": 3}}, config_file=cfg)
    assert s.dataset_version == "from-cli"  # command line beats the file
    assert s.layout == "name"  # environment beats the file
    assert s.transfer.chunk_size == 131072  # nested environment beats the file
    assert s.transfer.segments == 7  # the file beats the default, and merges with the env
    assert (s.limits.concurrency, s.limits.per_host) == (5, 3)


def test_token_sources_and_secrecy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("ASSETSYNC_TOKEN", raising=False)
    monkeypatch.setenv("PICSELLIA_TOKEN", "tok-from-env")
    s = load_settings()
    assert s.token is not None
    assert s.token.get_secret_value() == "tok-from-env"
    assert "tok-from-env" not in repr(s) and "tok-from-env" not in str(s.model_dump())
    token_file = tmp_path / "token"
    token_file.write_text("tok-from-file\n")
    s = load_settings(token_file=token_file)
    assert s.token is not None and s.token.get_secret_value() == "tok-from-file"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"limits": {"concurrency": 0}}, "limits.concurrency"),
        ({"api_url": "ftp://x"}, "api_url"),
        ({"layout": "flat"}, "layout"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_values_are_one_line_usage_errors(overrides, fragment):
    with pytest.raises(UsageError) as info:
        load_settings(overrides)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_broken_config_files(tmp_path: Path):
    with pytest.raises(UsageError, match="not found"):
        load_settings(config_file=tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("this is = = not toml")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_settings(config_file=bad)


def _no_token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ASSETSYNC_TOKEN", "PICSELLIA_TOKEN", "ASSETSYNC_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def _token(**kwargs: object) -> str:
    settings = load_settings(**kwargs)  # type: ignore[arg-type]
    assert settings.token is not None
    return settings.token.get_secret_value()


@pytest.mark.parametrize("key", ["token_file", "token"])
def test_token_precedence_command_line_over_environment_over_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str
):
    _no_token_env(monkeypatch)
    in_file = tmp_path / "file-token"
    in_file.write_text("tok-from-config\n")
    config = tmp_path / "c.toml"
    value = str(in_file) if key == "token_file" else "tok-from-config"
    config.write_text(f'{key} = "{value}"\n')
    cli_file = tmp_path / "cli-token"
    cli_file.write_text("tok-from-cli\n")

    assert _token(config_file=config) == "tok-from-config"
    monkeypatch.setenv("PICSELLIA_TOKEN", "tok-from-picsellia-env")
    assert _token(config_file=config) == "tok-from-picsellia-env"  # environment beats file
    monkeypatch.setenv("ASSETSYNC_TOKEN", "tok-from-assetsync-env")
    assert _token(config_file=config) == "tok-from-assetsync-env"  # the specific variable first
    assert _token(config_file=config, token_file=cli_file) == "tok-from-cli"  # command line


def test_the_cron_example_config_works_with_a_token_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
):
    """config/cron-sync.toml names /etc/assetsync/token, absent here: an environment token is
    enough, and that file is not even read."""
    _no_token_env(monkeypatch)
    config = Path(__file__).parent.parent / "config" / "cron-sync.toml"
    assert "token_file" in config.read_text()
    assert not Path("/etc/assetsync/token").exists()
    monkeypatch.setenv("PICSELLIA_TOKEN", "tok-from-env")
    settings = load_settings(config_file=config)
    assert settings.token is not None and settings.token.get_secret_value() == "tok-from-env"
    assert settings.tags == ("train",)
    # Without a token in the environment the file is needed, and its absence is a usage error.
    monkeypatch.delenv("PICSELLIA_TOKEN")
    with pytest.raises(UsageError, match="cannot read token file /etc/assetsync/token"):
        load_settings(config_file=config)


def test_a_config_giving_both_token_and_token_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    _no_token_env(monkeypatch)
    config = tmp_path / "c.toml"
    config.write_text('token = "a"\ntoken_file = "/nowhere"\n')
    with pytest.raises(UsageError, match="not both"):
        load_settings(config_file=config)


def test_api_max_body_from_the_environment_and_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    assert load_settings().api_max_body == DEFAULT_API_MAX_BODY == 32 * 1024 * 1024
    cfg = tmp_path / "c.toml"
    cfg.write_text("api_max_body = 8388608\n")
    assert load_settings(config_file=cfg).api_max_body == 8 * 1024 * 1024
    monkeypatch.setenv("ASSETSYNC_API_MAX_BODY", "67108864")
    assert load_settings(config_file=cfg).api_max_body == 64 * 1024 * 1024
    with pytest.raises(UsageError, match="api_max_body"):
        load_settings({"api_max_body": 1000})  # below 64 KiB: no real answer would fit
