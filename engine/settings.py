"""Settings: frozen pydantic models, loaded from the command line, the environment and TOML.

Precedence, highest first: values passed explicitly (the command line, or a library caller),
environment variables ``ASSETSYNC_*`` (nested with ``__``, e.g. ``ASSETSYNC_TRANSFER__CHUNK_SIZE``),
a TOML file (``--config FILE`` or ``ASSETSYNC_CONFIG``), then the defaults below.

The token is deliberately not a command-line option (it would show in ``ps`` and shell history).
It follows the same precedence: ``--token-file`` (or a library caller's ``token``), then the
environment (``ASSETSYNC_TOKEN``, then ``PICSELLIA_TOKEN``, the platform SDK's variable), then the
TOML file's ``token_file`` or ``token``. It is held as a :class:`~pydantic.SecretStr` so it
never prints.
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
GiB = 1024 * MiB
TiB = 1024 * GiB

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
    """Seconds. ``stall`` is the longest a body may go without a byte before it is retried.

    ``min_rate`` (bytes/s, 0: off) bounds a body that never stalls but never gets anywhere
    either (a byte every few seconds restarts any stall timer): over each ``min_rate_window``
    seconds a storage body must average at least ``min_rate``, or the request ends as a stall
    and is retried from the bytes kept. 1 KiB/s over 30 s is two to three orders of magnitude
    above a drip (a byte every few seconds) and far below any link a mirror is usable on (64
    streams sharing 1 Mbit/s still get 2 KiB/s each); the window is long enough to ride out
    TCP's unfairness between streams and a congested minute's dips.
    """

    connect: float = Field(10.0, gt=0)
    read: float = Field(30.0, gt=0)
    stall: float = Field(20.0, gt=0)
    api: float = Field(60.0, gt=0)
    min_rate: float = Field(1024.0, ge=0)
    min_rate_window: float = Field(30.0, gt=0)


class RetryPolicy(_Frozen):
    """Exponential backoff with full jitter.

    ``attempts`` counts consecutive failures *without progress*. Progress means bytes kept on
    disk beyond the most an earlier attempt kept: a flaky but progressing transfer finishes,
    while a body cut at the same place on every restart from zero (a server ignoring ``Range``)
    spends the budget, and so does a body ended for being slower than ``timeouts.min_rate``,
    whatever it kept.
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
    # How a group-commit barrier makes the small files placed since the last one durable
    # (engine.transfer.durability): "syncfs" (one syncfs(2) of DEST's file system: fewest
    # syscalls and GIL hand-offs, but it flushes whatever else is dirty there too; "files"
    # where syncfs(2) is missing) or "files" (fdatasync each, fsync each folder: bounded by
    # our own data). syncfs by measurement: 20,000 x 64 KiB, 1.35-1.39 ms of CPU a file
    # against 1.56-1.99 for "files", wall no worse (benchmarks.per_file_cpu --syncfs).
    # Unused when fsync is off.
    barrier: Literal["files", "syncfs"] = "syncfs"
    # Group commit (the mirror): small files are placed without an fsync each and recorded
    # after one barrier per manifest transaction. A run killed in the barrier's window leaves
    # files placed and not recorded; the placed journal (engine.pipeline.placed_journal) lets
    # the next run adopt them by their SHA-256 instead of fetching them again (without it the
    # kill soak served 1.30-1.53x the version's bytes under load, against its 1.3x bound).
    group_commit: bool = True
    # Bytes. A server announcing a larger object is refused for that object, up front; a body
    # of unannounced length stops (that object fails) when it passes this. 1 TiB: a whole day
    # of 4K video at 100 Mbit/s, far beyond any asset of a vision dataset; object stores
    # allow 5 TiB, raise it for such objects.
    max_object_size: int = Field(1 * TiB, ge=1)
    # Bytes kept free on the file system of the partial files (checked every 64 MiB written
    # by the run, and before a large download starts): below it the run stops with
    # DiskFullError, partial files kept, before the disk is actually full. 0 turns it off.
    disk_reserve: int = Field(1 * GiB, ge=0)
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
    # Also delete the files of assets a tags filter leaves out (implies delete).
    delete_excluded: bool = False
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
# assetsync's own variable first: it is the more specific one (the SDK's may be set for
# another purpose).
_TOKEN_VARIABLES = ("ASSETSYNC_TOKEN", "PICSELLIA_TOKEN")


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


def _env_token() -> str | None:
    for name in _TOKEN_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def _token(
    explicit: Any,
    token_file: Path | None,
    file_values: dict[str, Any],
    config_file: Path | None,
) -> Any:
    """The token, by the documented precedence: the command line (``--token-file``, or a
    library caller's value) over the environment over the config file (``token_file`` or
    ``token``). A lower source is not even read when a higher one gave a token, so a config
    file's ``token_file`` that does not exist on this machine is no obstacle to an environment
    token. The file's keys are taken out of ``file_values`` either way."""
    in_file_path = file_values.pop("token_file", None)
    in_file = file_values.pop("token", None)
    if in_file_path is not None and in_file is not None:
        raise UsageError(f"config file {config_file}: give token or token_file, not both")
    if token_file is not None:
        return _read_token_file(token_file)
    if explicit is not None:
        return explicit
    from_env = _env_token()
    if from_env is not None:
        return from_env
    if in_file_path is not None:
        return _read_token_file(Path(str(in_file_path)))
    return in_file


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
    explicit = {k: v for k, v in (overrides or {}).items() if v is not None}
    token = _token(explicit.get("token"), token_file, file_values, config_file)
    if token is not None:
        explicit["token"] = token
    else:
        explicit.pop("token", None)

    reset = _config_values.set(file_values)
    try:
        return Settings(**explicit)
    except ValidationError as exc:
        raise UsageError(_first_error(exc)) from None
    finally:
        _config_values.reset(reset)
