"""The platform side of a benchmark: nginx serving a corpus and the emulator as the API.

nginx (secure_link) serves the bytes, so Python is not in the data plane; the emulator, in a
background thread, lists the corpus as a dataset version (``from_dir``: one asset per file,
``filename`` = the file's name) and hands out nginx signed URLs (``external_storage``) for
each asset's ``object_name`` (``<datalake_id>/<data_id><ext>``, as on the real platform). The
object tree nginx serves under ``/objects/`` is made of hard links to the corpus files (no
copy; symlinks if the work folder spans file systems); ``/plain/`` shows the corpus itself, by
file name, to rclone. The URL lists the peers download come from the emulator's own listing
endpoint, the way a script around curl would get them.

Without the emulator (``engine.emulator`` not importable) the harness signs the URLs itself,
the SDK and assetsync are reported as missing, and the report says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.corpus import Corpus
from benchmarks.peers import Platform, UrlEntry
from engine.emulator.nginx import NginxServer

# Long enough for the slowest tool on the full corpora: no refresh is measured here.
URL_TTL = 6 * 3600.0


def _api_get(api_url: str, token: str, path: str, params: dict[str, str]) -> Any:
    query = urllib.parse.urlencode(params)
    request = urllib.request.Request(  # noqa: S310 (loopback http)
        f"{api_url}{path}?{query}", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
        return json.loads(response.read())


def list_urls(api_url: str, token: str, dataset_version_id: str) -> list[UrlEntry]:
    """Every asset's filename, object name and signed URL, through the cursor listing."""
    entries: list[UrlEntry] = []
    params = {"limit": "1000"}
    path = f"/api/dataset/version/{dataset_version_id}/assets"
    for _ in range(100_000):  # bounded: 100M assets at 1000 a page
        page = _api_get(api_url, token, path, params)
        for item in page["items"]:
            data = item["data"]
            url = data.get("presigned_url")
            if not url:
                fresh = _api_get(api_url, token, f"/api/data/{data['id']}/presigned-url", {})
                url = fresh["presigned_url"]
            entries.append(UrlEntry(data["filename"], url, data["object_name"]))
        cursor = page.get("next_cursor")
        if not cursor or not page["items"]:
            return entries
        params = {"limit": "1000", "cursor": cursor}
    raise RuntimeError("listing did not end")


def emulator_missing() -> str | None:
    """None when the emulator with external storage can be imported, else why not."""
    try:
        from engine.emulator import EmulatorThread, ExternalStorage  # noqa: F401
    except ImportError as exc:
        return f"engine.emulator not available ({exc})"
    return None


def _link_objects(corpus: Corpus, objects: Path, pairs: Iterator[tuple[str, str]]) -> int:
    """Make ``objects/<object_name>`` point at ``corpus.root/<filename>``; returns the count."""
    shutil.rmtree(objects, ignore_errors=True)
    objects.mkdir(parents=True)
    count = 0
    for object_name, filename in pairs:
        target = objects / object_name
        target.parent.mkdir(parents=True, exist_ok=True)
        source = corpus.root / filename
        try:
            os.link(source, target)
        except OSError:
            target.symlink_to(source)
        count += 1
    return count


@contextlib.contextmanager
def _with_emulator(corpus: Corpus, objects: Path, nginx_workers: Any) -> Iterator[Platform]:
    from engine.emulator import Emulator, EmulatorThread, ExternalStorage

    objects.mkdir(parents=True, exist_ok=True)
    with NginxServer(objects, plain_root=corpus.root, worker_processes=nginx_workers) as nginx:
        emulator = Emulator(
            from_dir=corpus.root,
            external_storage=ExternalStorage(nginx.base_url, nginx.secret),
            url_ttl=URL_TTL,
            seed=0,
            cache_assets=len(corpus.files),  # derive each record once, as a database stores it
        )
        dataset = emulator.dataset
        pairs = (
            (e.object_name, e.filename) for e in (dataset.expected(a) for a in dataset.asset_ids())
        )
        linked = _link_objects(corpus, objects, pairs)
        if linked != len(corpus.files):
            raise RuntimeError(
                f"the emulator lists {linked} assets, the corpus has {len(corpus.files)}"
            )
        with EmulatorThread(emulator, use_uvloop=True) as emu:
            t0 = time.perf_counter()
            urls = list_urls(emu.api_url, emu.token, emu.dataset_version_id)
            listing = time.perf_counter() - t0
            yield Platform(
                storage_url=nginx.base_url,
                plain_url=nginx.plain_url(""),
                urls=urls,
                url_source="the emulator's asset listing (nginx secure_link URLs, object names)",
                listing_seconds=listing,
                api_url=emu.api_url,
                token=emu.token,
                dataset_version_id=emu.dataset_version_id,
            )


@contextlib.contextmanager
def serve(
    corpus: Corpus, work: Path, *, nginx_workers: str, log: Callable[[str], None] = print
) -> Iterator[Platform]:
    """nginx and (when available) the emulator for ``corpus``; both stopped on exit."""
    workers: Any = nginx_workers if nginx_workers == "auto" else int(nginx_workers)
    reason = emulator_missing()
    if reason is None:
        objects = work / "objects" / corpus.spec.key
        try:
            with _with_emulator(corpus, objects, workers) as platform:
                yield platform
        finally:
            shutil.rmtree(objects, ignore_errors=True)
        return
    log(f"note: {reason}; the harness signs the nginx URLs itself")
    with NginxServer(corpus.root, worker_processes=workers) as nginx:
        expires = int(time.time() + URL_TTL)
        urls = [
            UrlEntry(f.name, nginx.signed_url(f.name, expires=expires), f.name)
            for f in corpus.files
        ]
        yield Platform(
            storage_url=nginx.base_url,
            plain_url=nginx.plain_url(""),
            urls=urls,
            url_source=f"signed by the harness ({reason})",
        )
