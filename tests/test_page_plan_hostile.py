"""The planner and the manifest fed with what the parsers let through from generated, mutated
API payloads: planning, settling and committing a page raise nothing at all (every hostile value
either failed its asset at the parser or is storable), and repeats never reach the pipeline."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import anyio
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.digests import annotations_digest
from engine.errors import PlatformError
from engine.manifest import Manifest
from engine.pipeline.commit import Ledger
from engine.pipeline.jobs import Outcome
from engine.pipeline.metadata import PageAnnotations, group_annotations
from engine.pipeline.planning import PagePlanner
from engine.pipeline.summary import LiveCounters
from engine.pipeline.writer import ManifestAccess, ManifestWriter
from engine.platform.client import parse_answer
from engine.platform.per_item import annotation_answer, asset_page
from engine.transfer import TransferResult
from tests.hostile.payloads import annotation_lists, encode, listing_pages

_names = st.text(st.characters(exclude_categories=("Cs",)), max_size=6)
_staged = st.dictionaries(
    st.integers(0, 5), st.tuples(st.lists(_names, max_size=2), st.lists(_names, max_size=2))
)


def _result(rel_path: PurePosixPath, seed: str) -> TransferResult:
    return TransferResult(
        rel_path=rel_path,
        size=len(seed),
        sha256=hashlib.sha256(seed.encode()).hexdigest(),
        etag=None,
        content_type=None,
        last_modified=None,
        bytes_downloaded=len(seed),
        bytes_resumed=0,
        retries=0,
        refreshes=0,
        resumed=False,
        segmented=False,
    )


@settings(max_examples=60)
@given(
    pages=st.lists(listing_pages(), min_size=1, max_size=3),
    layout=st.sampled_from(["name", "id"]),
    data=st.data(),
)
def test_parsed_pages_plan_settle_and_commit(
    pages: list[Any], layout: str, data: st.DataObject
) -> None:
    parsed = []
    for page in pages:
        try:
            parsed.append(parse_answer(asset_page, encode(page), "GET /page"))
        except PlatformError:
            continue
    # Drawn up front: Hypothesis draws must not happen inside the event loop's thread hops.
    plans = []
    for page in parsed:
        ids = list(dict.fromkeys(a.id for a in page.items))
        raw = encode(data.draw(annotation_lists(ids)))
        tags_known = data.draw(st.booleans())
        staged = data.draw(_staged)
        oks = data.draw(st.lists(st.booleans(), min_size=len(page.items), max_size=len(page.items)))
        # How many downloads end before the page's metadata is in (the rest end after).
        early = data.draw(st.integers(0, len(page.items)))
        plans.append((raw, tags_known, staged, oks, early))

    async def main(dest: Path) -> None:
        manifest = Manifest.open(dest)
        try:
            run_id = manifest.begin_run("dv", "http://127.0.0.1", {"layout": layout})
            db = ManifestAccess(manifest)
            counters = LiveCounters()
            planner = PagePlanner(
                db=db,
                run_id=run_id,
                dest=dest,
                layout_name=layout,  # type: ignore[arg-type]
                unknown_url_lifetime=300.0,
                counters=counters,
                once_per_run=True,
            )
            writer = ManifestWriter(db, run_id, on_committed=planner.in_flight.release)
            ledger = Ledger(planner, writer, dry_run=False)
            async with anyio.create_task_group() as tg:
                tg.start_soon(writer.run)
                await pages_through(planner, ledger, writer, manifest, run_id)
                writer.close()
            assert manifest.check() == []
        finally:
            manifest.close()

    async def pages_through(
        planner: PagePlanner,
        ledger: Ledger,
        writer: ManifestWriter,
        manifest: Manifest,
        run_id: int,
    ) -> None:
        listed: set[str] = set()
        planned: set[str] = set()
        for page, (raw, tags_known, staged, oks, early) in zip(parsed, plans, strict=True):
            content = await planner.plan_content(
                page.items, rejected=page.rejected, in_flight=listed
            )
            # An asset is planned at most once in a run, whatever the listing repeats.
            assert not planned & set(content.order)
            assert len(content.order) == len(set(content.order))
            planned.update(content.order)
            listed.update(content.order)
            try:
                answer = parse_answer(annotation_answer, raw, "XGET /annotations")
            except PlatformError as exc:
                annotations = PageAnnotations(
                    {a: [] for a in content.order}, dict.fromkeys(content.order, str(exc))
                )
            else:
                annotations = group_annotations(content.order, answer)
            for asset_annotations in annotations.by_asset.values():
                assert annotations_digest(asset_annotations) == annotations_digest(
                    list(reversed(asset_annotations))
                )
            tags = None
            if tags_known:
                tags = {
                    asset_id: (tuple(staged[i][0]), tuple(staged[i][1]))
                    for i, asset_id in enumerate(content.order)
                    if i in staged
                }
            # The production commit rule: some downloads end before the metadata, the
            # rest after; a file in place is recorded at once either way.
            state = ledger.open(content)
            outcomes = [
                Outcome(
                    job,
                    _result(job.rel_path, job.asset.id) if ok else None,
                    None if ok else "x",
                )
                for job, ok in zip(content.jobs, oks, strict=False)
            ]
            for outcome in outcomes[:early]:
                ledger.finished(outcome)
            await writer.flush()
            for outcome in outcomes[:early]:
                row = manifest.row(outcome.job.asset.id)
                assert (row is not None and row.state == "ok") == (outcome.result is not None)
            ledger.settle(state, tags, annotations.by_asset, annotations.unreadable)
            for outcome in outcomes[early:]:
                ledger.finished(outcome)
            await writer.flush()
            assert state.complete or len(outcomes) < len(content.jobs)
            listed.difference_update(content.order)
            for job, ok in zip(content.jobs, oks, strict=False):
                row = manifest.row(job.asset.id)
                assert row is not None
                assert row.last_seen_run == run_id
                assert row.state == ("ok" if ok else "failed")

    with tempfile.TemporaryDirectory() as tmp:
        anyio.run(main, Path(tmp) / "dest")
