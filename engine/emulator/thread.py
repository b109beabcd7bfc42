"""Running an emulator on a background thread, for synchronous callers (the SDK, benchmarks).

::

    with Emulator(assets=20).in_thread() as emu:      # or EmulatorThread(assets=20)
        Client(api_token=emu.token, host=emu.api_url)

The thread owns a fresh event loop (plain asyncio, or uvloop with ``use_uvloop=True``). The
Emulator's mutation methods may be called from the caller's thread: they hop onto the loop.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Any

from engine.emulator.emulator import Emulator

__all__ = ["EmulatorThread"]


class EmulatorThread:
    """Starts an :class:`Emulator` on its own thread and stops it on exit."""

    def __init__(
        self, emulator: Emulator | None = None, *, use_uvloop: bool = False, **kwargs: Any
    ) -> None:
        self.emulator = emulator if emulator is not None else Emulator(**kwargs)
        self._use_uvloop = use_uvloop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _new_loop(self) -> asyncio.AbstractEventLoop:
        if self._use_uvloop:
            import uvloop

            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
        return asyncio.new_event_loop()

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.emulator.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self.emulator.close())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def start(self) -> Emulator:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._loop = self._new_loop()
        self._thread = threading.Thread(target=self._run, name="assetsync-emulator", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self.emulator

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        thread.join()
        self._thread = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
