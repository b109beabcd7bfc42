"""``assetsync mirror`` through a real forward proxy (Debian's tinyproxy), as on a company network.

The API (aiohttp) and storage (the engine's own client) must both honour ``HTTP_PROXY`` /
``HTTPS_PROXY``: plain-HTTP requests go to the proxy in absolute form, https ones through a
``CONNECT`` tunnel, with ``Proxy-Authorization`` from the proxy URL's credentials; ``NO_PROXY``
sends them straight to their hosts. The proxy's own log is the witness. Storage here is a server
of its own (the emulator's external-storage mode) so that the log tells API requests from
storage requests by their port.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from engine.emulator import Emulator, ExternalStorage
from tests.command import command_env
from tests.hostile.scripted import Conn, ScriptedServer, object_bytes
from tests.mirror.helpers import assert_mirror_matches
from tests.tinyproxy import PASSWORD, Tinyproxy, running_tinyproxy

pytestmark = pytest.mark.slow

ASSETS = 6


@pytest.fixture
def tinyproxy(tmp_path: Path) -> Iterator[Tinyproxy]:
    with running_tinyproxy(tmp_path) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@dataclass
class Platform:
    emu: Emulator
    api_port: int
    storage: ScriptedServer
    cert_file: Path | None


def _platform(tls: ssl.SSLContext | None, cert_file: Path | None) -> Iterator[Platform]:
    holder: list[Emulator] = []

    async def serve(conn: Conn) -> None:
        while (request := await conn.read_request()) is not None:
            body = object_bytes(holder[0], request.path)
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
            await conn.send(head + body)

    with ScriptedServer(serve, ssl_context=tls) as storage:
        emulator = Emulator(
            assets=ASSETS,
            seed=5,
            large_share=0.0,
            empty_share=0.0,
            nasty_filenames=False,
            external_storage=ExternalStorage(storage.url, "proxy-test-secret"),
            ssl_context=tls,
        )
        with emulator.in_thread() as emu:
            holder.append(emu)
            yield Platform(emu, emu.port, storage, cert_file)


@pytest.fixture
def plain_platform() -> Iterator[Platform]:
    yield from _platform(None, None)


@pytest.fixture
def tls_platform(ca: trustme.CA, tmp_path: Path) -> Iterator[Platform]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    yield from _platform(server, pem)


def _mirror(
    platform: Platform, dest: Path, proxy_env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    env = command_env(platform.emu.token, **proxy_env)
    if platform.cert_file is not None:
        env.pop("SSL_CERT_DIR", None)
        env["SSL_CERT_FILE"] = str(platform.cert_file)
    args = [
        *(sys.executable, "-m", "engine", "mirror"),
        *("--api-url", platform.emu.api_url, "--dataset-version", platform.emu.dataset_version_id),
        *("--dest", str(dest), "--json", "--no-fsync"),
    ]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)


def _check_mirrored(result: subprocess.CompletedProcess[str], platform: Platform, dest: Path):
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["downloaded"] == ASSETS
    assert_mirror_matches(platform.emu, dest)
    assert PASSWORD not in result.stdout + result.stderr


def test_api_and_storage_over_http_go_through_the_proxy(
    tinyproxy: Tinyproxy, plain_platform: Platform, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    result = _mirror(plain_platform, dest, {"HTTP_PROXY": tinyproxy.url()})
    _check_mirrored(result, plain_platform, dest)
    lines = tinyproxy.requests()
    api = f"GET http://127.0.0.1:{plain_platform.api_port}/api/"
    storage = f"GET http://127.0.0.1:{plain_platform.storage.port}/objects/"
    assert any(line.startswith(api) for line in lines), lines
    assert sum(line.startswith(storage) for line in lines) >= ASSETS, lines
    # Each object was asked of storage once, and only through the proxy.
    assert len(plain_platform.storage.requests) == sum(line.startswith(storage) for line in lines)


def test_api_and_storage_over_https_go_through_connect_tunnels(
    tinyproxy: Tinyproxy, tls_platform: Platform, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    result = _mirror(tls_platform, dest, {"HTTPS_PROXY": tinyproxy.url()})
    _check_mirrored(result, tls_platform, dest)
    lines = tinyproxy.requests()
    assert f"CONNECT 127.0.0.1:{tls_platform.api_port} HTTP/1.1" in lines, lines
    assert f"CONNECT 127.0.0.1:{tls_platform.storage.port} HTTP/1.1" in lines, lines
    assert not any(line.startswith("GET") for line in lines)  # https never goes in the clear


def test_no_proxy_sends_everything_straight_to_the_hosts(
    tinyproxy: Tinyproxy, plain_platform: Platform, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    env = {"HTTP_PROXY": tinyproxy.url(), "HTTPS_PROXY": tinyproxy.url(), "NO_PROXY": "127.0.0.1"}
    result = _mirror(plain_platform, dest, env)
    _check_mirrored(result, plain_platform, dest)
    assert tinyproxy.requests() == []


def test_wrong_proxy_credentials_fail_in_one_line_without_showing_them(
    tinyproxy: Tinyproxy, tls_platform: Platform, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    wrong = tinyproxy.url().replace(PASSWORD, "not-" + PASSWORD)
    result = _mirror(tls_platform, dest, {"HTTPS_PROXY": wrong})
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Proxy" in lines[0] and "401" in lines[0], lines[0]  # tinyproxy's answer to CONNECT


def test_a_netrc_default_entry_does_not_break_the_api_behind_a_proxy(
    tinyproxy: Tinyproxy, plain_platform: Platform, tmp_path: Path
) -> None:
    """Why the API session gets ``proxy=`` and not aiohttp's ``trust_env=True``: the latter
    also reads ~/.netrc, and an entry for the API's host (here a ``default`` one) made aiohttp
    refuse the request's own ``Authorization`` header (ValueError)."""
    netrc = tmp_path / "netrc"
    netrc.write_text("default login someone password elsewhere\n")
    netrc.chmod(0o600)
    dest = tmp_path / "dest"
    result = _mirror(plain_platform, dest, {"HTTP_PROXY": tinyproxy.url(), "NETRC": str(netrc)})
    _check_mirrored(result, plain_platform, dest)
    assert any(line.startswith("GET http://") for line in tinyproxy.requests())
