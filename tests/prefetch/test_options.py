"""The prefetcher's settings: the example config file, sizes, precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import UsageError
from engine.prefetch import (
    Prefetcher,
    PrefetchOptions,
    load_prefetch_config,
    load_prefetch_options,
)
from engine.prefetch.options import parse_size
from engine.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


def test_the_example_config_gives_both_halves(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("ASSETSYNC_PREFETCH__WINDOW", raising=False)
    config = ROOT / "config" / "prefetch.toml"
    settings, options = load_prefetch_config(config)
    assert settings.dataset_version == "00000000-0000-0000-0000-000000000000"
    assert settings.limits.concurrency == 16 and settings.transfer.fsync is False
    assert options.window == 64 and options.window_bytes == 512 * MiB
    assert options.shuffle and options.on_failure == "skip" and options.max_bytes is None
    # The mirror's loader reads the same file and leaves [prefetch] alone.
    assert load_settings(config_file=config).dest == settings.dest


def test_precedence_code_then_environment_then_file(tmp_path: Path, monkeypatch):
    config = tmp_path / "p.toml"
    config.write_text('[prefetch]\nwindow = 8\nmax_bytes = "2 GB"\nhold = 3\n')
    monkeypatch.setenv("ASSETSYNC_PREFETCH__WINDOW", "16")
    options = load_prefetch_options({"hold": 5}, config_file=config)
    assert (options.window, options.max_bytes, options.hold) == (16, 2 * 10**9, 5)
    assert PrefetchOptions(window=4).window == 4


def test_sizes_and_bad_values():
    assert parse_size("512MiB") == 512 * MiB
    assert parse_size("1.5 GB") == 1_500_000_000
    assert parse_size(1024) == 1024
    for bad in ("lots", "12 parsecs", True):
        with pytest.raises(ValueError, match="size"):
            parse_size(bad)
    with pytest.raises(UsageError, match="window"):
        load_prefetch_options({"window": 0})
    with pytest.raises(UsageError, match="on_failure"):
        load_prefetch_options({"on_failure": "ignore"})


def test_a_bad_option_given_to_a_prefetcher_is_a_usage_error_in_one_line(tmp_path):
    settings = load_settings(
        {"api_url": "http://127.0.0.1:9", "dataset_version": "v", "dest": str(tmp_path)}
    )
    with pytest.raises(UsageError, match="window") as info:
        Prefetcher(settings, window=0)
    assert "\n" not in str(info.value)


def test_equal_shards_refuse_skipping_failures():
    """A skipped item leaves its shard short: the rank with a batch less hangs the others."""
    with pytest.raises(UsageError, match="equal shards need on_failure") as info:
        load_prefetch_options({"equal_shards": "pad", "on_failure": "skip"})
    assert "Value error" not in str(info.value)
    assert load_prefetch_options({"equal_shards": "pad", "on_failure": "yield"}).equal_shards
