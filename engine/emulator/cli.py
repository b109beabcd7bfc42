"""``assetsync emulator``: run the local platform as a server until SIGINT / SIGTERM.

Prints the API URL, the token, the dataset version id and the control secret (one JSON object
with ``--json``). Binds 127.0.0.1 unless ``--host`` says otherwise. Faults can be set at start
with the convenience options or with ``--fault key=value,...`` (the fields of
:class:`~engine.emulator.faults.FaultRule`), and changed later through the control endpoint::

    --fault target=storage,kind=status,status=503,retry_after=1,count=3
    --fault target=storage,kind=ignore_if_range
    --fault target=storage,kind=misrange,shift=100,count=1
    --fault target=storage,kind=misrange,total_shift=-1
    --fault target=storage,kind=chunked

Objects are rewritten in place (``rewrite_object``) through the control endpoint's mutations.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from engine.cli.boundary import emit_json, json_option
from engine.emulator.emulator import Emulator
from engine.emulator.faults import FaultRule
from engine.errors import UsageError

__all__ = ["emulator_command", "parse_fault"]

_INT_FIELDS = {"status", "after_bytes", "add", "remove", "shift", "total_shift", "count"}
_FLOAT_FIELDS = {"retry_after", "seconds", "bytes_per_second", "probability"}


def parse_fault(spec: str) -> FaultRule:
    """``target=storage,kind=status,status=503,retry_after=1`` -> a FaultRule."""
    fields: dict[str, Any] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {part!r}", param_hint="--fault")
        try:
            if key in _INT_FIELDS:
                fields[key] = int(value)
            elif key in _FLOAT_FIELDS:
                fields[key] = float(value)
            else:
                fields[key] = value.strip()
        except ValueError:
            raise click.BadParameter(
                f"{key} must be a number, got {value!r}", param_hint="--fault"
            ) from None
    try:
        return FaultRule.from_dict(fields)
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--fault") from None


def _convenience_faults(options: dict[str, Any]) -> list[FaultRule]:
    rules: list[FaultRule] = []
    retry_after = options["retry_after"]
    if options["api_error_rate"]:
        rules.append(
            FaultRule(
                target="api",
                kind="status",
                status=options["api_error_status"],
                retry_after=retry_after,
                probability=options["api_error_rate"],
            )
        )
    if options["storage_error_rate"]:
        rules.append(
            FaultRule(
                target="storage",
                kind="status",
                status=options["storage_error_status"],
                retry_after=retry_after,
                probability=options["storage_error_rate"],
            )
        )
    if options["drop_rate"]:
        rules.append(FaultRule(target="storage", kind="drop", probability=options["drop_rate"]))
    if options["stall_rate"]:
        rules.append(
            FaultRule(
                target="storage",
                kind="stall",
                seconds=options["stall_seconds"],
                probability=options["stall_rate"],
            )
        )
    if options["throttle"]:
        rules.append(
            FaultRule(target="storage", kind="throttle", bytes_per_second=options["throttle"])
        )
    return rules


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
            return None
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return None


async def _serve(emulator: Emulator, as_json: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await emulator.start()
    except OSError as exc:
        where = f"{emulator.host}:{emulator.port}"
        raise UsageError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    try:
        info = emulator.info()
        if emulator.host not in ("127.0.0.1", "::1", "localhost"):
            click.echo(
                f"warning: listening on {emulator.host}: the emulator is a test server, anyone "
                "who can reach it and read the token can use it",
                err=True,
            )
        if as_json:
            emit_json(info)
        else:
            click.echo(f"API URL:            {info['api_url']}")
            click.echo(f"Token:              {info['token']}")
            click.echo(f"Dataset version id: {info['dataset_version_id']}")
            click.echo(f"Organization id:    {info['organization_id']}")
            click.echo(f"Control secret:     {info['control_secret']}")
            click.echo(f"Assets:             {info['assets']}")
            click.echo("Serving until interrupted (Ctrl-C).")
        await stop.wait()
    finally:
        await emulator.close()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=0, show_default=True, help="Port (0: any free port).")
@click.option("--assets", default=200, show_default=True, help="Generated assets.")
@click.option("--seed", default=0, show_default=True, help="Seed of the generated dataset.")
@click.option(
    "--from-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Serve the files of this folder instead of generated content.",
)
@click.option("--url-ttl", default=3600.0, show_default=True, help="Signed URL lifetime (s).")
@click.option(
    "--signing",
    type=click.Choice(["s3", "gcs", "azure", "mixed"]),
    default="s3",
    show_default=True,
    help="Storage URL signing style (mixed: per asset).",
)
@click.option("--null-url-share", default=0.0, help="Share of listed assets with no URL.")
@click.option("--min-size", default=512, show_default=True, help="Smallest generated size (B).")
@click.option("--max-size", default=256 * 1024, show_default=True, help="Largest ordinary size.")
@click.option("--empty-share", default=0.01, show_default=True, help="Share of empty objects.")
@click.option("--large-share", default=0.01, show_default=True, help="Share of large objects.")
@click.option("--large-size", default=9 * 1024 * 1024, show_default=True, help="Large size (B).")
@click.option("--no-nasty-filenames", is_flag=True, help="Only ordinary filenames.")
@click.option(
    "--cache-assets",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Keep derived records and annotations of this many assets (about 2.5 KB each).",
)
@click.option("--token", help="API token (default: random).")
@click.option("--control-secret", help="Secret of the control endpoint (default: random).")
@click.option("--throttle", type=float, help="Storage bandwidth, bytes per second (shared).")
@click.option("--api-error-rate", type=float, default=0.0, help="Share of API requests failed.")
@click.option("--api-error-status", type=int, default=503, show_default=True)
@click.option("--storage-error-rate", type=float, default=0.0, help="Share of storage failed.")
@click.option("--storage-error-status", type=int, default=503, show_default=True)
@click.option("--retry-after", type=float, help="Retry-After on injected errors (s).")
@click.option("--drop-rate", type=float, default=0.0, help="Share of storage bodies cut.")
@click.option("--stall-rate", type=float, default=0.0, help="Share of storage bodies stalled.")
@click.option("--stall-seconds", type=float, default=30.0, show_default=True)
@click.option("--fault", "fault_specs", multiple=True, help="key=value,... of a FaultRule.")
@click.option(
    "--api-latency",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Seconds each API answer waits (a remote platform's round trip).",
)
@click.option(
    "--storage-latency",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Seconds each storage answer waits before its first byte (an object store's).",
)
@click.option(
    "--loop",
    "loop_name",
    type=click.Choice(["asyncio", "uvloop"]),
    default="uvloop",
    show_default=True,
    help="Event loop.",
)
@click.option("--public-url", help="Base URL clients use to reach this server (Docker, proxies).")
@json_option("Print the start-up info as one JSON line (an error as one JSON object).")
def emulator_command(**options: Any) -> None:
    """Run the local platform emulator (API + signed storage) until interrupted."""
    faults = _convenience_faults(options) + [parse_fault(s) for s in options["fault_specs"]]
    emulator = Emulator(
        assets=options["assets"],
        seed=options["seed"],
        signing=options["signing"],
        url_ttl=options["url_ttl"],
        null_url_share=options["null_url_share"],
        min_size=options["min_size"],
        max_size=options["max_size"],
        empty_share=options["empty_share"],
        large_share=options["large_share"],
        large_size=options["large_size"],
        nasty_filenames=not options["no_nasty_filenames"],
        from_dir=options["from_dir"],
        token=options["token"],
        control_secret=options["control_secret"],
        host=options["host"],
        port=options["port"],
        public_url=options["public_url"],
        faults=faults,
        cache_assets=options["cache_assets"],
        api_latency=options["api_latency"],
        storage_latency=options["storage_latency"],
    )
    with asyncio.Runner(loop_factory=_loop_factory(options["loop_name"])) as runner:
        runner.run(_serve(emulator, options["json_output"]))
