"""Run the system nginx as a signed object store on loopback, for tests and benchmarks.

:class:`NginxServer` starts ``/usr/sbin/nginx`` (Debian builds it with ``secure_link``) as a
non-daemon child of this process, with a generated configuration in a private temporary folder
(pid, logs and temp paths all inside it), listening on ``127.0.0.1`` on a free port. It serves one
directory at two places:

``/objects/<name>?md5=<hash>&expires=<epoch>``
    Protected by ``ngx_http_secure_link_module``, the way a real deployment hands out expiring
    links. ``hash`` is the URL-safe base64 (no ``=``) of
    ``MD5("<expires>/objects/<name> <secret>")`` where ``<name>`` is the decoded path (nginx's
    ``$uri``). Answers are shaped like S3's so the
    engine's refresh logic treats nginx as it treats S3: a missing or wrong signature gets ``403``
    with ``<Error><Code>SignatureDoesNotMatch</Code>…``, an expired link gets ``403`` with
    ``<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>``.
    nginx's ``ETag`` is ``"<mtime>-<size>"`` in hex, not an MD5: a validator, never a checksum,
    which is exactly what the engine may assume of an ETag anyway.

``/plain/<name>``
    Unsigned, with ``autoindex on``, of the same folder or of ``plain_root`` when given (so a
    benchmark can show rclone the files under their dataset names while ``/objects/`` holds
    them under their object names). This exists for rclone: its http backend can only read a
    tree from HTML index pages and has no way to use per-object signed URLs (each object would be
    its own "remote"), so a platform that only hands out signed links cannot be mirrored with
    rclone at all. That is part of why users need assetsync; the benchmarks still measure rclone
    on this unsigned view to compare raw transfer speed.

:func:`secure_link_url` is the pure signing helper; the emulator's external-storage mode uses it
to hand out URLs that this server accepts.

Usage (synchronous or asynchronous)::

    with NginxServer(root) as nginx:
        url = nginx.signed_url("a/b.jpg", ttl=3600)
    async with NginxServer(root) as nginx:
        ...

Processes: nginx runs in its own session, so a Ctrl-C in a terminal reaches this process, whose
``stop()`` then asks nginx to quit (SIGQUIT, then SIGTERM, then SIGKILL of its process group).
"""

from __future__ import annotations

import base64
import contextlib
import grp
import hashlib
import http.client
import os
import pwd
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import anyio

__all__ = [
    "DEFAULT_NGINX",
    "NginxError",
    "NginxServer",
    "secure_link_md5",
    "secure_link_url",
]

DEFAULT_NGINX = "/usr/sbin/nginx"

# Characters that may appear in a secret or a served path without any quoting in nginx's
# configuration language: "$" would start a variable, quotes and ";" would end the token.
_SAFE_SECRET = re.compile(r"[A-Za-z0-9_.~+=-]{8,128}")
_UNSAFE_PATH_CHARS = frozenset("\"'\\$;{}\n\r\t")

_SIGNATURE_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    "<Error><Code>SignatureDoesNotMatch</Code>"
    "<Message>The request signature we calculated does not match the signature you provided."
    "</Message></Error>"
)
_EXPIRED_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
)

_START_ATTEMPTS = 5  # fresh ports to try when another process grabs ours between probe and bind
_STOP_GRACE = 5.0  # seconds for each of SIGQUIT and SIGTERM before escalating


class NginxError(RuntimeError):
    """nginx is missing, refused its configuration, or did not start or stop in time."""


def secure_link_md5(object_name: str, secret: str, expires: int) -> str:
    """The ``md5`` query value that nginx's secure_link checks for ``/objects/<object_name>``."""
    material = f"{expires}/objects/{object_name} {secret}".encode()
    digest = hashlib.md5(material, usedforsecurity=False).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def secure_link_url(base_url: str, object_name: str, secret: str, expires: int) -> str:
    """A signed URL for ``object_name`` (a relative POSIX path under the served root).

    The path is percent-quoted (spaces, non-ASCII, ``?``, ``#``, ``%``) while the signature is
    computed over the decoded name, because nginx's ``$uri`` is the decoded, normalised path.
    """
    quoted = urllib.parse.quote(object_name, safe="/")
    md5 = secure_link_md5(object_name, secret, expires)
    return f"{base_url.rstrip('/')}/objects/{quoted}?md5={md5}&expires={expires}"


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _check_path(path: Path) -> str:
    text = str(path)
    if any(ch in _UNSAFE_PATH_CHARS for ch in text):
        raise NginxError(f"path cannot be written into an nginx configuration: {text!r}")
    return text


class NginxServer:
    """The system nginx serving ``root`` on loopback: signed under ``/objects/``, plain under
    ``/plain/``. Use as a (sync or async) context manager, or call :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        secret: str | None = None,
        worker_processes: int | Literal["auto"] = 1,
        host: str = "127.0.0.1",
        binary: str = DEFAULT_NGINX,
        startup_timeout: float = 10.0,
        plain_root: Path | str | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.plain_root = Path(plain_root).resolve() if plain_root is not None else self.root
        self.secret = secret if secret is not None else secrets.token_urlsafe(24)
        if not _SAFE_SECRET.fullmatch(self.secret):
            raise ValueError("secret must be 8-128 characters of [A-Za-z0-9_.~+=-]")
        if worker_processes != "auto" and worker_processes < 1:
            raise ValueError("worker_processes must be >= 1 or 'auto'")
        self.worker_processes = worker_processes
        self.host = host
        self.binary = binary
        self.startup_timeout = startup_timeout
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None
        self._ready_token = secrets.token_hex(16)

    # -- public view ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise NginxError("nginx is not running")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash): what ExternalStorage wants."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The master process id while running (its workers share its process group)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def signed_url(
        self, object_name: str, *, ttl: float = 3600.0, expires: int | None = None
    ) -> str:
        """A URL for ``object_name`` valid until ``expires`` (epoch s) or for ``ttl`` seconds."""
        when = expires if expires is not None else int(time.time() + ttl)
        return secure_link_url(self.base_url, object_name, self.secret, when)

    def plain_url(self, object_name: str = "") -> str:
        """The unsigned URL of an object (or, with a trailing ``/``, of a directory index)."""
        return f"{self.base_url}/plain/{urllib.parse.quote(object_name, safe='/')}"

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        if self._proc is not None:
            raise NginxError("nginx is already running")
        if not os.access(self.binary, os.X_OK):
            raise NginxError(
                f"{self.binary} not found: install nginx (Debian: apt-get install nginx)"
            )
        for folder in (self.root, self.plain_root):
            if not folder.is_dir():
                raise NginxError(f"not a directory: {folder}")
            _check_path(folder)
        self._tmp = Path(tempfile.mkdtemp(prefix="assetsync-nginx-"))
        try:
            last_error = ""
            for _ in range(_START_ATTEMPTS):
                port = _free_port(self.host)
                error = self._try_start(port)
                if error is None:
                    self._port = port
                    return self
                last_error = error
                if "in use" not in error:
                    break
            raise NginxError(f"nginx did not start: {last_error}")
        except BaseException:
            self._cleanup_tmp()
            raise

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        self._port = None
        try:
            if proc is not None:
                self._terminate(proc)
        finally:
            self._cleanup_tmp()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await anyio.to_thread.run_sync(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # nginx must go even when the surrounding scope is being cancelled.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.stop)

    # -- internals -----------------------------------------------------------------------------

    def _try_start(self, port: int) -> str | None:
        """Start on ``port``; None when ready, else the reason (the error log's tail)."""
        assert self._tmp is not None
        conf = self._tmp / "nginx.conf"
        conf.write_text(self._config(port), encoding="utf-8")
        error_log = self._tmp / "error.log"
        error_log.unlink(missing_ok=True)
        with open(self._tmp / "stderr.log", "wb") as stderr:
            proc = subprocess.Popen(
                [self.binary, "-p", str(self._tmp), "-c", str(conf), "-e", str(error_log)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return self._log_tail() or f"nginx exited with status {proc.returncode}"
            if self._answers(port):
                self._proc = proc
                return None
            time.sleep(0.01)
        self._terminate(proc)
        return f"not ready after {self.startup_timeout:.0f} s: {self._log_tail()}"

    def _answers(self, port: int) -> bool:
        # A bare TCP connect could reach another process that grabbed the port; the per-instance
        # token proves it is our nginx answering.
        conn = http.client.HTTPConnection(self.host, port, timeout=1.0)
        try:
            conn.request("GET", "/__assetsync_ready")
            response = conn.getresponse()
            return response.status == 200 and response.read() == self._ready_token.encode()
        except OSError:
            return False
        finally:
            conn.close()

    def _terminate(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is not None:
            return
        # SIGQUIT is nginx's graceful shutdown (idle keep-alive connections are closed at
        # once); SIGTERM its fast one; SIGKILL of the group catches orphaned workers.
        for sig in (signal.SIGQUIT, signal.SIGTERM):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=_STOP_GRACE)
                return
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            proc.wait(timeout=_STOP_GRACE)
        except subprocess.TimeoutExpired as exc:
            raise NginxError(f"nginx (pid {proc.pid}) did not exit") from exc

    def _log_tail(self) -> str:
        assert self._tmp is not None
        parts: list[str] = []
        for name in ("error.log", "stderr.log"):
            with contextlib.suppress(OSError):
                parts.append((self._tmp / name).read_text(errors="replace").strip())
        return " | ".join(p for p in parts if p)[-2000:]

    def _cleanup_tmp(self) -> None:
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    def _config(self, port: int) -> str:
        assert self._tmp is not None
        tmp = _check_path(self._tmp)
        root = _check_path(self.root)
        plain_root = _check_path(self.plain_root)
        user = ""
        if os.geteuid() == 0:
            # Workers would otherwise drop to "nobody", who cannot read a 0700 folder such as
            # pytest's tmp_path or this temp dir. Everything binds to loopback only.
            owner = pwd.getpwuid(os.geteuid()).pw_name
            group = grp.getgrgid(os.getegid()).gr_name
            user = f"user {owner} {group};"
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        nofile = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
        # Cached descriptors and connections share the worker's file limit: a cache sized past
        # it makes nginx answer 500 ("Too many open files") on a big corpus.
        cached = max(64, nofile // 4)
        connections = max(64, min(4096, nofile // 4))
        temp_paths = "\n".join(
            f"    {kind}_temp_path {tmp}/{kind}_temp;"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return f"""# generated by engine.emulator.nginx; removed when the server stops
daemon off;
master_process on;
worker_processes {self.worker_processes};
worker_rlimit_nofile {nofile};
{user}
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;

events {{
    worker_connections {connections};
    multi_accept on;
}}

http {{
    types {{
        image/jpeg jpg jpeg;
        image/png png;
        image/webp webp;
        image/tiff tif tiff;
        application/json json;
        text/plain txt;
    }}
    default_type application/octet-stream;
    access_log off;
    server_tokens off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    open_file_cache max={cached} inactive=120s;
    open_file_cache_valid 120s;
    open_file_cache_errors on;
    # Object names may hold "//"; the signature covers the name as written.
    merge_slashes off;
{temp_paths}

    server {{
        listen {self.host}:{port} backlog=4096;
        server_name localhost;

        location = /__assetsync_ready {{
            default_type text/plain;
            return 200 "{self._ready_token}";
        }}

        location /objects/ {{
            alias "{root}/";
            secure_link $arg_md5,$arg_expires;
            secure_link_md5 "$secure_link_expires$uri {self.secret}";
            # "" = missing or wrong signature, "0" = valid signature but expired.
            if ($secure_link = "") {{
                rewrite ^ /__errors/signature last;
            }}
            if ($secure_link = "0") {{
                rewrite ^ /__errors/expired last;
            }}
        }}

        location /plain/ {{
            alias "{plain_root}/";
            autoindex on;
            charset utf-8;
        }}

        location = /__errors/signature {{
            internal;
            default_type application/xml;
            return 403 '{_SIGNATURE_BODY}';
        }}

        location = /__errors/expired {{
            internal;
            default_type application/xml;
            return 403 '{_EXPIRED_BODY}';
        }}

        location / {{
            return 404;
        }}
    }}
}}
"""
