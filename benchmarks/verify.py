"""Check a tool's output against its corpus, so a broken run is never counted.

A run passes when the destination holds exactly the corpus's number of files and bytes, and a
sample of files (all of them for small corpora and for the large set) hash to the corpus's
SHA-256. Files are found by their path relative to the destination, or else by their base name
(the corpora are flat with unique names; a tool may nest them under a folder of its own).
Hidden folders at the top (``.assetsync`` state) are not part of the output.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from benchmarks.corpus import Corpus


@dataclass
class Verification:
    ok: bool
    reason: str
    files: int
    bytes: int
    sampled: int


def _walk(dest: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(dest):
        if Path(dirpath) == dest:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            found.setdefault(name, []).append(Path(dirpath) / name)
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        for block in iter(lambda: fh.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(
    dest: Path, corpus: Corpus, names: dict[str, str] | None = None, sample_size: int = 200
) -> Verification:
    """``names`` maps a corpus file name to the name the tool gave it (default: the same)."""
    rename = names or {}
    expected_names = {rename.get(n, n) for n in corpus.by_name}
    found = _walk(dest)
    paths = [p for group in found.values() for p in group]
    count = len(paths)
    total = sum(p.stat().st_size for p in paths)

    def fail(reason: str, sampled: int = 0) -> Verification:
        return Verification(False, reason, count, total, sampled)

    if count != len(corpus.files):
        extra = sorted(set(found) - expected_names)[:3]
        missing = sorted(expected_names - set(found))[:3]
        return fail(
            f"{count} files, expected {len(corpus.files)}"
            + (f"; unexpected e.g. {extra}" if extra else "")
            + (f"; missing e.g. {missing}" if missing else "")
        )
    if total != corpus.total_bytes:
        return fail(f"{total} bytes, expected {corpus.total_bytes}")
    sample = corpus.files if corpus.spec.size and corpus.spec.size >= 64 << 20 else None
    sample = sample or corpus.sample(sample_size)
    for i, expected in enumerate(sample):
        name = rename.get(expected.name, expected.name)
        direct = dest / name
        candidates = [direct] if direct.is_file() else found.get(name.rsplit("/", 1)[-1], [])
        if len(candidates) != 1:
            return fail(f"{name}: found {len(candidates)} times", i)
        if _sha256(candidates[0]) != expected.sha256:
            return fail(f"{name}: SHA-256 differs from the corpus", i)
    return Verification(True, "", count, total, len(sample))
