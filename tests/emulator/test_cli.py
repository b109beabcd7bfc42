"""``assetsync emulator``: prints where it is, serves, stops cleanly on SIGINT / SIGTERM."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import click
import pytest

from engine.emulator.cli import parse_fault

from .conftest import http_get


@contextmanager
def _running(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "emulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        yield proc, first
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _get(url: str, token: str | None = None) -> tuple[int, Any]:
    status, body = http_get(url, token)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_json_start_up_serves_and_stops_cleanly(sig: signal.Signals) -> None:
    with _running("--json", "--assets", "25", "--seed", "3", "--signing", "gcs") as (proc, line):
        info = json.loads(line)
        assert info["api_url"].startswith("http://127.0.0.1:")
        assert set(info) >= {"api_url", "token", "dataset_version_id", "control_secret"}
        status, ping = _get(info["api_url"] + "/api/home/ping", info["token"])
        assert status == 200
        assert ping["sdk_version"] == "6.37.0"
        dv = info["dataset_version_id"]
        status, page = _get(f"{info['api_url']}/api/dataset/version/{dv}/assets", info["token"])
        assert page["count"] == 25
        assert "/gcs/" in page["items"][0]["data"]["presigned_url"]
        proc.send_signal(sig)
        assert proc.wait(timeout=20) == 0


def test_human_output_and_fault_options() -> None:
    args = ("--assets", "5", "--storage-error-rate", "1", "--retry-after", "2", "--loop", "asyncio")
    with _running(*args) as (proc, first):
        assert proc.stdout is not None
        lines = [first] + [proc.stdout.readline() for _ in range(2)]
        fields = dict(line.split(":", 1) for line in lines)
        api_url = fields["API URL"].strip()
        token = fields["Token"].strip()
        dv = fields["Dataset version id"].strip()
        _, page = _get(f"{api_url}/api/dataset/version/{dv}/assets", token)
        status, body = _get(page["items"][0]["data"]["presigned_url"])
        assert status == 503
        assert b"<Code>SlowDown</Code>" in body
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_from_dir_and_generic_fault(tmp_path) -> None:
    (tmp_path / "one.jpg").write_bytes(b"abc")
    args = ("--json", "--from-dir", str(tmp_path), "--fault", "target=ping,kind=status,status=502")
    with _running(*args) as (proc, line):
        info = json.loads(line)
        assert info["assets"] == 1
        assert _get(info["api_url"] + "/api/home/ping", info["token"])[0] == 502
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_parse_fault() -> None:
    rule = parse_fault("target=storage,kind=drop,after_bytes=100,count=2,probability=0.5")
    assert (rule.target, rule.kind, rule.after_bytes, rule.count, rule.probability) == (
        "storage",
        "drop",
        100,
        2,
        0.5,
    )
    for bad in ("kind", "target=api,kind=melt", "target=api,kind=status,colour=red"):
        with pytest.raises(click.BadParameter):
            parse_fault(bad)


def test_parse_fault_new_kinds() -> None:
    rule = parse_fault("target=storage,kind=misrange,shift=-3,total_shift=5,count=1")
    assert (rule.kind, rule.shift, rule.total_shift, rule.count) == ("misrange", -3, 5, 1)
    assert parse_fault("target=storage,kind=ignore_if_range").kind == "ignore_if_range"
    assert parse_fault("target=storage,kind=chunked,probability=0.5").kind == "chunked"
    with pytest.raises(click.BadParameter, match="shift"):
        parse_fault("target=storage,kind=misrange")
    with pytest.raises(click.BadParameter, match="shift must be a number"):
        parse_fault("target=storage,kind=misrange,shift=a lot")


def _raw_get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        connection.request("GET", f"{parts.path}?{parts.query}", headers=headers)
        response = connection.getresponse()
        found = {k.lower(): v for k, v in response.getheaders()}
        return response.status, found, response.read()
    finally:
        connection.close()


def test_new_faults_from_the_command_line() -> None:
    args = (
        "--json",
        "--assets",
        "5",
        "--min-size",
        "5000",
        "--empty-share",
        "0",
        "--fault",
        "target=storage,kind=chunked",
        "--fault",
        "target=storage,kind=misrange,shift=10,total_shift=1",
    )
    with _running(*args) as (proc, line):
        info = json.loads(line)
        dv = info["dataset_version_id"]
        _, page = _get(f"{info['api_url']}/api/dataset/version/{dv}/assets", info["token"])
        url = page["items"][0]["data"]["presigned_url"]
        status, headers, whole = _raw_get(url, {})
        assert status == 200 and "content-length" not in headers
        assert headers["transfer-encoding"] == "chunked"
        status, headers, body = _raw_get(url, {"Range": "bytes=0-99"})
        assert status == 206 and body == whole[10:110]
        assert headers["content-range"] == f"bytes 10-109/{len(whole) + 1}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
