"""Keep credentials out of the runs table: it is read by ``status`` and may be shared."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["safe_api_url", "safe_options"]

_SECRET_KEY = re.compile(r"token|secret|password|passwd|signature|credential|auth", re.I)


def safe_api_url(url: str) -> str:
    """Scheme, host, port and path only: no user info, query or fragment."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable url>"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def safe_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """A copy without any entry whose name suggests a credential, at any depth, and with URLs
    reduced by :func:`safe_api_url` (a signed URL's query string is its credential)."""
    clean: dict[str, Any] = {}
    for key, value in options.items():
        if _SECRET_KEY.search(str(key)):
            continue
        if isinstance(value, Mapping):
            value = safe_options(value)
        elif isinstance(value, str) and value.startswith(("http://", "https://")):
            value = safe_api_url(value)
        clean[str(key)] = value
    return clean
