"""The aiohttp application: shared context, JSON errors, the API decorator.

Every API handler is wrapped by :func:`api_endpoint`, which (in this order) counts the request
under its endpoint kind, applies an injected ``status`` fault, checks the bearer token, runs the
handler, and sends the answer through the body faults (drop / stall / throttle / chunked) when one
applies.
Injected statuses come before authentication because a real overload answer comes from the
gateway, before the application looks at the token.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from engine.emulator.activity import StorageActivity
from engine.emulator.bodies import ConnectionDropped, send_body
from engine.emulator.counters import Counters
from engine.emulator.dataset import Dataset
from engine.emulator.faults import FaultController, FaultRule
from engine.emulator.records import AssetRecord
from engine.emulator.signing import ExternalStorage, Signer

__all__ = [
    "CONTEXT",
    "ApiError",
    "Context",
    "api_endpoint",
    "build_app",
    "format_retry_after",
    "json_error",
]


class ApiError(Exception):
    """Raised by handlers for a JSON error answer (400 for malformed parameters, 404, ...)."""

    def __init__(self, status: int, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail


@dataclass
class Context:
    """Everything handlers share; one per emulator."""

    dataset: Dataset
    faults: FaultController
    counters: Counters
    signer: Signer
    token: str
    control_secret: str
    clock: Callable[[], float]
    external: ExternalStorage | None = None
    clock_offset: float = 0.0
    activity: StorageActivity = field(default_factory=StorageActivity)

    def now(self) -> float:
        return self.clock() + self.clock_offset

    def presign(self, record: AssetRecord) -> str:
        """A fresh signed URL for the record's object, valid for the current URL TTL."""
        now = self.now()
        self.counters.signed()
        if self.external is not None:
            # Imported here: the nginx runner's module needs POSIX-only modules (pwd, grp).
            from engine.emulator.nginx import secure_link_url

            external = self.external
            expires = int(now + self.faults.url_ttl)
            return secure_link_url(external.base_url, record.object_name, external.secret, expires)
        return self.signer.sign(record.style, record.object_name, now, self.faults.url_ttl)


CONTEXT = web.AppKey("assetsync_emulator_context", Context)

Handler = Callable[[web.Request, Context], Awaitable[web.StreamResponse]]


def format_retry_after(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


def json_error(
    status: int, message: str, detail: Any = None, headers: dict[str, str] | None = None
) -> web.Response:
    body: dict[str, Any] = {"message": message}
    if detail is not None:
        body["detail"] = detail
    return web.json_response(body, status=status, headers=headers)


def _fault_answer(rule: FaultRule) -> web.Response:
    headers = {}
    if rule.retry_after is not None:
        headers["Retry-After"] = format_retry_after(rule.retry_after)
    return json_error(rule.status, f"injected fault: status {rule.status}", headers=headers)


def _authorized(request: web.Request, token: str) -> str | None:
    """None when the bearer token is right, else the 401 message."""
    header = request.headers.get("Authorization")
    if not header:
        return "Authentication credentials were not provided."
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(
        given.strip().encode(), token.encode()
    ):
        return "Invalid token."
    return None


def api_endpoint(kind: str) -> Callable[[Handler], Callable[[web.Request], Awaitable[Any]]]:
    """Wrap an API handler: count, status faults, auth, errors, body faults."""

    def decorate(handler: Handler) -> Callable[[web.Request], Awaitable[Any]]:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            ctx = request.app[CONTEXT]
            ctx.counters.hit(kind)
            rule = ctx.faults.status_rule(kind)
            if rule is not None:
                return _fault_answer(rule)
            problem = _authorized(request, ctx.token)
            if problem is not None:
                return json_error(401, problem, headers={"WWW-Authenticate": "Bearer"})
            try:
                response = await handler(request, ctx)
            except ApiError as exc:
                return json_error(exc.status, exc.message, exc.detail)
            return await _with_body_faults(request, ctx, kind, response)

        endpoint.__name__ = handler.__name__
        return endpoint

    return decorate


async def _with_body_faults(
    request: web.Request, ctx: Context, kind: str, response: web.StreamResponse
) -> web.StreamResponse:
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
        return response
    body = response.body
    plan = ctx.faults.body_plan(kind, None, len(body))
    if plan.plain:
        return response
    headers = response.headers.copy()
    if plan.chunked:
        headers.popall("Content-Length", None)
    streamed = web.StreamResponse(status=response.status, headers=headers)
    if plan.chunked:
        streamed.enable_chunked_encoding()
    else:
        streamed.content_length = len(body)
    await streamed.prepare(request)
    try:
        await send_body(request, streamed, [body], plan, lambda _n: None)
    except ConnectionDropped:
        return streamed
    await streamed.write_eof()
    return streamed


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@web.middleware
async def _not_found_as_json(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Unknown routes and methods answer JSON, like the platform's API does."""
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        if request.path.startswith("/_emulator/"):
            return json_error(404, "Not found.")  # do not reveal the control endpoint
        return json_error(
            405, "Method not allowed.", headers={"Allow": ",".join(exc.allowed_methods)}
        )
    except web.HTTPNotFound:
        return json_error(404, "Not found.")


def build_app(ctx: Context) -> web.Application:
    """The emulator's application: API, built-in storage and the control endpoint."""
    from engine.emulator import api_routes, control, storage_routes

    app = web.Application(middlewares=[_not_found_as_json], client_max_size=16 * 1024 * 1024)
    app[CONTEXT] = ctx
    api_routes.register(app.router)
    storage_routes.register(app.router)
    control.register(app.router)
    return app
