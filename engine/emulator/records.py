"""How one asset is derived from ``(seed, index)`` and its data from ``(seed, index, gen)``.

Nothing here needs storing: an :class:`AssetRecord` is a pure function of ``(seed, index, gen)``,
derived from two keyed hashes (about ten microseconds), which is what lets a million-asset listing
live in a few kilobytes. The most recently derived records are kept in a bounded LRU
(:data:`RECORD_CACHE_ENTRIES`, 17 MB) because the API derives the same ones several times
while it serves one page; as the key is everything a record depends on, no mutation can make an
entry stale. Mutations are overlays held by :class:`~engine.emulator.dataset.Dataset`, applied to
what this module derives.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from engine.emulator.cache import LruCache
from engine.emulator.content import ObjectSource
from engine.emulator.ids import IdCodec
from engine.emulator.names import content_type_for, filename_for

__all__ = [
    "ASSET_TAG_POOL",
    "DATA_TAG_POOL",
    "RECORD_CACHE_ENTRIES",
    "AssetRecord",
    "FileEntry",
    "GeneratorSpec",
    "RecordFactory",
    "data_number",
    "split_data_number",
]

ASSET_TAG_POOL: tuple[str, ...] = ("train", "val", "test", "hard", "reviewed", 'say "hi"')
DATA_TAG_POOL: tuple[str, ...] = (
    "camera-a",
    "camera-b",
    "camera-c",
    "night",
    "blurry",
    "back\\slash",
)
STYLES: tuple[str, ...] = ("s3", "gcs", "azure")
_BASE_EPOCH = 1_700_000_000  # 2023-11-14: when generated objects were "uploaded"
_INDEX_BITS = 40
# Records kept (about 1 KB each with their strings, measured with tracemalloc): 16 pages of
# 1000, so a page's later requests (annotations, URL refreshes, downloads) find what its listing
# derived.
RECORD_CACHE_ENTRIES = 16_384


_PACK_Q = struct.Struct(">Q").pack
_PACK_QQ = struct.Struct(">QQ").pack


def data_number(index: int, gen: int) -> int:
    return (gen << _INDEX_BITS) | index


def split_data_number(number: int) -> tuple[int, int]:
    return number & ((1 << _INDEX_BITS) - 1), number >> _INDEX_BITS


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One real file of a ``from_dir`` dataset."""

    relpath: str
    path: Path
    size: int
    mtime: int


@dataclass(frozen=True, slots=True)
class GeneratorSpec:
    """Knobs of the generated dataset (see :class:`~engine.emulator.Emulator`)."""

    seed: int = 0
    assets: int = 200
    min_size: int = 512
    max_size: int = 256 * 1024
    large_share: float = 0.01
    large_size: int = 9 * 1024 * 1024
    empty_share: float = 0.01
    nasty_filenames: bool = True
    null_url_share: float = 0.0
    signing: str = "s3"


@dataclass(frozen=True, slots=True)
class AssetRecord:
    """Everything the API says about one asset (tags and annotations come from the dataset)."""

    index: int
    gen: int
    asset_id: str
    data_id: str
    object_name: str
    filename: str
    content_type: str
    width: int
    height: int
    source: ObjectSource
    last_modified: int
    null_url: bool
    style: str
    asset_digest: bytes
    data_digest: bytes


def _unit(digest: bytes, offset: int) -> float:
    """A float in [0, 1) from four bytes of a digest."""
    return int.from_bytes(digest[offset : offset + 4], "big") / 2**32


def _spread(index: int, share: float, phase: int) -> bool:
    """True for exactly floor(n * share) of the first n indices, evenly spread."""
    if share <= 0:
        return False
    return math.floor((index + phase + 1) * share) > math.floor((index + phase) * share)


class RecordFactory:
    """Derives :class:`AssetRecord` objects; holds only constants."""

    def __init__(
        self,
        spec: GeneratorSpec,
        codec: IdCodec,
        datalake_id: str,
        files: list[FileEntry] | None = None,
        *,
        cache_entries: int = RECORD_CACHE_ENTRIES,
    ) -> None:
        self.spec = spec
        self.codec = codec
        self.datalake_id = datalake_id
        self.files = files or []
        self._key = hashlib.sha256(f"assetsync-emulator-records:{spec.seed}".encode()).digest()
        # Keyed BLAKE2b states after each label: a digest is then a copy and one update.
        self._asset_hasher = hashlib.blake2b(b"asset", key=self._key, digest_size=32)
        self._data_hasher = hashlib.blake2b(b"data", key=self._key, digest_size=32)
        self._records: LruCache[tuple[int, int], AssetRecord] = LruCache(cache_entries)

    @property
    def cached(self) -> int:
        """How many derived records are kept."""
        return len(self._records)

    def _digest(self, label: bytes, *numbers: int) -> bytes:
        data = label + struct.pack(f">{len(numbers)}Q", *numbers)
        return hashlib.blake2b(data, key=self._key, digest_size=32).digest()

    def asset_digest(self, index: int) -> bytes:
        state = self._asset_hasher.copy()
        state.update(_PACK_Q(index))
        return state.digest()

    def data_digest(self, index: int, gen: int) -> bytes:
        state = self._data_hasher.copy()
        state.update(_PACK_QQ(index, gen))
        return state.digest()

    def record(self, index: int, gen: int) -> AssetRecord:
        """The record of asset ``index`` with its ``gen``-th data (cached; see the module)."""
        key = (index, gen)
        found = self._records.get(key)
        if found is not None:
            return found
        return self._records.put(key, self._derive(index, gen))

    def _derive(self, index: int, gen: int) -> AssetRecord:
        spec = self.spec
        asset_digest = self.asset_digest(index)
        data_digest = self.data_digest(index, gen)
        data_id = self.codec.encode("data", data_number(index, gen))
        key = int.from_bytes(data_digest[:8], "big")
        entry = self.files[index] if gen == 0 and index < len(self.files) else None
        if entry is not None:
            filename = entry.relpath
            source = ObjectSource(key=key, size=entry.size, path=entry.path)
            last_modified = entry.mtime
        else:
            filename = (
                self.files[index].relpath
                if index < len(self.files)
                else filename_for(index, spec.nasty_filenames)
            )
            source = ObjectSource(key=key, size=self._size(index, gen, data_digest))
            last_modified = _BASE_EPOCH + index * 37 + gen * 86_400
        content_type, extension = content_type_for(filename)
        style = spec.signing if spec.signing != "mixed" else STYLES[data_digest[8] % 3]
        width, height = self.dimensions(asset_digest)
        return AssetRecord(
            index=index,
            gen=gen,
            asset_id=self.codec.encode("asset", index),
            data_id=data_id,
            object_name=f"{self.datalake_id}/{data_id}{extension}",
            filename=filename,
            content_type=content_type,
            # From the asset, not the data: a replacement keeps the dimensions (and so the
            # annotations stay valid), as when a retouched image is uploaded again.
            width=width,
            height=height,
            source=source,
            last_modified=last_modified,
            null_url=_unit(asset_digest, 28) < spec.null_url_share,
            style=style,
            asset_digest=asset_digest,
            data_digest=data_digest,
        )

    def rewritten(
        self, record: AssetRecord, revision: int, size: int, last_modified: int
    ) -> AssetRecord:
        """``record`` after its object was rewritten in place for the ``revision``-th time:
        same ids, object name, filename and dimensions; new generated bytes of ``size``."""
        digest = self._digest(b"rewrite", record.index, record.gen, revision)
        source = ObjectSource(key=int.from_bytes(digest[:8], "big"), size=size)
        return dataclasses.replace(record, source=source, last_modified=last_modified)

    def _size(self, index: int, gen: int, digest: bytes) -> int:
        spec = self.spec
        if gen == 0:
            large = _spread(index, spec.large_share, 0)
            empty = not large and _spread(index, spec.empty_share, 50)
        else:
            large = _unit(digest, 16) < spec.large_share
            empty = not large and _unit(digest, 20) < spec.empty_share
        if large:
            return spec.large_size
        if empty:
            return 0
        low, high = max(spec.min_size, 1), max(spec.max_size, spec.min_size, 1)
        u = _unit(digest, 24)
        return int(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))

    @staticmethod
    def dimensions(asset_digest: bytes) -> tuple[int, int]:
        """Width and height of an asset's image (of every data it ever has)."""
        return (
            64 + int.from_bytes(asset_digest[20:22], "big") % 4033,
            64 + int.from_bytes(asset_digest[22:24], "big") % 4033,
        )

    @staticmethod
    def generated_asset_tags(asset_digest: bytes) -> tuple[str, ...]:
        u = _unit(asset_digest, 0)
        tags = ["train" if u < 0.7 else "val" if u < 0.9 else "test"]
        if _unit(asset_digest, 4) < 0.1:
            tags.append("hard")
        if _unit(asset_digest, 8) < 0.3:
            tags.append("reviewed")
        if _unit(asset_digest, 12) < 0.03:
            tags.append('say "hi"')
        return tuple(tags)

    @staticmethod
    def generated_data_tags(data_digest: bytes) -> tuple[str, ...]:
        tags = [DATA_TAG_POOL[data_digest[9] % 3]]
        if _unit(data_digest, 0) < 0.3:
            tags.append("night")
        if _unit(data_digest, 4) < 0.05:
            tags.append("blurry")
        if _unit(data_digest, 28) < 0.03:
            tags.append("back\\slash")
        return tuple(tags)

    @staticmethod
    def generated_annotation_count(asset_digest: bytes, ann_gen: int) -> int:
        # After a mutation there is always at least one annotation, so a mutation is visible.
        if ann_gen == 0:
            return asset_digest[16] % 4
        return 1 + (asset_digest[17] + ann_gen) % 3
