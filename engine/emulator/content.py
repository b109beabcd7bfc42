"""Object bytes: generated from ``(seed, data key)`` or read from a real file, never held whole.

Generated content is built from one random 256 KiB base block per emulator, rotated by an
object-specific offset and stamped with a 16-byte header (object key + block number) at the start
of every block. So any byte range costs one slice per block, two objects never share content, and
a transfer that splices the wrong object, the wrong block or the wrong offset fails its checksum.

Digests (MD5, SHA-256 and the S3-style ETag) are computed lazily on first use and cached in a
bounded LRU; objects above :data:`INLINE_HASH_LIMIT` are hashed in a worker thread by the async
accessor so a large object never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import struct
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BLOCK_SIZE",
    "INLINE_HASH_LIMIT",
    "ContentSource",
    "Digests",
    "ObjectSource",
]

BLOCK_SIZE = 256 * 1024
INLINE_HASH_LIMIT = 4 * 1024 * 1024
_HEADER = struct.Struct(">QQ")


@dataclass(frozen=True, slots=True)
class ObjectSource:
    """Where an object's bytes come from: a file on disk, or the generator keyed by ``key``."""

    key: int
    size: int
    path: Path | None = None


@dataclass(frozen=True, slots=True)
class Digests:
    """Checksums of one object; ``etag`` is quoted, multipart-style above the part size."""

    md5: str
    sha256: str
    etag: str


class ContentSource:
    """Produces object bytes in bounded chunks and caches their digests."""

    def __init__(self, seed: int, *, multipart_part_size: int, cache_entries: int = 65536) -> None:
        base = random.Random(f"assetsync-emulator-content:{seed}").randbytes(BLOCK_SIZE)
        self._doubled = base + base  # a rotation is then a single slice
        self._part_size = multipart_part_size
        self._digests: OrderedDict[tuple[int, int, str | None], Digests] = OrderedDict()
        self._cache_entries = cache_entries

    @property
    def cached(self) -> int:
        """How many objects' digests are cached (nothing is computed until asked for)."""
        return len(self._digests)

    def _piece(self, key: int, index: int, offset: int, take: int) -> bytes:
        """Bytes ``[offset, offset + take)`` of block ``index`` of object ``key``."""
        rotation = (key * 0x9E3779B97F4A7C15 + index * 0x632BE59BD9B4E019) % BLOCK_SIZE
        stop = offset + take
        if offset >= _HEADER.size:  # only the rotated base: one slice, no full-block copy
            return self._doubled[rotation + offset : rotation + stop]
        header = _HEADER.pack(key & 0xFFFFFFFFFFFFFFFF, index)
        return header[offset:stop] + self._doubled[rotation + _HEADER.size : rotation + stop]

    def iter_bytes(
        self, source: ObjectSource, start: int = 0, end: int | None = None
    ) -> Iterator[bytes]:
        """Yield bytes ``[start, end)`` of the object in chunks of at most :data:`BLOCK_SIZE`."""
        stop = source.size if end is None else min(end, source.size)
        if start >= stop:
            return
        if source.path is not None:
            yield from _iter_file(source.path, start, stop)
            return
        position = start
        while position < stop:
            index, offset = divmod(position, BLOCK_SIZE)
            take = min(BLOCK_SIZE - offset, stop - position)
            yield self._piece(source.key, index, offset, take)
            position += take

    def read(self, source: ObjectSource) -> bytes:
        """The whole object (for small objects and tests)."""
        return b"".join(self.iter_bytes(source))

    def _cache_key(self, source: ObjectSource) -> tuple[int, int, str | None]:
        return (source.key, source.size, None if source.path is None else str(source.path))

    def cached_digests(self, source: ObjectSource) -> Digests | None:
        key = self._cache_key(source)
        found = self._digests.get(key)
        if found is not None:
            self._digests.move_to_end(key)
        return found

    def digests(self, source: ObjectSource) -> Digests:
        """Digests of the object, computed now if not cached (blocking)."""
        found = self.cached_digests(source)
        if found is not None:
            return found
        computed = self._compute(source)
        self._remember(source, computed)
        return computed

    async def digests_async(self, source: ObjectSource) -> Digests:
        """Digests without blocking the loop on large objects (hashed in a worker thread)."""
        found = self.cached_digests(source)
        if found is not None:
            return found
        if source.size <= INLINE_HASH_LIMIT:
            computed = self._compute(source)
        else:
            computed = await asyncio.get_running_loop().run_in_executor(None, self._compute, source)
        self._remember(source, computed)
        return computed

    def _remember(self, source: ObjectSource, digests: Digests) -> None:
        self._digests[self._cache_key(source)] = digests
        while len(self._digests) > self._cache_entries:
            self._digests.popitem(last=False)

    def _compute(self, source: ObjectSource) -> Digests:
        md5 = hashlib.md5(usedforsecurity=False)
        sha = hashlib.sha256()
        part_md5s: list[bytes] = []
        part = hashlib.md5(usedforsecurity=False)
        part_filled = 0
        for chunk in self.iter_bytes(source):
            md5.update(chunk)
            sha.update(chunk)
            view = memoryview(chunk)
            while view:
                take = min(len(view), self._part_size - part_filled)
                part.update(view[:take])
                part_filled += take
                view = view[take:]
                if part_filled == self._part_size:
                    part_md5s.append(part.digest())
                    part = hashlib.md5(usedforsecurity=False)
                    part_filled = 0
        if part_filled:
            part_md5s.append(part.digest())
        if source.size > self._part_size:
            # What S3 reports for a multipart upload: MD5 of the parts' MD5s, then "-<parts>".
            combined = hashlib.md5(b"".join(part_md5s), usedforsecurity=False).hexdigest()
            etag = f'"{combined}-{len(part_md5s)}"'
        else:
            etag = f'"{md5.hexdigest()}"'
        return Digests(md5=md5.hexdigest(), sha256=sha.hexdigest(), etag=etag)


def _iter_file(path: Path, start: int, stop: int) -> Iterator[bytes]:
    with path.open("rb") as handle:
        handle.seek(start)
        remaining = stop - start
        while remaining > 0:
            chunk = handle.read(min(BLOCK_SIZE, remaining))
            if not chunk:
                raise OSError(f"file shrank while being read: {path.name}")
            remaining -= len(chunk)
            yield chunk
