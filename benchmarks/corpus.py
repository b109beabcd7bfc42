"""Deterministic corpora on local disk, built once and reused.

Each corpus lives in ``<work>/corpora/<key>/`` with the files in ``data/`` (flat, unique names,
so every tool, including the platform SDK that names files by ``filename``, writes the same
tree) and ``manifest.json`` beside it listing every file's name, size and SHA-256. Content is
pseudo-random bytes from (seed, file name), so it is incompressible and reproducible; a corpus is
rebuilt only when its manifest is missing, was made for another spec, or a file's size differs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

_CHUNK = 8 * MIB
_FORMAT = 1  # bump when the generator changes, so old corpora are rebuilt


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    count: int
    size: int | None  # None: sizes drawn from an image-like distribution
    seed: int
    description: str

    @property
    def key(self) -> str:
        size = "mixed" if self.size is None else str(self.size)
        return f"{self.name}-{self.count}x{size}-s{self.seed}-f{_FORMAT}"


@dataclass(frozen=True)
class CorpusFile:
    name: str
    size: int
    sha256: str


@dataclass
class Corpus:
    spec: CorpusSpec
    root: Path  # the folder of files: what nginx serves and the emulator lists
    files: list[CorpusFile]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def by_name(self) -> dict[str, CorpusFile]:
        return {f.name: f for f in self.files}

    def sample(self, k: int = 200, seed: int = 0) -> list[CorpusFile]:
        """Files whose bytes a run is checked against: all of them for a small corpus."""
        if len(self.files) <= k:
            return list(self.files)
        return random.Random(seed).sample(self.files, k)


def specs(quick: bool) -> dict[str, CorpusSpec]:
    """The corpora of issue 6 (``quick`` shrinks them to a few seconds per tool)."""
    if quick:
        return {
            "small": CorpusSpec("small", 2_000, 64 * KIB, 1, "2,000 x 64 KiB"),
            "medium": CorpusSpec("medium", 200, MIB, 2, "200 x 1 MiB"),
            "large": CorpusSpec("large", 4, 256 * MIB, 3, "4 x 256 MiB"),
            "mixed": CorpusSpec("mixed", 1_000, None, 4, "1,000 image-like, 8 KiB-8 MiB"),
        }
    return {
        "small": CorpusSpec("small", 20_000, 64 * KIB, 1, "20,000 x 64 KiB"),
        "medium": CorpusSpec("medium", 1_000, MIB, 2, "1,000 x 1 MiB"),
        "large": CorpusSpec("large", 4, GIB, 3, "4 x 1 GiB"),
        "mixed": CorpusSpec("mixed", 5_000, None, 4, "5,000 image-like, 8 KiB-8 MiB"),
    }


def _mixed_size(rng: random.Random) -> int:
    # Photos in a dataset: log-normal around ~180 KiB (a 1080p JPEG), a long tail of big PNGs.
    size = int(math.exp(rng.gauss(math.log(180 * KIB), 0.9)))
    return max(8 * KIB, min(8 * MIB, size))


def _layout(spec: CorpusSpec) -> list[tuple[str, int]]:
    rng = random.Random(spec.seed)
    width = len(str(spec.count))
    if spec.size is not None:
        return [(f"{spec.name}_{i:0{width}d}.bin", spec.size) for i in range(spec.count)]
    out = []
    for i in range(spec.count):
        size = _mixed_size(rng)
        ext = "png" if size > 2 * MIB else "jpg"
        out.append((f"img_{i:0{width}d}.{ext}", size))
    return out


_MAGIC = {"jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "png": b"\x89PNG\r\n\x1a\n"}


def _write_file(path: Path, name: str, size: int, seed: int) -> str:
    rng = random.Random(f"{seed}:{name}")
    digest = hashlib.sha256()
    magic = _MAGIC.get(name.rsplit(".", 1)[-1], b"")[:size]
    with open(path, "wb") as fh:
        if magic:
            fh.write(magic)
            digest.update(magic)
        left = size - len(magic)
        while left > 0:
            block = rng.randbytes(min(_CHUNK, left))
            fh.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def _load(spec: CorpusSpec, folder: Path) -> Corpus | None:
    try:
        meta = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("spec") != asdict(spec):
        return None
    corpus = Corpus(spec, folder / "data", [CorpusFile(**f) for f in meta["files"]])
    for f in corpus.files:
        try:
            if (corpus.root / f.name).stat().st_size != f.size:
                return None
        except OSError:
            return None
    return corpus


def build(spec: CorpusSpec, work: Path, log: Callable[[str], None] = print) -> Corpus:
    """The corpus of ``spec`` under ``work``: reused when intact, otherwise (re)built."""
    folder = work / "corpora" / spec.key
    existing = _load(spec, folder)
    if existing is not None:
        return existing
    log(f"building corpus {spec.name} ({spec.description}) in {folder} ...")
    shutil.rmtree(folder, ignore_errors=True)
    data = folder / "data"
    data.mkdir(parents=True)
    files = [
        CorpusFile(name, size, _write_file(data / name, name, size, spec.seed))
        for name, size in _layout(spec)
    ]
    tmp = folder / "manifest.json.tmp"
    tmp.write_text(json.dumps({"spec": asdict(spec), "files": [asdict(f) for f in files]}))
    os.replace(tmp, folder / "manifest.json")
    return Corpus(spec, data, files)


def warm(corpus: Corpus) -> None:
    """Read every file once so each tool starts with the same (hot) page cache on the server."""
    buf = bytearray(_CHUNK)
    for f in corpus.files:
        with open(corpus.root / f.name, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass
