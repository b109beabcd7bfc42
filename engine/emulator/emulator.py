"""The in-process emulator: ``async with Emulator(...) as emu:``.

One aiohttp server on loopback serves the platform API, the built-in signed storage and the
control endpoint. See the package docstring for every choice made where the contract is silent.

The server cancels a handler as soon as its client's connection goes (aiohttp's
``handler_cancellation``), as a real server stops sending to a client that left; that is what
lets :meth:`Emulator.quiesce` return promptly after a client was killed mid-body.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from engine.emulator.app import Context, build_app
from engine.emulator.counters import Counters
from engine.emulator.dataset import Dataset, ExpectedAsset
from engine.emulator.faults import FaultController, FaultRule
from engine.emulator.records import GeneratorSpec
from engine.emulator.signing import STYLES, ExternalStorage, Signer
from engine.emulator.xget import XgetAppRunner

if TYPE_CHECKING:
    from engine.emulator.thread import EmulatorThread

__all__ = ["Emulator"]

T = TypeVar("T")
MiB = 1024 * 1024


class Emulator:
    """A local Picsellia-style platform: API, signed storage, faults and mutations.

    Keywords (all optional): ``assets`` (generated assets), ``seed``, ``signing`` ("s3", "gcs",
    "azure" or "mixed" = per asset), ``url_ttl`` (seconds), ``null_url_share``, the size
    distribution (``min_size``, ``max_size`` log-uniform; ``large_share`` of ``large_size``;
    ``empty_share`` of empty objects; objects above ``multipart_part_size`` get multipart-style
    ETags), ``nasty_filenames``, ``from_dir`` (real files instead of generated ones; ``assets``
    is then ignored), ``external_storage`` (nginx secure_link URLs), ``token``,
    ``control_secret``, ``host``, ``port``, ``public_url`` (the base clients use, when it is
    not the bind address: Docker, a proxy), ``clock`` (epoch seconds; tests move it to expire
    URLs), ``fault_seed`` (RNG of probabilistic faults), ``faults`` (rules active from start),
    ``cache_assets`` (keep derived records and annotations of that many assets, not only the
    recent ones: for benchmarks that list a large version twice) and ``ssl_context`` (serve API
    and storage over HTTPS, as real object stores do: tests of the TLS client paths),
    ``api_latency`` and ``storage_latency`` (seconds each API answer, and each storage answer's
    first byte, waits: a remote platform and object store, for benchmarks; 0, the default:
    none; an external storage's answers are not the emulator's to delay).
    """

    def __init__(
        self,
        *,
        assets: int = 200,
        seed: int = 0,
        signing: str = "s3",
        url_ttl: float = 3600.0,
        null_url_share: float = 0.0,
        min_size: int = 512,
        max_size: int = 256 * 1024,
        large_share: float = 0.01,
        large_size: int = 9 * MiB,
        empty_share: float = 0.01,
        multipart_part_size: int = 8 * MiB,
        nasty_filenames: bool = True,
        from_dir: Path | str | None = None,
        external_storage: ExternalStorage | None = None,
        token: str | None = None,
        control_secret: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        public_url: str | None = None,
        clock: Callable[[], float] = time.time,
        fault_seed: int | None = None,
        faults: Iterable[FaultRule] = (),
        cache_assets: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        api_latency: float = 0.0,
        storage_latency: float = 0.0,
    ) -> None:
        if signing not in (*STYLES, "mixed"):
            raise ValueError(f"signing must be one of s3, gcs, azure, mixed (got {signing!r})")
        if assets < 0:
            raise ValueError("assets must be >= 0")
        if api_latency < 0 or storage_latency < 0:
            raise ValueError("latencies must be >= 0")
        spec = GeneratorSpec(
            seed=seed,
            assets=assets,
            min_size=min_size,
            max_size=max_size,
            large_share=large_share,
            large_size=large_size,
            empty_share=empty_share,
            nasty_filenames=nasty_filenames,
            null_url_share=null_url_share,
            signing=signing,
        )
        self.dataset = Dataset(
            spec,
            from_dir=Path(from_dir) if from_dir is not None else None,
            multipart_part_size=multipart_part_size,
            cache_assets=cache_assets,
        )
        self.faults = FaultController(
            url_ttl=url_ttl, seed=seed if fault_seed is None else fault_seed
        )
        for rule in faults:
            self.faults.add(rule)
        self.counters = Counters()
        self.token = token or secrets.token_urlsafe(24)
        self.control_secret = control_secret or secrets.token_urlsafe(24)
        self.host = host
        self._port = port
        # Behind Docker or a proxy the bind address is not where clients reach us; signed URLs
        # and the printed API URL use this instead.
        self._public_url = public_url.rstrip("/") if public_url else None
        self._clock = clock
        self._external = external_storage
        self._ssl = ssl_context
        self._signer = Signer(secrets.token_bytes(32), base_url="http://unbound")
        self._context = Context(
            dataset=self.dataset,
            faults=self.faults,
            counters=self.counters,
            signer=self._signer,
            token=self.token,
            control_secret=self.control_secret,
            clock=clock,
            external=external_storage,
            api_latency=api_latency,
            storage_latency=storage_latency,
        )
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    # ----- lifecycle -----------------------------------------------------------------------

    async def start(self) -> Emulator:
        if self._runner is not None:
            raise RuntimeError("emulator already started")
        runner = XgetAppRunner(
            build_app(self._context),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=1.0,
            handler_cancellation=True,  # a client gone: its response stops (see quiesce)
        )
        await runner.setup()
        try:
            site = web.TCPSite(
                runner, self.host, self._port, reuse_address=True, ssl_context=self._ssl
            )
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = runner.addresses[0][1]
        self._signer.base_url = self.api_url
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        return self

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Emulator:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def in_thread(self) -> EmulatorThread:
        """A context manager running this emulator on a background thread's loop."""
        from engine.emulator.thread import EmulatorThread

        return EmulatorThread(self)

    # ----- what clients need -----------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def api_url(self) -> str:
        if self._public_url is not None:
            return self._public_url
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "http" if self._ssl is None else "https"
        return f"{scheme}://{host}:{self._port}"

    @property
    def dataset_version_id(self) -> str:
        return self.dataset.dataset_version_id

    @property
    def dataset_version_ids(self) -> list[str]:
        return [self.dataset.dataset_version_id]

    @property
    def organization_id(self) -> str:
        return self.dataset.organization_id

    @property
    def datalake_id(self) -> str:
        return self.dataset.datalake_id

    @property
    def external_storage(self) -> ExternalStorage | None:
        return self._external

    def now(self) -> float:
        """The emulator's time: ``clock()`` plus any advance made through the control endpoint."""
        return self._context.now()

    def advance_clock(self, seconds: float) -> None:
        """Move the emulator's clock forward (expires URLs without sleeping)."""
        self._context.clock_offset += seconds

    def info(self) -> dict[str, Any]:
        """What the CLI prints: where the API is and what to list."""
        return {
            "api_url": self.api_url,
            "token": self.token,
            "dataset_version_id": self.dataset_version_id,
            "organization_id": self.organization_id,
            "datalake_id": self.datalake_id,
            "control_secret": self.control_secret,
            "assets": self.dataset.count(),
        }

    def write_objects(self, root: Path | str) -> int:
        """Write the live assets' objects under ``root`` for an external (nginx) storage."""
        return self.dataset.write_objects(Path(root))

    # ----- waiting for storage to go quiet ---------------------------------------------------

    async def quiesce(self) -> None:
        """Return when every storage response under way has finished or been abandoned by
        its client (cancelled, killed): ``counters.storage_bytes`` then stays put until the
        next request. May be awaited on any loop; bound the wait with ``asyncio.timeout`` /
        ``anyio.fail_after`` (cancelling it cancels the wait on the emulator's loop too)."""
        loop = self._loop
        if loop is None or self._runner is None:
            return
        idle = self._context.activity.idle
        if loop is asyncio.get_running_loop():
            await idle()
            return
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(idle(), loop))

    def quiesce_sync(self, timeout: float = 30.0) -> None:
        """:meth:`quiesce` for a caller on another thread (an :class:`EmulatorThread` user)."""
        loop = self._loop
        if loop is None or self._runner is None or not loop.is_running():
            return
        if self._loop_thread == threading.get_ident():
            raise RuntimeError("on the emulator's own loop, use: await emulator.quiesce()")
        idle = self._context.activity.idle
        asyncio.run_coroutine_threadsafe(asyncio.wait_for(idle(), timeout), loop).result()

    @property
    def storage_active(self) -> int:
        """Storage responses being answered right now."""
        return self._context.activity.active

    # ----- mutations (take effect immediately; safe to call from another thread) ----------

    def _on_loop(self, fn: Callable[..., T], *args: Any) -> T:
        loop = self._loop
        if loop is None or self._loop_thread == threading.get_ident() or not loop.is_running():
            return fn(*args)

        async def call() -> T:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(call(), loop).result()

    def replace_data(self, asset_id: str) -> str:
        """New content, new data id and object name for the asset; returns the new data id."""
        return self._on_loop(self.dataset.replace_data, asset_id)

    def rewrite_object(self, data_id: str, size: int | None = None) -> ExpectedAsset:
        """Overwrite the object of ``data_id`` in place: new bytes (of ``size``, default the
        current size), new ETag and Last-Modified; same data id, object name and URLs (signed
        URLs already issued stay valid and serve the new bytes). Returns what the object now
        holds (``sha256`` of the new bytes). Responses already under way finish with the old
        bytes. The data id may be any ever issued, current or replaced."""

        def rewrite() -> ExpectedAsset:
            self.dataset.rewrite_object(data_id, size, now=int(self.now()))
            return self.dataset.expected_data(data_id)

        return self._on_loop(rewrite)

    def add_assets(self, n: int) -> list[str]:
        return self._on_loop(self.dataset.add_assets, n)

    def delete_assets(self, asset_ids: Iterable[str]) -> None:
        self._on_loop(self.dataset.delete_assets, list(asset_ids))

    def set_asset_tags(self, asset_id: str, names: Iterable[str]) -> None:
        self._on_loop(self.dataset.set_asset_tags, asset_id, list(names))

    def set_data_tags(self, asset_id: str, names: Iterable[str]) -> None:
        self._on_loop(self.dataset.set_data_tags, asset_id, list(names))

    def set_annotations(self, asset_id: str, annotations: list[dict[str, Any]]) -> list[str]:
        return self._on_loop(self.dataset.set_annotations, asset_id, annotations)

    def mutate_annotations(self, asset_id: str) -> list[str]:
        return self._on_loop(self.dataset.mutate_annotations, asset_id)
