"""Shared test configuration.

Every async test runs twice: on plain asyncio and on asyncio with uvloop, the engine's default
loop, because the two differ in exactly the places the engine leans on (sockets, sendfile,
signal handling, call_soon ordering).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    deadline=None,  # tests never assert on wall-clock time
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("default")


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {"use_uvloop": False}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    # Mark every coroutine test for anyio's plugin so tests need no decorator. This must happen
    # at collection, before parametrization: anyio's plugin parametrizes marked tests over
    # ``anyio_backend``, and a marker added later would leave them with one unnamed backend.
    if collector.funcnamefilter(name) and inspect.iscoroutinefunction(obj):  # type: ignore[attr-defined]
        pytest.mark.anyio(obj)


@pytest.fixture(autouse=True)
def _engine_loggers_enabled() -> None:
    # Importing the platform SDK (picsellia, a dev dependency some tests use) runs
    # logging.config.dictConfig with disable_existing_loggers, which silences every logger
    # created before it, the engine's included; tests that check warnings would then depend on
    # which module was collected first.
    for name, logger in logging.root.manager.loggerDict.items():
        if name.startswith("engine") and isinstance(logger, logging.Logger):
            logger.disabled = False


@pytest.fixture(autouse=True)
def _no_proxy_from_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    # The clients honour HTTP(S)_PROXY / NO_PROXY (engine.transfer.proxies): a developer's or a
    # CI machine's proxy must not sit between the tests and their servers on 127.0.0.1. The
    # proxy tests set what they need; subprocesses inherit this environment.
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
