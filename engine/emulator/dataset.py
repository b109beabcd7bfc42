"""The emulated dataset version: a lazy generator plus small overlays for mutations.

Asset ``i`` (in creation order) is derived from ``(seed, i)``; its current data from
``(seed, i, gen)`` where ``gen`` counts :meth:`Dataset.replace_data` calls. The live listing is
``range(next_index)`` minus a deleted set, so listing a million assets holds nothing per asset.
Tags, annotations and replacements are kept only for the assets they touch.

Replacing an asset's data changes its content, size, data id and object name only: the new data
keeps the old data's tags and dimensions, so the annotations stay valid. Objects of replaced or
deleted assets stay in storage (a datalake keeps its data): their data ids still resolve, so old
signed URLs keep working until they expire, as on a real object store.

Rewriting an object (:meth:`Dataset.rewrite_object`) is the other kind of change: the bytes
behind one data id and object name are overwritten in place, as when someone uploads over an
existing key. Ids, URLs, filename, tags, dimensions and annotations stay; the content (generated,
keyed by ``(seed, index, gen, revision)``), its ETag and ``Last-Modified`` change, and so may
its size. Signed URLs issued before stay valid and now serve the new bytes.

What the API derives again and again is kept, bounded, and keyed so that no mutation can make it
stale (see :mod:`~engine.emulator.cache`):

* records, per ``(index, gen)`` (:class:`~engine.emulator.records.RecordFactory`);
* generated tags, as one 12-bit mask per index (asset tags and the original data's tags depend
  on ``(seed, index)`` only), computed for blocks of :data:`TAG_MASK_BLOCK` indices the first
  time a ``q`` filter needs them: 2 bytes an asset, 2 MB for a million. Assets whose tags were
  set are looked up in the overlays instead;
* generated annotations, per ``(index, annotation generation)``, as ``(id, status, JSON text)``
  (:data:`ANNOTATION_CACHE_ENTRIES` assets, about 1.4 KB each): the bulk ``XGET`` answers the
  stored text, and ``annotations/ids`` needs no generation at all when it is not filtered by
  status (counts and ids are derived from the ids' encoding). Annotations set by
  :meth:`Dataset.set_annotations` live in their overlay and are never cached.

``cache_assets`` raises both bounds to cover that many assets: a benchmark that lists a version
twice then measures the client, as against a platform that reads stored rows, rather than the
emulator deriving everything again (records and annotations take ~2.5 KB an asset).
"""

from __future__ import annotations

import bisect
import copy
import json
import os
import random
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.emulator.annotations import (
    LABELS,
    annotation_number,
    generate_annotation_texts,
    split_annotation_number,
)
from engine.emulator.cache import LruCache
from engine.emulator.content import ContentSource, ObjectSource
from engine.emulator.ids import IdCodec
from engine.emulator.query import Query
from engine.emulator.records import (
    ASSET_TAG_POOL,
    DATA_TAG_POOL,
    RECORD_CACHE_ENTRIES,
    AssetRecord,
    FileEntry,
    GeneratorSpec,
    RecordFactory,
    split_data_number,
)

__all__ = [
    "ANNOTATION_CACHE_ENTRIES",
    "TAG_MASK_BLOCK",
    "AnnotationText",
    "Dataset",
    "ExpectedAsset",
    "scan_dir",
]

TAG_MASK_BLOCK = 4096
ANNOTATION_CACHE_ENTRIES = 8192
_DATA_TAG_SHIFT = 8  # asset tag k is bit k of a tag mask, data tag k is bit 8 + k
_ASSET_TAG_BIT = {name: 1 << k for k, name in enumerate(ASSET_TAG_POOL)}
_DATA_TAG_BIT = {name: 1 << (_DATA_TAG_SHIFT + k) for k, name in enumerate(DATA_TAG_POOL)}

# (annotation id, status, the annotation as JSON text exactly as the API sends it)
AnnotationText = tuple[str, str, str]


def _dumps(value: Any) -> str:
    # The API's serialisation (engine.emulator.app.dumps), which this module cannot import.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass
class ExpectedAsset:
    """What a faithful mirror of one asset must contain; digests are computed on first access."""

    asset_id: str
    data_id: str
    object_name: str
    filename: str
    size: int
    content_type: str
    width: int
    height: int
    tags: list[str]
    data_tags: list[str]
    annotations: list[dict[str, Any]]
    last_modified: int
    _content: ContentSource = field(repr=False, compare=False)
    _source: ObjectSource = field(repr=False, compare=False)
    revision: int = 0  # how many times the object was rewritten in place

    # A snapshot: an ExpectedAsset taken before a mutation keeps describing the old bytes
    # (sha256, md5 and etag below are those of the content it was taken of).

    @property
    def sha256(self) -> str:
        return self._content.digests(self._source).sha256

    @property
    def md5(self) -> str:
        return self._content.digests(self._source).md5

    @property
    def etag(self) -> str:
        """The quoted ETag storage sends (multipart-style for objects above the part size)."""
        return self._content.digests(self._source).etag


def scan_dir(root: Path) -> list[FileEntry]:
    """Regular files under ``root`` (symlinks not followed), sorted by relative POSIX path."""
    entries: list[FileEntry] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            stat = path.stat()
            rel = path.relative_to(root).as_posix()
            entries.append(FileEntry(rel, path, stat.st_size, int(stat.st_mtime)))
    entries.sort(key=lambda e: e.relpath)
    return entries


class Dataset:
    """One dataset version, its datalake and its organisation (see the module docstring)."""

    def __init__(
        self,
        spec: GeneratorSpec,
        *,
        from_dir: Path | None = None,
        multipart_part_size: int,
        cache_assets: int = 0,
    ) -> None:
        self.spec = spec
        self.codec = IdCodec(spec.seed)
        self.organization_id = self.codec.encode("organization", 0)
        self.datalake_id = self.codec.encode("datalake", 0)
        self.dataset_id = self.codec.encode("dataset", 0)
        self.dataset_version_id = self.codec.encode("version", 0)
        files = scan_dir(from_dir) if from_dir is not None else None
        self.factory = RecordFactory(
            spec,
            self.codec,
            self.datalake_id,
            files,
            cache_entries=max(RECORD_CACHE_ENTRIES, cache_assets),
        )
        self.content_source = ContentSource(spec.seed, multipart_part_size=multipart_part_size)
        self._next_index = len(files) if files is not None else spec.assets
        self._deleted: set[int] = set()
        self._deleted_sorted: list[int] = []
        self._data_gen: dict[int, int] = {}
        self._asset_tags: dict[int, tuple[str, ...]] = {}
        self._data_tags: dict[tuple[int, int], tuple[str, ...]] = {}
        self._ann_gen: dict[int, int] = {}
        self._ann_override: dict[int, list[dict[str, Any]]] = {}
        self._override_ann_owner: dict[str, int] = {}
        self._override_counter = 0
        # (index, gen) -> (revision, size, last_modified) of objects rewritten in place
        self._rewrites: dict[tuple[int, int], tuple[int, int, int]] = {}
        self._asset_tag_names: dict[str, None] = dict.fromkeys(ASSET_TAG_POOL)
        self._data_tag_names: dict[str, None] = dict.fromkeys(DATA_TAG_POOL)
        self.version = 0  # bumped by every mutation; keys the caches below
        self._cache: dict[tuple[str, int], Any] = {}
        # Indices whose asset tags or (any generation's) data tags were set: their tags come
        # from the overlays, not from the generated masks.
        self._tags_set: set[int] = set()
        self._tag_masks: dict[int, array[int]] = {}  # block number -> generated tag masks
        self._annotation_texts: LruCache[tuple[int, int], tuple[AnnotationText, ...]] = LruCache(
            max(ANNOTATION_CACHE_ENTRIES, cache_assets)
        )

    # ----- identity and lookup -------------------------------------------------------------

    @property
    def next_index(self) -> int:
        return self._next_index

    def is_live(self, index: int) -> bool:
        return 0 <= index < self._next_index and index not in self._deleted

    def index_of(self, asset_id: str) -> int | None:
        """Index of a live asset, or None."""
        index = self.codec.decode("asset", asset_id)
        return index if index is not None and self.is_live(index) else None

    def gen_of(self, index: int) -> int:
        return self._data_gen.get(index, 0)

    def record(self, index: int) -> AssetRecord:
        """The asset's current record (its latest data)."""
        return self._overlaid(self.factory.record(index, self.gen_of(index)))

    def _overlaid(self, record: AssetRecord) -> AssetRecord:
        if not self._rewrites:
            return record
        found = self._rewrites.get((record.index, record.gen))
        if found is None:
            return record
        revision, size, last_modified = found
        return self.factory.rewritten(record, revision, size, last_modified)

    def revision_of(self, record: AssetRecord) -> int:
        found = self._rewrites.get((record.index, record.gen))
        return 0 if found is None else found[0]

    def data_record(self, data_id: str) -> AssetRecord | None:
        """The record of any data id ever issued (current or replaced), or None."""
        number = self.codec.decode("data", data_id)
        if number is None:
            return None
        index, gen = split_data_number(number)
        if not 0 <= index < self._next_index or gen > self.gen_of(index):
            return None
        return self._overlaid(self.factory.record(index, gen))

    def object_record(self, object_name: str) -> AssetRecord | None:
        """The record whose storage object is ``object_name``, or None."""
        lake, _, rest = object_name.partition("/")
        if lake != self.datalake_id or "/" in rest:
            return None
        record = self.data_record(rest.split(".", 1)[0])
        return record if record is not None and record.object_name == object_name else None

    def asset_tags(self, index: int) -> tuple[str, ...]:
        found = self._asset_tags.get(index)
        if found is not None:
            return found
        return RecordFactory.generated_asset_tags(self.factory.asset_digest(index))

    def data_tags(self, record: AssetRecord) -> tuple[str, ...]:
        # Replaced data is tagged like the data it replaces (a mutation changes one thing);
        # set_data_tags changes the tags of the current data.
        for gen in range(record.gen, -1, -1):
            found = self._data_tags.get((record.index, gen))
            if found is not None:
                return found
        if record.gen == 0:
            return RecordFactory.generated_data_tags(record.data_digest)
        original = self.factory.data_digest(record.index, 0)
        return RecordFactory.generated_data_tags(original)

    def asset_tag_names(self) -> list[str]:
        return list(self._asset_tag_names)

    def data_tag_names(self) -> list[str]:
        return list(self._data_tag_names)

    def label_names(self) -> list[str]:
        return list(LABELS)

    # ----- annotations ---------------------------------------------------------------------

    def annotations(self, index: int) -> list[dict[str, Any]]:
        """BulkAnnotation dicts of a live asset, newest first (copies)."""
        override = self._ann_override.get(index)
        if override is not None:
            return copy.deepcopy(override)
        return [json.loads(text) for _, _, text in self.annotation_texts(index)]

    def _generate_annotation_texts(self, index: int, gen: int) -> tuple[AnnotationText, ...]:
        asset_digest = self.factory.asset_digest(index)
        count = RecordFactory.generated_annotation_count(asset_digest, gen)
        width, height = RecordFactory.dimensions(asset_digest)
        texts = generate_annotation_texts(
            seed=self.spec.seed,
            index=index,
            gen=gen,
            count=count,
            width=width,
            height=height,
            ids=self._generated_annotation_ids(index, gen, count),
            asset_id=self.codec.encode("asset", index),
        )
        return tuple(texts)

    def _generated_annotation_ids(self, index: int, gen: int, count: int) -> list[str]:
        encode = self.codec.encode
        return [encode("annotation", annotation_number(index, gen, k)) for k in range(count)]

    def annotation_texts(self, index: int) -> tuple[AnnotationText, ...]:
        """``(id, status, JSON text)`` of a live asset's annotations, newest first."""
        override = self._ann_override.get(index)
        if override is not None:
            return tuple((a["id"], a["status"], _dumps(a)) for a in override)
        key = (index, self._ann_gen.get(index, 0))
        found = self._annotation_texts.get(key)
        if found is not None:
            return found
        return self._annotation_texts.put(key, self._generate_annotation_texts(*key))

    def annotation_ids(self, index: int, status: str | None = None) -> list[str]:
        """Ids of a live asset's annotations, newest first, optionally with this status only."""
        override = self._ann_override.get(index)
        if override is not None:
            return [a["id"] for a in override if status is None or a["status"] == status]
        if status is not None:
            return [i for i, s, _ in self.annotation_texts(index) if s == status]
        gen = self._ann_gen.get(index, 0)
        count = RecordFactory.generated_annotation_count(self.factory.asset_digest(index), gen)
        return self._generated_annotation_ids(index, gen, count)

    def _annotation_owner(self, annotation_id: str) -> int | None:
        """The live asset that currently has this annotation id (None: no such annotation)."""
        owner = self._override_ann_owner.get(annotation_id)
        if owner is None:
            number = self.codec.decode("annotation", annotation_id)
            if number is None:
                return None
            owner, gen, _ = split_annotation_number(number)
            if owner in self._ann_override or gen != self._ann_gen.get(owner, 0):
                return None
        return owner if self.is_live(owner) else None

    def annotation(self, annotation_id: str) -> dict[str, Any] | None:
        """One current annotation of a live asset, by id."""
        owner = self._annotation_owner(annotation_id)
        if owner is None:
            return None
        for item in self.annotations(owner):
            if item["id"] == annotation_id:
                return item
        return None

    def annotation_text(self, annotation_id: str) -> str | None:
        """:meth:`annotation` as the JSON text the API sends, or None."""
        owner = self._annotation_owner(annotation_id)
        if owner is None:
            return None
        for found_id, _, text in self.annotation_texts(owner):
            if found_id == annotation_id:
                return text
        return None

    # ----- listing -------------------------------------------------------------------------

    def iter_live(self, after: int = -1) -> Iterator[int]:
        """Live indices greater than ``after``, in creation order (safe under mutation)."""
        index = after + 1
        while index < self._next_index:
            if index not in self._deleted:
                yield index
            index += 1

    def _tag_mask(self, index: int) -> int:
        """The generated tags of ``index`` as a mask (see the module docstring)."""
        block_number, offset = divmod(index, TAG_MASK_BLOCK)
        block = self._tag_masks.get(block_number)
        if block is None:
            block = self._tag_mask_block(block_number)
        return block[offset]

    def _tag_mask_block(self, block_number: int) -> array[int]:
        factory = self.factory
        masks = array("H")
        start = block_number * TAG_MASK_BLOCK
        for index in range(start, start + TAG_MASK_BLOCK):
            mask = 0
            for name in RecordFactory.generated_asset_tags(factory.asset_digest(index)):
                mask |= _ASSET_TAG_BIT[name]
            # Replaced data keeps the tags of the original data (see data_tags).
            for name in RecordFactory.generated_data_tags(factory.data_digest(index, 0)):
                mask |= _DATA_TAG_BIT[name]
            masks.append(mask)
        self._tag_masks[block_number] = masks
        return masks

    @staticmethod
    def _clause_masks(query: Query) -> list[int]:
        """Per clause, the mask bits of its names among the generated tags (0: none can match)."""
        out = []
        for clause in query.clauses:
            bits = _ASSET_TAG_BIT if clause.target == "asset" else _DATA_TAG_BIT
            mask = 0
            for name in clause.names:
                mask |= bits.get(name, 0)
            out.append(mask)
        return out

    def _matches_set_tags(self, index: int, query: Query) -> bool:
        return query.matches(self.asset_tags(index), self.data_tags(self.record(index)))

    def matches(self, index: int, query: Query | None) -> bool:
        if query is None:
            return True
        if index in self._tags_set:
            return self._matches_set_tags(index, query)
        mask = self._tag_mask(index)
        return all(mask & wanted for wanted in self._clause_masks(query))

    def _iter_matching(self, query: Query, after: int = -1) -> Iterator[int]:
        """Live indices greater than ``after`` that match ``query``, in creation order."""
        clause_masks = self._clause_masks(query)
        deleted, tags_set = self._deleted, self._tags_set
        index = after + 1
        while index < self._next_index:
            block_number, offset = divmod(index, TAG_MASK_BLOCK)
            block = self._tag_masks.get(block_number)
            if block is None:
                block = self._tag_mask_block(block_number)
            # The rest of this block in one tight loop (safe under mutation: the loop
            # re-reads next_index and the deleted set at every index, as iter_live does).
            stop = min((block_number + 1) * TAG_MASK_BLOCK, self._next_index)
            while index < stop:
                if index not in deleted:
                    if index in tags_set:
                        if self._matches_set_tags(index, query):
                            yield index
                    else:
                        mask = block[offset]
                        for wanted in clause_masks:
                            if not mask & wanted:
                                break
                        else:
                            yield index
                index += 1
                offset += 1
                stop = min(stop, self._next_index)

    def count(self, query: Query | None = None) -> int:
        if query is None:
            return self._next_index - len(self._deleted)
        key = ("count:" + query.fingerprint(), self.version)
        if key not in self._cache:
            self._cache[key] = sum(1 for _ in self._iter_matching(query))
        result: int = self._cache[key]
        return result

    def page(self, after: int, limit: int, query: Query | None, skip: int = 0) -> list[int]:
        """Cursor mode: up to ``limit`` matching indices after ``after``, skipping ``skip``."""
        out: list[int] = []
        if query is None and skip:
            # Unfiltered: jump straight to the first wanted index instead of walking to it.
            live_up_to_after = after + 1 - bisect.bisect_right(self._deleted_sorted, after)
            after = self._nth_live(live_up_to_after + skip) - 1
            skip = 0
        candidates = self.iter_live(after) if query is None else self._iter_matching(query, after)
        for index in candidates:
            if skip:
                skip -= 1
                continue
            out.append(index)
            if len(out) >= limit:
                break
        return out

    def _nth_live(self, k: int) -> int:
        """The k-th live index (0-based) of the unfiltered listing."""
        shift = 0
        while True:
            moved = bisect.bisect_right(self._deleted_sorted, k + shift)
            if moved == shift:
                return k + shift
            shift = moved

    def ordered_slice(
        self, order_by: list[str], query: Query | None, offset: int, limit: int
    ) -> list[int]:
        """Offset mode: ``limit`` indices at ``offset`` in the order ``order_by`` asks for."""
        fields = [field.lstrip("-") for field in order_by]
        if query is None and fields == ["created_at"]:
            total = self.count()
            stop = min(offset + limit, total)
            positions = range(offset, stop)
            if order_by[0].startswith("-"):
                positions = range(total - 1 - offset, total - 1 - stop, -1)
            return [self._nth_live(k) for k in positions]
        key = ("order:" + repr(order_by) + (query.fingerprint() if query else ""), self.version)
        if key not in self._cache:
            matching = self.iter_live() if query is None else self._iter_matching(query)
            indices = list(matching)
            for name in reversed(order_by):  # stable sorts, last key first
                reverse = name.startswith("-")
                if name.lstrip("-") == "filename":
                    indices.sort(key=lambda i: self.record(i).filename, reverse=reverse)
                else:
                    indices.sort(reverse=reverse)
            self._cache[key] = indices
        ordered: list[int] = self._cache[key]
        return ordered[offset : offset + limit]

    def asset_ids(self) -> Iterator[str]:
        """Ids of the live assets in listing order."""
        for index in self.iter_live():
            yield self.codec.encode("asset", index)

    def expected(self, asset_id: str) -> ExpectedAsset:
        """What a mirror must hold for a live asset now (its current data)."""
        index = self.index_of(asset_id)
        if index is None:
            raise KeyError(asset_id)
        return self._expected(index, self.record(index))

    def expected_data(self, data_id: str) -> ExpectedAsset:
        """The same for any data id ever issued (current, replaced, or of a deleted asset)."""
        record = self.data_record(data_id)
        if record is None:
            raise KeyError(data_id)
        return self._expected(record.index, record)

    def _expected(self, index: int, record: AssetRecord) -> ExpectedAsset:
        return ExpectedAsset(
            asset_id=record.asset_id,
            data_id=record.data_id,
            object_name=record.object_name,
            filename=record.filename,
            size=record.source.size,
            content_type=record.content_type,
            width=record.width,
            height=record.height,
            tags=list(self.asset_tags(index)),
            data_tags=list(self.data_tags(record)),
            annotations=self.annotations(index),
            last_modified=record.last_modified,
            _content=self.content_source,
            _source=record.source,
            revision=self.revision_of(record),
        )

    def content(self, data_id: str) -> bytes:
        return b"".join(self.iter_content(data_id))

    def iter_content(self, data_id: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        record = self.data_record(data_id)
        if record is None:
            raise KeyError(data_id)
        return self.content_source.iter_bytes(record.source, start, end)

    def write_objects(self, root: Path) -> int:
        """Write every live asset's current object to ``root/<object_name>``; returns bytes.

        This is how an external storage server (nginx serving ``root`` under ``/objects/``)
        gets the same bytes the built-in storage would serve.
        """
        total = 0
        for index in self.iter_live():
            record = self.record(index)
            target = root / record.object_name
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as handle:
                for chunk in self.content_source.iter_bytes(record.source):
                    handle.write(chunk)
            total += record.source.size
        return total

    # ----- mutations -----------------------------------------------------------------------

    def _changed(self) -> None:
        self.version += 1
        self._cache.clear()

    def _require(self, asset_id: str) -> int:
        index = self.index_of(asset_id)
        if index is None:
            raise KeyError(f"no live asset {asset_id}")
        return index

    def replace_data(self, asset_id: str) -> str:
        index = self._require(asset_id)
        self._data_gen[index] = self.gen_of(index) + 1
        self._changed()
        return self.record(index).data_id

    def rewrite_object(self, data_id: str, size: int | None = None, *, now: int = 0) -> int:
        """Overwrite the object of ``data_id`` in place (see the module docstring); returns
        its new revision. ``size`` defaults to the current size; ``Last-Modified`` becomes
        ``now``, or one second after the previous value if that is not later."""
        record = self.data_record(data_id)
        if record is None:
            raise KeyError(f"no data {data_id}")
        if size is None:
            size = record.source.size
        if size < 0:
            raise ValueError("size must be >= 0")
        revision = self.revision_of(record) + 1
        last_modified = max(record.last_modified + 1, int(now))
        self._rewrites[(record.index, record.gen)] = (revision, size, last_modified)
        self._changed()
        return revision

    def add_assets(self, n: int) -> list[str]:
        start = self._next_index
        self._next_index += n
        self._changed()
        return [self.codec.encode("asset", i) for i in range(start, start + n)]

    def delete_assets(self, asset_ids: Iterable[str]) -> None:
        for asset_id in asset_ids:
            index = self._require(asset_id)
            self._deleted.add(index)
            bisect.insort(self._deleted_sorted, index)
        self._changed()

    def set_asset_tags(self, asset_id: str, names: Iterable[str]) -> None:
        index = self._require(asset_id)
        tags = tuple(dict.fromkeys(names))
        self._asset_tags[index] = tags
        self._tags_set.add(index)
        self._asset_tag_names.update(dict.fromkeys(tags))
        self._changed()

    def set_data_tags(self, asset_id: str, names: Iterable[str]) -> None:
        index = self._require(asset_id)
        tags = tuple(dict.fromkeys(names))
        self._data_tags[(index, self.gen_of(index))] = tags
        self._tags_set.add(index)
        self._data_tag_names.update(dict.fromkeys(tags))
        self._changed()

    def set_annotations(self, asset_id: str, annotations: list[dict[str, Any]]) -> list[str]:
        """Replace an asset's annotations (newest first); missing ids are assigned."""
        index = self._require(asset_id)
        for old in self._ann_override.get(index, []):
            self._override_ann_owner.pop(old["id"], None)
        stored: list[dict[str, Any]] = []
        for item in annotations:
            entry = copy.deepcopy(item)
            if not entry.get("id"):
                self._override_counter += 1
                entry["id"] = self.codec.encode("annotation-set", self._override_counter)
            entry["asset_id"] = asset_id
            entry.setdefault("status", "ACCEPTED")
            entry.setdefault("duration", 0.0)
            entry.setdefault("attributes", {})
            for kind in ("rectangles", "polygons", "classifications", "lines", "points"):
                entry.setdefault(kind, [])
            self._override_ann_owner[entry["id"]] = index
            stored.append(entry)
        self._ann_override[index] = stored
        self._changed()
        return [entry["id"] for entry in stored]

    def mutate_annotations(self, asset_id: str) -> list[str]:
        """Regenerate an asset's annotations (new ids, new shapes, at least one)."""
        index = self._require(asset_id)
        for old in self._ann_override.pop(index, []):
            self._override_ann_owner.pop(old["id"], None)
        self._ann_gen[index] = self._ann_gen.get(index, 0) + 1
        self._changed()
        return self.annotation_ids(index)

    def drift(self, add: int, remove: int, rng: random.Random) -> tuple[list[str], list[str]]:
        """Listing drift: append ``add`` assets and delete ``remove`` random live ones."""
        added = self.add_assets(add) if add else []
        removed: list[str] = []
        for _ in range(min(remove, self.count())):
            while True:
                index = rng.randrange(self._next_index)
                if self.is_live(index):
                    break
            asset_id = self.codec.encode("asset", index)
            self.delete_assets([asset_id])
            removed.append(asset_id)
        return added, removed
