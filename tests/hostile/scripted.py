"""A misbehaving server of our own: raw TCP on 127.0.0.1, one script per connection.

Real HTTP servers refuse to send what the engine must survive (a chunk size of ``-5``,
``Content-Length`` beside ``Transfer-Encoding``, a body that drips a byte every few seconds, an
answer nobody asked for). This one sends exactly the bytes a test scripts::

    async def script(conn: Conn) -> None:
        request = await conn.read_request()          # method, target, headers
        await conn.send(b"HTTP/1.1 200 OK\\r\\nContent-Length: 5\\r\\n\\r\\nhello")

    with ScriptedServer(script) as server:           # its own thread and event loop
        url = server.url + "/objects/x"
        ...
        server.requests                              # every request head received, in order

For end-to-end runs, :func:`hostile_storage` builds an :class:`~engine.emulator.Emulator` whose
signed URLs point at the scripted server (the emulator's external-storage mode), and
:func:`object_bytes` gives the bytes the emulator would have served for a request path, so a
script can serve the right object in the wrong way.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from engine.emulator import Emulator, ExternalStorage

__all__ = ["Conn", "Request", "ScriptedServer", "hostile_storage", "object_bytes"]

MAX_REQUEST_HEAD = 64 * 1024


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def range(self) -> tuple[int, int | None] | None:
        """``Range: bytes=a-b`` as ``(a, b)`` (b inclusive, or None for ``a-``)."""
        value = self.headers.get("range")
        if not value or not value.startswith("bytes="):
            return None
        first, _, last = value[6:].partition("-")
        return int(first), (int(last) if last else None)


@dataclass
class Conn:
    """One accepted connection, as the script sees it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    server: ScriptedServer
    index: int  # 0 for the server's first connection, and so on

    async def read_request(self) -> Request | None:
        """The next request head, or None when the client closed the connection."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        except asyncio.LimitOverrunError:
            return None
        lines = head[:-4].decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        request = Request(method, target, headers)
        self.server.requests.append(request)
        return request

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        self.server.bytes_sent += len(data)
        await self.writer.drain()

    async def drip(self, data: bytes, every: float, piece: int = 1) -> None:
        """Send ``data`` ``piece`` bytes at a time, one piece every ``every`` seconds."""
        for start in range(0, len(data), piece):
            await self.send(data[start : start + piece])
            await asyncio.sleep(every)

    async def send_forever(self, block: bytes = b"x" * 65536, every: float = 0.0) -> None:
        """Send ``block`` again and again until the client goes away (or the server stops)."""
        while True:
            await self.send(block)
            if every:
                await asyncio.sleep(every)

    def close(self) -> None:
        self.writer.close()


Script = Callable[[Conn], Awaitable[None]]


@dataclass
class ScriptedServer:
    """A TCP server on 127.0.0.1 (port 0) running ``script`` for each connection, on its own
    thread. Connection errors inside a script (the client went away) end that connection
    quietly; any other exception is kept in :attr:`errors` for the test to look at. With
    ``ssl_context`` it speaks TLS (and :attr:`url` is https)."""

    script: Script
    ssl_context: ssl.SSLContext | None = None
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    bytes_sent: int = 0
    errors: list[BaseException] = field(default_factory=list)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def url(self) -> str:
        scheme = "http" if self.ssl_context is None else "https"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = Conn(reader, writer, self, self.connections)
        self.connections += 1
        try:
            await self.script(conn)
        except (ConnectionError, ssl.SSLError, asyncio.CancelledError):
            pass
        except Exception as exc:
            self.errors.append(exc)
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    def start(self) -> ScriptedServer:
        ready = threading.Event()
        loop = self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)

            async def serve() -> None:
                self._server = await asyncio.start_server(
                    self._handle, "127.0.0.1", 0, limit=MAX_REQUEST_HEAD, ssl=self.ssl_context
                )
                self.port = self._server.sockets[0].getsockname()[1]

            loop.run_until_complete(serve())
            ready.set()
            loop.run_forever()
            for task in list(self._tasks):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            assert self._server is not None
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=run, name="scripted-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def hostile_storage(server: ScriptedServer, **emulator_options: Any) -> Emulator:
    """An emulator whose signed URLs all point at ``server``: ``<server>/objects/<object_name>``
    (with nginx secure_link parameters the scripted server is free to ignore)."""
    emulator_options.setdefault("assets", 5)
    emulator_options.setdefault("nasty_filenames", False)
    emulator_options.setdefault("large_share", 0.0)
    emulator_options.setdefault("empty_share", 0.0)
    return Emulator(
        external_storage=ExternalStorage(server.url, "hostile-secret"), **emulator_options
    )


def object_bytes(emulator: Emulator, path: str) -> bytes:
    """The object a storage request path names (``/objects/<object_name>``), or ``b""``."""
    prefix = "/objects/"
    if not path.startswith(prefix):
        return b""
    record = emulator.dataset.object_record(urllib.parse.unquote(path[len(prefix) :]))
    return b"" if record is None else emulator.dataset.content(record.data_id)
