"""A small bounded LRU map for the emulator's derived values.

The emulator derives everything from ``(seed, index, generation)`` instead of storing it; the API
asks for the same derivations several times while one page is served (the listing, then the
annotation and URL requests of that page), so the recent ones are kept here. Every cache is keyed
by everything its value depends on (a mutation changes the key or goes through an overlay that is
consulted first), so no entry can go stale; the bound keeps a million-asset listing from holding
a million values.
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import suppress
from typing import Generic, TypeVar

__all__ = ["LruCache"]

K = TypeVar("K")
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """At most ``entries`` values, the least recently used dropped first (0: keep nothing)."""

    __slots__ = ("_data", "entries", "hits", "misses")

    def __init__(self, entries: int) -> None:
        if entries < 0:
            raise ValueError("entries must be >= 0")
        self.entries = entries
        self._data: OrderedDict[K, V] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    # The emulator's loop thread is the usual caller, but tests and benchmarks also read the
    # dataset from another thread while it serves (EmulatorThread): an entry may vanish between
    # two steps here, which must not raise.

    def get(self, key: K) -> V | None:
        found = self._data.get(key)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        with suppress(KeyError):  # evicted meanwhile by another thread
            self._data.move_to_end(key)
        return found

    def put(self, key: K, value: V) -> V:
        if self.entries:
            data = self._data
            data[key] = value
            while len(data) > self.entries:
                try:
                    data.popitem(last=False)
                except KeyError:  # emptied meanwhile by another thread
                    break
        return value

    def pop(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()
