"""The prefetcher's own settings, and where they come from.

They sit next to the run's :class:`~engine.settings.Settings` (API, version, DEST, limits,
transfer options), in the ``[prefetch]`` table of the same TOML file, with the same precedence:
values given in code, then environment variables ``ASSETSYNC_PREFETCH__*`` (e.g.
``ASSETSYNC_PREFETCH__WINDOW=128``), then the TOML table, then the defaults below. Sizes may be
integers (bytes) or strings such as ``"512MiB"`` or ``"20 GB"``.
"""

from __future__ import annotations

import re
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from engine.errors import UsageError
from engine.settings import Settings, load_settings

__all__ = [
    "FailurePolicy",
    "Order",
    "PrefetchOptions",
    "load_prefetch_config",
    "load_prefetch_options",
    "options_with",
    "parse_size",
]

FailurePolicy = Literal["raise", "skip", "yield"]
Order = Literal["ordered", "as_completed"]
MiB = 1024 * 1024

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: int | float | str) -> int:
    """Bytes from ``1048576``, ``"1MiB"``, ``"1.5 GB"``... (decimal and binary units)."""
    if isinstance(value, bool):
        raise ValueError("a size is a number of bytes or a string such as '512MiB'")
    if isinstance(value, int | float):
        return int(value)
    match = _SIZE.match(value)
    unit = _UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise ValueError(f"not a size: {value!r} (try '512MiB' or '20GB')")
    return int(float(match.group(1)) * unit)


class PrefetchOptions(BaseSettings):
    """How a :class:`~engine.prefetch.Prefetcher` looks ahead, orders, keeps and fails.

    ``window``: items fetched ahead of the consumer (ordered: never more than this many places
    ahead). ``window_bytes``: bytes fetched ahead (None: no byte bound). ``order``: "ordered"
    (the listing's or the given ids' order) or "as_completed". ``max_bytes``: a disk budget for
    DEST, shared by every prefetcher of DEST (None: keep everything); unpinned files are evicted,
    most recently used first (:mod:`engine.manifest.budget`). ``hold``: how many of the last
    items yielded stay protected from eviction (the consumer may still be reading them).
    ``shuffle``/``seed``: a shuffled order per epoch. ``on_failure``: "raise", "skip" (with a
    warning) or "yield" (an item with ``error`` set). ``equal_shards``: every shard of the order
    yields the same number of items, as distributed training needs: "pad" (repeat the order's
    first items, like ``DistributedSampler``), "drop" (leave out the last few), or None (shares
    may differ by one). It lists the whole version before the first item, as a shuffled order
    does; it needs ``on_failure`` "raise" or "yield" (a skipped item would make a shard short).
    """

    model_config = SettingsConfigDict(
        env_prefix="ASSETSYNC_PREFETCH__", frozen=True, extra="forbid"
    )

    window: int = Field(64, ge=1, le=100_000)
    window_bytes: int | None = Field(512 * MiB, ge=1)
    order: Order = "ordered"
    max_bytes: int | None = Field(None, ge=1)
    hold: int = Field(1, ge=0, le=100_000)
    shuffle: bool = False
    seed: int = 0
    on_failure: FailurePolicy = "raise"
    equal_shards: Literal["pad", "drop"] | None = None

    @field_validator("equal_shards", mode="before")
    @classmethod
    def _none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() in ("", "none") else value

    @model_validator(mode="after")
    def _equal_shards_stay_equal(self) -> PrefetchOptions:
        if self.equal_shards is not None and self.on_failure == "skip":
            # A skipped item leaves its shard one short: a DDP rank with a batch less than the
            # others waits forever in its collective. "yield" keeps the count (item.error set).
            raise ValueError(
                "equal shards need on_failure 'raise' or 'yield': a skipped item would leave "
                "one shard shorter than the others"
            )
        return self

    @field_validator("window_bytes", "max_bytes", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            return None
        return parse_size(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TableSource(settings_cls))


_table: ContextVar[dict[str, Any] | None] = ContextVar("assetsync_prefetch_table", default=None)


class _TableSource(PydanticBaseSettingsSource):
    """The ``[prefetch]`` table of the TOML file chosen for this load."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (_table.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_table.get() or {})


def _prefetch_table(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
    nested = data.get("assetsync")
    table = data.get("prefetch", nested.get("prefetch", {}) if isinstance(nested, dict) else {})
    if not isinstance(table, dict):
        raise UsageError(f"config file {path}: [prefetch] must be a table")
    return dict(table)


def load_prefetch_options(
    overrides: dict[str, Any] | None = None, *, config_file: Path | None = None
) -> PrefetchOptions:
    """:class:`PrefetchOptions` with the documented precedence (``None`` overrides ignored)."""
    table = _prefetch_table(Path(config_file)) if config_file is not None else {}
    explicit = {k: v for k, v in (overrides or {}).items() if v is not None}
    reset = _table.set(table)
    try:
        return _valid(explicit)
    finally:
        _table.reset(reset)


def options_with(base: PrefetchOptions | None, changes: dict[str, Any]) -> PrefetchOptions:
    """``base`` (default options if None) with ``changes``; a bad value is a usage error."""
    if base is not None and not changes:
        return base
    return _valid({**(base.model_dump() if base is not None else {}), **changes})


def _valid(values: dict[str, Any]) -> PrefetchOptions:
    try:
        return PrefetchOptions(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"]) or "prefetch"
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise UsageError(f"invalid prefetch setting {where}: {msg}") from None


def load_prefetch_config(
    config_file: Path | None = None,
    *,
    settings: dict[str, Any] | None = None,
    prefetch: dict[str, Any] | None = None,
    token_file: Path | None = None,
) -> tuple[Settings, PrefetchOptions]:
    """Both halves of a prefetch config file (see ``config/prefetch.toml``)."""
    return (
        load_settings(settings, config_file=config_file, token_file=token_file),
        load_prefetch_options(prefetch, config_file=config_file),
    )
