"""Request and byte counters, readable by tests and benchmarks.

Every request that reaches a route is counted under its endpoint kind when it arrives, whatever
its answer (401, injected faults and expired URLs included). ``storage_bytes`` counts body bytes
handed to the transport, so a dropped connection counts what was sent before the drop.
``storage_statuses`` counts storage answers by status code (200, 206, 416, 403, injected
faults...), so a test can tell which path a client took: a resume whose ``If-Range`` no longer
matched shows up as a 200 among the 206s. ``url_signings`` counts the signed storage URLs the
API handed out (in listings, ``XGET`` answers and presigned-url answers): what a client's URL
freshness costs the platform.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["API_KINDS", "KINDS", "Counters"]

API_KINDS: tuple[str, ...] = (
    "ping",
    "organization",
    "datasetversion_find",
    "datasetversion",
    "assets_list",
    "assets_xget",
    "asset_ids",
    "asset",
    "data",
    "presign",
    "version_tags",
    "datalake_tags",
    "labels",
    "asset_annotations",
    "annotation_ids",
    "annotations_bulk",
)
KINDS: tuple[str, ...] = (*API_KINDS, "storage")


class Counters:
    """Counts requests per endpoint kind and storage bytes per object."""

    def __init__(self) -> None:
        self._requests: dict[str, int] = dict.fromkeys(KINDS, 0)
        self._bytes: Counter[str] = Counter()
        self._storage_bytes = 0
        self._statuses: Counter[int] = Counter()
        self._signings = 0

    def hit(self, kind: str) -> None:
        self._requests[kind] = self._requests.get(kind, 0) + 1

    def answered(self, status: int) -> None:
        """Storage answered ``status`` (counted when the status is decided)."""
        self._statuses[status] += 1

    def signed(self) -> None:
        """The API signed one storage URL."""
        self._signings += 1

    def add_storage_bytes(self, data_id: str, count: int) -> None:
        self._storage_bytes += count
        self._bytes[data_id] += count

    @property
    def requests(self) -> Mapping[str, int]:
        return MappingProxyType(self._requests)

    @property
    def api_requests(self) -> int:
        return sum(n for kind, n in self._requests.items() if kind != "storage")

    @property
    def storage_requests(self) -> int:
        return self._requests["storage"]

    @property
    def storage_bytes(self) -> int:
        return self._storage_bytes

    @property
    def url_signings(self) -> int:
        return self._signings

    def storage_bytes_for(self, data_id: str) -> int:
        return self._bytes.get(data_id, 0)

    @property
    def storage_statuses(self) -> Mapping[int, int]:
        """Storage answers by status code (only codes that occurred)."""
        return MappingProxyType(dict(self._statuses))

    def reset(self) -> None:
        self._requests = dict.fromkeys(KINDS, 0)
        self._bytes.clear()
        self._storage_bytes = 0
        self._statuses.clear()
        self._signings = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": dict(self._requests),
            "api_requests": self.api_requests,
            "storage_requests": self.storage_requests,
            "storage_bytes": self._storage_bytes,
            "url_signings": self._signings,
            "storage_statuses": {str(code): n for code, n in sorted(self._statuses.items())},
        }
