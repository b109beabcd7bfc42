"""CPU per response of the storage client: llhttp (httptools) against the hand parser it replaced.

    .venv/bin/python -m benchmarks.http1_bench [--baseline REV] [--body 1024] [--n 20000]

Both clients run in this process, in alternating rounds: the current
``engine/transfer/http1.py`` and the one at ``--baseline`` (by default the commit before
httptools came in), loaded from git. Two measures, each the median over the rounds of this
process's CPU time (user + system) divided by the responses:

* ``in-memory``: one keep-alive answer (an S3-like head of 12 fields, ``--body`` bytes of body)
  delivered by a fake transport the moment the request is written, then read to its end and the
  connection put back: the parse, the response object, the body queue, no socket;
* ``loopback``: ``GET`` and read to the end over one kept-alive TCP connection to a server in a
  child process (so the server's CPU is not counted): the above plus the event loop and the
  socket, what a small object costs the client for real.

Prints both per implementation in µs per response and the ratio current / baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HTTP1 = "engine/transfer/http1.py"


def s3_answer(body_size: int) -> bytes:
    body = bytes(range(256)) * (body_size // 256) + b"x" * (body_size % 256)
    head = (
        "HTTP/1.1 200 OK\r\n"
        "x-amz-id-2: Xh0mE2ZvKq5l2yD8S2kD3p0m3lV0aH7qG8w1c9vZk4mR2tJ6nB5xY7uQ1oP3iL0e\r\n"
        "x-amz-request-id: 4442587FB7D0A2F9\r\n"
        "Date: Wed, 12 Oct 2025 17:50:00 GMT\r\n"
        "Last-Modified: Wed, 12 Oct 2025 17:49:00 GMT\r\n"
        'ETag: "fba9dede5f27731c9771645a39863328"\r\n'
        "x-amz-server-side-encryption: AES256\r\n"
        "x-amz-version-id: null\r\n"
        "Accept-Ranges: bytes\r\n"
        "Content-Type: image/jpeg\r\n"
        "Cache-Control: max-age=3600\r\n"
        "Server: AmazonS3\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode("latin-1") + body


def default_baseline() -> str:
    """The commit before the one that brought httptools into the client."""
    introduced = subprocess.run(
        ["git", "log", "--format=%H", "-S", "import httptools", "--", HTTP1],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not introduced:
        raise SystemExit("no commit brought httptools in yet: give --baseline REV")
    return introduced[-1] + "^"


def load(name: str, source: str) -> ModuleType:
    folder = Path(tempfile.mkdtemp(prefix="http1-bench-"))
    path = folder / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class FakeTransport:
    """Answers every request the moment it is written, as an instant server would."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.protocol: Any = None

    def write(self, data: bytes) -> None:
        self.protocol.data_received(self.answer)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def close(self) -> None:
        pass


async def in_memory(module: ModuleType, answer: bytes, n: int) -> float:
    client = module.StorageHttp()
    key = ("http", "127.0.0.1", 80)
    transport = FakeTransport(answer)
    protocol = module._Protocol(4 * 1024 * 1024)
    transport.protocol = protocol
    protocol.connection_made(transport)
    conn = module._Connection(key, protocol)
    limit = client._hosts[key] = asyncio.Semaphore(1)
    request = b"GET /bucket/object?X-Amz-Signature=abc HTTP/1.1\r\nHost: x\r\n\r\n"
    start = time.process_time()
    for _ in range(n):
        await limit.acquire()
        client._idle.clear()
        response = await client._exchange(conn, request, 30.0, False)
        while await response.read(1 << 20):
            pass
    return (time.process_time() - start) / n


SERVER = """
import asyncio, sys
answer = sys.stdin.buffer.read()

class Answer(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.pending = b""
    def data_received(self, data):
        self.pending += data
        while (end := self.pending.find(b"\\r\\n\\r\\n")) >= 0:
            self.pending = self.pending[end + 4:]
            self.transport.write(answer)

async def main():
    server = await asyncio.get_running_loop().create_server(Answer, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


async def loopback(module: ModuleType, port: int, n: int) -> float:
    client = module.StorageHttp()
    url = f"http://127.0.0.1:{port}/bucket/object?X-Amz-Signature=abc"
    response = await client.get(url, {}, read_timeout=30.0)  # connect outside the clock
    while await response.read(1 << 20):
        pass
    start = time.process_time()
    for _ in range(n):
        response = await client.get(url, {"Accept-Encoding": "identity"}, read_timeout=30.0)
        while await response.read(1 << 20):
            pass
    cost = (time.process_time() - start) / n
    assert client.connections_opened == 1
    client.close()
    return cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", help="git revision of the hand parser (default: found)")
    parser.add_argument("--body", type=int, default=1024, help="body bytes per answer")
    parser.add_argument("--n", type=int, default=20000, help="responses per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    baseline = args.baseline or default_baseline()
    old_source = subprocess.run(
        ["git", "show", f"{baseline}:{HTTP1}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    modules = {
        "hand parser": load("http1_baseline", old_source),
        "llhttp": load("http1_current", (ROOT / HTTP1).read_text()),
    }
    answer = s3_answer(args.body)
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert server.stdin is not None and server.stdout is not None
    server.stdin.write(answer)
    server.stdin.close()
    port = int(server.stdout.readline())
    results: dict[tuple[str, str], list[float]] = {}
    try:
        for _ in range(args.rounds):
            for name, module in modules.items():
                cost = asyncio.run(in_memory(module, answer, args.n))
                results.setdefault(("in-memory", name), []).append(cost)
                cost = asyncio.run(loopback(module, port, args.n // 4))
                results.setdefault(("loopback", name), []).append(cost)
    finally:
        server.terminate()
        server.wait()
    print(
        f"baseline {baseline}, body {args.body} B, {args.rounds} rounds, "
        f"{args.n} in-memory / {args.n // 4} loopback responses a round, pid {os.getpid()}"
    )
    for measure in ("in-memory", "loopback"):
        medians = {name: statistics.median(results[(measure, name)]) for name in modules}
        figures = ", ".join(f"{name} {cost * 1e6:.1f} µs" for name, cost in medians.items())
        ratio = medians["llhttp"] / medians["hand parser"]
        print(f"{measure:10} per response: {figures}; llhttp / hand parser = {ratio:.2f}")


if __name__ == "__main__":
    main()
