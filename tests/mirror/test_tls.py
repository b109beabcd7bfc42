"""HTTPS end to end: real object stores and the platform serve TLS only.

The API goes through aiohttp, storage through the engine's own HTTP/1.1 client
(``engine/transfer/http1.py``); both must verify certificates against the system's trust store
(here a test CA named by ``SSL_CERT_FILE``, which OpenSSL reads) and keep working over TLS when
connections drop mid-body and large objects come in parallel segments.
"""

from __future__ import annotations

import json
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from engine.emulator import Emulator, FaultRule
from tests.command import command_env, mirror_command
from tests.mirror.helpers import assert_mirror_matches, files_under

pytestmark = pytest.mark.slow

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_emu(ca: trustme.CA) -> Iterator[Emulator]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    emulator = Emulator(
        assets=24,
        seed=29,
        large_share=0.2,
        large_size=3 * MiB,
        nasty_filenames=True,
        fault_seed=3,
        ssl_context=server,
    )
    with emulator.in_thread() as running:
        yield running


def _run(emu: Emulator, dest: Path, cert_file: Path) -> subprocess.CompletedProcess[str]:
    """``assetsync mirror`` trusting only the CA in ``cert_file``."""
    env = command_env(emu.token, SSL_CERT_FILE=str(cert_file))
    env.pop("SSL_CERT_DIR", None)
    env.update(
        {
            # 3 MiB objects in 256 KiB segments over several TLS connections.
            "ASSETSYNC_TRANSFER__SEGMENT_THRESHOLD": str(MiB),
            "ASSETSYNC_TRANSFER__SEGMENT_SIZE": str(256 * 1024),
        }
    )
    args = mirror_command(emu, dest, "-q", "--json")
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)


def test_mirror_over_https_with_drops_verifies_and_matches(
    tls_emu: Emulator, ca: trustme.CA, tmp_path: Path
) -> None:
    assert tls_emu.api_url.startswith("https://")
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    tls_emu.faults.add(FaultRule(target="storage", kind="drop", probability=0.3, count=8))
    dest = tmp_path / "dest"
    result = _run(tls_emu, dest, pem)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["outcome"] == "ok"
    assert summary["downloaded"] == len(list(tls_emu.dataset.asset_ids()))
    assert summary["retries"] > 0  # the drops happened, over TLS, and were resumed
    assert_mirror_matches(tls_emu, dest)
    # Segmented objects: more storage GETs than assets.
    assert tls_emu.counters.requests["storage"] > summary["downloaded"]


def test_an_untrusted_certificate_is_refused_in_one_line(tls_emu: Emulator, tmp_path: Path):
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))  # a CA that did not sign the server's cert
    dest = tmp_path / "dest"
    result = _run(tls_emu, dest, other)
    assert result.returncode == 1  # the platform cannot be reached: nothing was changed
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "certificate" in lines[0].lower(), lines[0]
    assert tls_emu.token not in result.stderr + result.stdout
    assert not dest.exists() or files_under(dest) == set()
    assert tls_emu.counters.requests.get("storage", 0) == 0
