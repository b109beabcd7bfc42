"""Where each asset goes under DEST: pure code, no I/O.

``filename`` is whatever the uploader typed. It is never trusted as a path: :func:`candidate`
turns it into a relative POSIX path that cannot leave DEST and that every common file system
accepts:

- ``/`` and ``\\`` separate directories; empty, ``.`` and ``..`` components are dropped (so
  ``../../etc/passwd`` becomes ``etc/passwd``), and so is a leading drive (``C:``);
- NUL, control characters, lone surrogates and ``< > : " | ? *`` become ``_``;
- trailing dots and spaces are stripped (Windows drops them silently, which would merge names);
- reserved Windows device names (``CON``, ``PRN``, ``AUX``, ``NUL``, ``COM0-9``, ``LPT0-9``, with
  any extension, any case) get a ``_`` prefix;
- each component is at most 255 bytes of UTF-8, cut on a character boundary, keeping the
  extension; at most :data:`MAX_DEPTH` components and :data:`MAX_PATH_BYTES` bytes (the leading
  directories go first);
- Unicode is normalised to NFC (a macOS uploader's decomposed ``é`` is the same name);
- the state folder ``.assetsync`` can never be produced at the top level (in any case);
- a name with nothing left becomes ``<asset id><ext from the content type>``.

``layout="id"`` names files ``<asset id><.ext>`` with the extension from the filename, or else
from the content type (a fixed table: ``mimetypes`` reads system files, which would make paths
differ between machines).

Collisions. Two assets may want one path (same filename; or names that differ only in case,
which a case-insensitive file system confuses; or ``a`` as a file and ``a/b`` needing ``a`` as
a directory). The first asset to claim a path keeps it; the next gets a *variant*,
``stem~<short id>.ext`` (the last 8 characters of its id), then ``stem~<full id>.ext``, then
``stem~<full id>~2.ext``, ... A file that sits where a directory is needed makes the directory
component take the variant instead. "First" is decided by the manifest: :func:`assign_paths`
resolves one listing page at a time against a lookup of the paths the manifest already records
(plus the page's own earlier claims), and keeps an asset's recorded path as long as it is still
a form of its candidate, so paths are stable from one run to the next and the scheduler never
holds more than a page. Keys are :func:`engine.digests.path_key` (canonical caseless).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Collection, Mapping, Sequence, Set
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from engine.digests import path_key
from engine.state_folder import STATE_DIR

__all__ = [
    "MAX_COMPONENT_BYTES",
    "MAX_DEPTH",
    "MAX_PATH_BYTES",
    "STATE_DIR",
    "Claim",
    "Lookup",
    "assign_paths",
    "candidate",
    "extension_for",
    "is_form_of",
    "sanitize_component",
    "short_id",
    "variant",
]

MAX_COMPONENT_BYTES = 255
MAX_DEPTH = 32
MAX_PATH_BYTES = 1024
_MAX_EXT_CHARS = 16  # a longer "extension" is just part of the name
_STATE_KEY = path_key(STATE_DIR)

_BAD_CHARS = re.compile(r'[\x00-\x1f\x7f-\x9f<>:"|?*\ud800-\udfff]')
_SEPARATORS = re.compile(r"[/\\]+")
_DRIVE = re.compile(r"^[A-Za-z]:$")
_SAFE_EXT = re.compile(r"^\.[A-Za-z0-9]{1,16}$")
# Not ending with a dot: Windows and SMB drop a trailing dot, so "0." would become "0".
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9_-])?$")
_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{dev}{n}" for dev in ("COM", "LPT") for n in ("0123456789¹²³")]
)

# Content type -> extension, for names derived from the asset id.
_CONTENT_TYPES = {
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/pjpeg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "image/bmp": ".bmp",
    "image/tiff": ".tiff",
    "image/svg+xml": ".svg",
    "image/heic": ".heic",
    "image/heif": ".heif",
    "image/avif": ".avif",
    "image/jp2": ".jp2",
    "application/dicom": ".dcm",
    "video/mp4": ".mp4",
    "video/quicktime": ".mov",
    "video/x-msvideo": ".avi",
    "video/x-matroska": ".mkv",
    "video/webm": ".webm",
    "video/mpeg": ".mpeg",
    "application/pdf": ".pdf",
    "application/json": ".json",
    "application/zip": ".zip",
    "text/plain": ".txt",
    "text/csv": ".csv",
}


# -- one component -------------------------------------------------------------------------


def _truncate(text: str, limit: int) -> str:
    """The longest NFC prefix of ``text`` of at most ``limit`` UTF-8 bytes."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    cut = raw[:limit].decode("utf-8", "ignore")  # drops a character cut in half
    cut = unicodedata.normalize("NFC", cut)
    while len(cut.encode("utf-8")) > limit:  # NFC may, rarely, not shrink a cut sequence
        cut = unicodedata.normalize("NFC", cut[:-1])
    return cut


def _split_ext(name: str) -> tuple[str, str]:
    """``("photo", ".jpg")``; dot-files and long "extensions" have none."""
    dot = name.rfind(".")
    if dot <= 0 or len(name) - dot - 1 > _MAX_EXT_CHARS or dot == len(name) - 1:
        return name, ""
    return name[:dot], name[dot:]


def _fit(stem: str, ext: str, limit: int = MAX_COMPONENT_BYTES) -> str:
    """``stem + ext`` within ``limit`` bytes, shortening the stem first."""
    ext_bytes = len(ext.encode("utf-8"))
    if ext_bytes >= limit // 2:  # absurd extension: cut the whole thing instead
        return _truncate(stem + ext, limit)
    return _truncate(stem, limit - ext_bytes) + ext


def _is_reserved(name: str) -> bool:
    return name.split(".", 1)[0].rstrip(" ").upper() in _RESERVED


def sanitize_component(raw: str) -> str:
    """One safe path component, or ``""`` when nothing usable is left."""
    name = _BAD_CHARS.sub("_", unicodedata.normalize("NFC", raw))
    for _ in range(3):  # each step can undo another's work at most once
        name = name.rstrip(". ")
        if not name:
            return ""
        if _is_reserved(name):
            name = "_" + name
        stem, ext = _split_ext(name)
        fitted = _fit(stem, ext)
        if fitted == name:
            return name
        name = fitted
    return name.rstrip(". ") or ""


# -- whole candidate paths -----------------------------------------------------------------


def extension_for(filename: str, content_type: str | None) -> str:
    """A short, safe, lower-case extension: the filename's, else the content type's, else ``""``."""
    leaf = sanitize_component(_SEPARATORS.split(filename)[-1]) if filename else ""
    _, ext = _split_ext(leaf)
    if _SAFE_EXT.match(ext):
        return ext.lower()
    if content_type:
        return _CONTENT_TYPES.get(content_type.split(";", 1)[0].strip().lower(), "")
    return ""


def _id_component(asset_id: str) -> str:
    """The asset id as a component: itself when it is already safe, else a safe form of it
    with a hash, so that two different ids never give one name."""
    if _SAFE_ID.match(asset_id) and not _is_reserved(asset_id):
        return asset_id
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", unicodedata.normalize("NFC", asset_id))[:32]
    digest = hashlib.sha256(asset_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{safe}-{digest}" if safe.strip("_") else f"id-{digest}"


def short_id(asset_id: str) -> str:
    """8 characters that tell assets apart in practice: the end of the id (the random part of
    a UUID v4 or v7), or a hash of it when the id has too few letters and digits."""
    alnum = re.sub(r"[^A-Za-z0-9]", "", asset_id)
    if len(alnum) >= 8:
        return alnum[-8:].lower()
    return hashlib.sha256(asset_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def _id_name(asset_id: str, ext: str) -> str:
    return _fit(_id_component(asset_id), ext)


def candidate(
    asset_id: str,
    filename: str,
    *,
    layout: Literal["name", "id"] = "name",
    content_type: str | None = None,
) -> PurePosixPath:
    """The path an asset would like, relative to DEST, before collisions are considered."""
    if layout == "id":
        return PurePosixPath(_id_name(asset_id, extension_for(filename, content_type)))
    raw_parts = _SEPARATORS.split(unicodedata.normalize("NFC", filename))
    if raw_parts and _DRIVE.match(raw_parts[0]):
        raw_parts = raw_parts[1:]
    leaf_raw = raw_parts[-1] if raw_parts else ""
    dirs = [c for c in (sanitize_component(p) for p in raw_parts[:-1]) if c]
    leaf = sanitize_component(leaf_raw)
    if not leaf:
        leaf = _id_name(asset_id, extension_for("", content_type))
    parts = [*dirs, leaf][-MAX_DEPTH:]
    while len(parts) > 1 and len("/".join(parts).encode("utf-8")) > MAX_PATH_BYTES:
        parts.pop(0)
    if path_key(parts[0]) == _STATE_KEY:
        parts[0] = "_" + parts[0]
    return PurePosixPath(*parts)


# -- variants ------------------------------------------------------------------------------


def _tag(asset_id: str, level: int) -> str:
    if level == 0:
        return short_id(asset_id)
    full = _id_component(asset_id)
    return full if level == 1 else f"{full}~{level}"


def variant(component: str, asset_id: str, level: int, *, leaf: bool = True) -> str:
    """The ``level``-th disambiguated form of a component for one asset: ``stem~<tag>.ext``.

    Level 0 uses :func:`short_id`, level 1 the full id (different ids always differ), level
    ``n >= 2`` the full id and ``~n``. Directories keep no extension apart.
    """
    stem, ext = _split_ext(component) if leaf else (component, "")
    suffix = f"~{_tag(asset_id, level)}"
    name = _fit(stem, suffix + ext) if stem else _fit(suffix.lstrip("~"), ext)
    return name


def is_form_of(path: PurePosixPath, wanted: PurePosixPath, asset_id: str) -> bool:
    """Whether ``path`` is ``wanted`` or one of the variants :func:`assign_paths` could have
    chosen for this asset (so a recorded path can be kept)."""
    if len(path.parts) != len(wanted.parts):
        return False
    last = len(wanted.parts) - 1
    for index, (have, want) in enumerate(zip(path.parts, wanted.parts, strict=True)):
        if have == want:
            continue
        forms = (variant(want, asset_id, lvl, leaf=index == last) for lvl in range(_KEEP_LEVELS))
        if have not in forms:
            return False
    return True


_KEEP_LEVELS = 8

# -- assignment against the manifest -------------------------------------------------------

Lookup = Callable[[Collection[str]], tuple[Mapping[str, str], Set[str]]]
"""Given path keys, the manifest's answer: ``(owners, dirs)``, where ``owners`` maps each key
that is a recorded file to its asset id, and ``dirs`` holds the keys some recorded path lies
under (``key + "/"`` is a prefix of its key)."""


@dataclass(frozen=True, slots=True)
class Claim:
    """One asset of a page: the path it wants and the one the manifest records for it."""

    asset_id: str
    wanted: PurePosixPath
    current: PurePosixPath | None = None


def _prefix_keys(path: PurePosixPath) -> list[str]:
    parts = path.parts
    return [path_key("/".join(parts[: i + 1])) for i in range(len(parts))]


class _Index:
    def __init__(self, lookup: Lookup) -> None:
        self._lookup = lookup
        self.owners: dict[str, str] = {}
        self.dirs: set[str] = set()
        self._known: set[str] = set()

    def ensure(self, keys: Collection[str]) -> None:
        missing = [k for k in dict.fromkeys(keys) if k not in self._known]
        if not missing:
            return
        owners, dirs = self._lookup(missing)
        for key in missing:
            self._known.add(key)
            owner = owners.get(key)
            if owner is not None:
                self.owners.setdefault(key, owner)
            if key in dirs:
                self.dirs.add(key)

    def conflict(self, path: PurePosixPath, asset_id: str) -> int | None:
        """Index of the first component that cannot be used, or ``None``."""
        keys = _prefix_keys(path)
        self.ensure(keys)
        last = len(keys) - 1
        for index, key in enumerate(keys):
            owner = self.owners.get(key)
            if index < last:
                if owner is not None:  # a file where we need a directory
                    return index
            elif (owner is not None and owner != asset_id) or key in self.dirs:
                return index
        return None

    def take(self, path: PurePosixPath, asset_id: str) -> None:
        keys = _prefix_keys(path)
        self._known.update(keys)
        self.owners[keys[-1]] = asset_id
        self.dirs.update(keys[:-1])


def _build(wanted: PurePosixPath, levels: Mapping[int, int], asset_id: str) -> PurePosixPath:
    parts = list(wanted.parts)
    last = len(parts) - 1
    for index, level in levels.items():
        parts[index] = variant(parts[index], asset_id, level, leaf=index == last)
    return PurePosixPath(*parts)


def assign_paths(claims: Sequence[Claim], lookup: Lookup) -> dict[str, PurePosixPath]:
    """Final paths for one page of claims, in listing order, against the manifest's paths.

    An asset keeps its recorded path while that is still a form of what it wants and nobody
    else holds it; otherwise it gets the first of its wanted path and its variants that is
    free. Looks keys up in batches: once for the whole page, then only for variants.
    """
    index = _Index(lookup)
    prefetch: list[str] = []
    for claim in claims:
        prefetch += _prefix_keys(claim.wanted)
        leaf = claim.wanted.parts[-1]
        prefetch.append(path_key(str(claim.wanted.with_name(variant(leaf, claim.asset_id, 0)))))
        if claim.current is not None:
            prefetch += _prefix_keys(claim.current)
    index.ensure(prefetch)

    chosen: dict[str, PurePosixPath] = {}
    for claim in claims:
        current = claim.current
        if (
            current is not None
            and is_form_of(current, claim.wanted, claim.asset_id)
            and index.conflict(current, claim.asset_id) is None
        ):
            path = current
        else:
            path = _resolve(index, claim)
        index.take(path, claim.asset_id)
        chosen[claim.asset_id] = path
    return chosen


def _resolve(index: _Index, claim: Claim) -> PurePosixPath:
    levels: dict[int, int] = {}
    path = claim.wanted
    # Every step raises one level, and each level's name is taken by at most one owner, so
    # this ends; the bound only guards against a lookup that lies.
    for _ in range(100_000):
        clash = index.conflict(path, claim.asset_id)
        if clash is None:
            return path
        levels[clash] = levels.get(clash, -1) + 1
        path = _build(claim.wanted, levels, claim.asset_id)
    raise RuntimeError(f"no free path for asset {claim.asset_id}")
