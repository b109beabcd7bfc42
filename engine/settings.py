"""Settings: frozen pydantic models, loaded from the command line, the environment and TOML.

Precedence, highest first: values passed explicitly (the command line, or a library caller),
environment variables ``ASSETSYNC_*`` (nested with ``__``, e.g. ``ASSETSYNC_TRANSFER__CHUNK_SIZE``),
a TOML file (``--config FILE`` or ``ASSETSYNC_CONFIG``), then the defaults below.

The token is deliberately not a command-line option (it would show in ``ps`` and shell history):
it comes from ``PICSELLIA_TOKEN`` (the platform SDK's variable), ``ASSETSYNC_TOKEN``, a token file
or the TOML file, and is held as a :class:`~pydantic.SecretStr` so it never prints.
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from engine.errors import UsageError

__all__ = [
    "DEFAULT_API_MAX_BODY",
    "DEFAULT_API_URL",
    "Limits",
    "RetryPolicy",
    "Settings",
    "Timeouts",
    "TransferOptions",
    "load_settings",
]

DEFAULT_API_URL = "https://app.picsellia.com"
KiB = 1024
MiB = 1024 * KiB

# The largest API answer the engine reads, counted in decoded bytes (after gzip), so a small
# compressed body cannot inflate without limit. A 1000-asset listing page is about 0.8 MB with
# signed URLs (measured on the emulator), so this leaves ~33 KiB of metadata per asset; bulk
# annotation answers that outgrow it are asked for again in chunks of 10 ids (the SDK's chunk
# for segmentation versions), i.e. ~3 MiB per annotation. Several answers can be in flight at
# once (read-ahead, metadata of a few pages), so the cap is kept well below the memory of a
# small machine.
DEFAULT_API_MAX_BODY = 32 * MiB


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Timeouts(_Frozen):
    """Seconds. ``stall`` is the longest a body may go without a byte before it is retried."""

    connect: float = Field(10.0, gt=0)
    read: float = Field(30.0, gt=0)
    stall: float = Field(20.0, gt=0)
    api: float = Field(60.0, gt=0)


class RetryPolicy(_Frozen):
    """Exponential backoff with full jitter.

    ``attempts`` counts consecutive failures *without progress*: the budget is reset whenever
    bytes arrive, so a flaky but progressing transfer finishes.
    """

    attempts: int = Field(8, ge=1)
    base_delay: float = Field(0.25, ge=0)
    max_delay: float = Field(20.0, ge=0)
    max_retry_after: float = Field(120.0, ge=0)


class TransferOptions(_Frozen):
    """How one object becomes one file."""

    chunk_size: int = Field(1 * MiB, ge=4 * KiB)
    segment_threshold: int = Field(64 * MiB, ge=1)
    segment_size: int = Field(32 * MiB, ge=64 * KiB)
    segments: int = Field(4, ge=1, le=64)
    # Bodies at least this large, over plain HTTP, are read by a worker thread straight from
    # the socket instead of by the event loop (engine.transfer.socket_pump).
    thread_body_min: int = Field(8 * MiB, ge=0)
    url_margin: float = Field(30.0, ge=0)
    unknown_url_lifetime: float = Field(300.0, gt=0)
    fsync: bool = True
    timeouts: Timeouts = Timeouts()
    retry: RetryPolicy = RetryPolicy()


class Limits(_Frozen):
    """Concurrency: transfers in flight overall and against any one storage host."""

    concurrency: int = Field(32, ge=1, le=1024)
    per_host: int = Field(32, ge=1, le=1024)


class Settings(BaseSettings):
    """Everything a run needs. Frozen: build a new one with ``model_copy(update=...)``."""

    model_config = SettingsConfigDict(
        env_prefix="ASSETSYNC_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    api_url: str = DEFAULT_API_URL
    token: SecretStr | None = None
    dataset_version: str | None = None
    dest: Path | None = None
    layout: Literal["name", "id"] = "name"
    delete: bool = False
    max_delete: float = Field(50.0, ge=0, le=100)
    force: bool = False
    dry_run: bool = False
    tags: tuple[str, ...] = ()
    data_tags: tuple[str, ...] = ()
    limits: Limits = Limits()
    transfer: TransferOptions = TransferOptions()
    page_size: int = Field(1000, ge=1, le=1000)
    # Largest decoded API answer read (bytes): see DEFAULT_API_MAX_BODY.
    api_max_body: int = Field(DEFAULT_API_MAX_BODY, ge=64 * KiB)
    lock_stale_after: float = Field(6 * 3600.0, gt=0)

    @field_validator("api_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        value = value.strip()
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # No dotenv and no secrets dir: a cron job's behaviour should not depend on which
        # directory it happens to start in. The TOML file comes last, below the environment.
        return (init_settings, env_settings, _TomlSource(settings_cls))


_config_values: ContextVar[dict[str, Any] | None] = ContextVar(
    "assetsync_config_values", default=None
)


class _TomlSource(PydanticBaseSettingsSource):
    """The values of the TOML file chosen for this load (see :func:`load_settings`)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        values = _config_values.get() or {}
        return values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_config_values.get() or {})


_OTHER_TABLES = frozenset({"prefetch"})


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
    # Accept both a flat file and one with an [assetsync] table.
    section = data.get("assetsync", data)
    if not isinstance(section, dict):
        raise UsageError(f"config file {path}: [assetsync] must be a table")
    # Tables other components read from the same file (engine.prefetch.options): not ours.
    return {k: v for k, v in section.items() if k not in _OTHER_TABLES}


def _read_token_file(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UsageError(f"cannot read token file {path}: {exc.strerror}") from None
    if not token:
        raise UsageError(f"token file {path} is empty")
    return token


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"]) or "settings"
    return f"invalid setting {where}: {err['msg']}"


def load_settings(
    overrides: dict[str, Any] | None = None,
    *,
    config_file: Path | None = None,
    token_file: Path | None = None,
) -> Settings:
    """Build :class:`Settings` with the documented precedence.

    ``overrides`` are the command line's values (``None`` values are ignored; nested models may be
    given as dicts and merge with the lower sources). Raises :class:`~engine.errors.UsageError`
    with a one-line message on any bad value.
    """
    if config_file is None and os.environ.get("ASSETSYNC_CONFIG"):
        config_file = Path(os.environ["ASSETSYNC_CONFIG"])
    file_values = _read_toml(config_file) if config_file is not None else {}
    file_token = file_values.pop("token_file", None)
    if token_file is None and file_token is not None:
        token_file = Path(str(file_token))

    explicit = {k: v for k, v in (overrides or {}).items() if v is not None}
    if token_file is not None:
        explicit["token"] = _read_token_file(token_file)
    elif (
        "token" not in explicit
        and "ASSETSYNC_TOKEN" not in os.environ
        and os.environ.get("PICSELLIA_TOKEN")
    ):
        explicit["token"] = os.environ["PICSELLIA_TOKEN"]

    reset = _config_values.set(file_values)
    try:
        return Settings(**explicit)
    except ValidationError as exc:
        raise UsageError(_first_error(exc)) from None
    finally:
        _config_values.reset(reset)
