"""What the manifest records of a run, and when: the one commit rule, mirror and prefetch alike.

A page of listed assets (the mirror's listing page, a prefetch epoch's chunk) is planned on
content alone (:meth:`~engine.pipeline.planning.PagePlanner.plan_content`) so its downloads
start before its tags and annotations are in. Then, as things happen:

* a file is in place: it is recorded **at once**, without metadata if the page's has not come
  yet (the stored tags and annotations are left as they are), so a SIGKILL before that arrives
  does not lose the file (the next run would fetch it again); once the metadata is in it is
  recorded again with it, in its own row;
* a download failed: recorded with the page's metadata (a failure costs nothing to keep);
* the page's metadata is in (:meth:`Ledger.settle`): the kept files are updated or marked seen,
  the finished downloads recorded with their metadata, and later ones are recorded with it
  straight away;
* the page is complete (metadata in, every download ended): its ``on_complete`` runs once all
  of the above is committed (the mirror frees its page slot then).

Everything goes through the run's one :class:`~engine.pipeline.writer.ManifestWriter`, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.pipeline.jobs import AssetJob, Outcome, update_for_outcome
from engine.pipeline.metadata import StagedTags
from engine.pipeline.planning import ContentPlan, PagePlan, PagePlanner
from engine.pipeline.writer import After, ManifestWriter, WriteItem

__all__ = ["Ledger", "Page"]


@dataclass(slots=True, eq=False)
class Page:
    """A page between planning and commit."""

    content: ContentPlan
    outstanding: int  # downloads not ended yet
    on_complete: Callable[[], None] | None = None
    settled: PagePlan | None = None  # set once its metadata is in
    finished: list[Outcome] = field(default_factory=list)  # waiting for the metadata

    @property
    def complete(self) -> bool:
        return self.settled is not None and self.outstanding == 0


class Ledger:
    """Applies the commit rule (see the module docstring) for one run."""

    def __init__(self, planner: PagePlanner, writer: ManifestWriter, *, dry_run: bool) -> None:
        self.planner = planner
        self.writer = writer
        self.dry_run = dry_run
        self._page_of: dict[str, Page] = {}  # asset id of a job not ended yet -> its page

    def open(self, content: ContentPlan, on_complete: Callable[[], None] | None = None) -> Page:
        """Track a planned page (its jobs are about to start)."""
        page = Page(content, outstanding=len(content.jobs), on_complete=on_complete)
        for job in content.jobs:
            self._page_of[job.asset.id] = page
        return page

    def finished(self, outcome: Outcome) -> None:
        """A job ended: its file is in place (``outcome.result``), or it failed."""
        page = self._page_of.pop(outcome.job.asset.id, None)
        if page is None:
            return  # dropped meanwhile
        page.outstanding -= 1
        if page.settled is None:
            page.finished.append(outcome)
            if outcome.result is not None:
                self.writer.put(update_for_outcome(outcome, metadata=False))
        else:
            self.writer.put(self._item(outcome))
        self._maybe_complete(page)

    def ended_elsewhere(self, job: AssetJob) -> None:
        """Another process put this job's file in place and recorded it: nothing to record."""
        page = self._page_of.pop(job.asset.id, None)
        self.planner.in_flight.release([job.asset.id])
        if page is not None:
            page.outstanding -= 1
            self._maybe_complete(page)

    def drop(self, jobs: Iterable[AssetJob]) -> None:
        """These jobs will not end (the run stops): forget them and their path claims."""
        ids = [job.asset.id for job in jobs]
        for asset_id in ids:
            self._page_of.pop(asset_id, None)
        self.planner.in_flight.release(ids)

    def settle(
        self,
        page: Page,
        staged: StagedTags | None,
        annotations: Mapping[str, list[dict[str, Any]]],
        unreadable: Mapping[str, str] | None = None,
    ) -> PagePlan:
        """The page's metadata is in (``staged=None``: this run's tags are unknown;
        ``unreadable``: assets whose annotations could not be read)."""
        settled = self.planner.settle(page.content, staged, annotations, unreadable)
        page.settled = settled
        items: list[WriteItem] = list(settled.updates)
        if settled.seen:
            items.append(settled.seen)
        items += [self._item(outcome) for outcome in page.finished]
        page.finished.clear()
        for item in items:
            self.writer.put(item)
        self._maybe_complete(page)
        return settled

    def _item(self, outcome: Outcome) -> WriteItem:
        if self.dry_run:
            # Planned, not fetched: the asset is seen (for the deletion count), nothing else.
            self.planner.in_flight.release([outcome.job.asset.id])
            return [outcome.job.asset.id]
        return update_for_outcome(outcome)

    def _maybe_complete(self, page: Page) -> None:
        if page.complete and page.on_complete is not None:
            callback, page.on_complete = page.on_complete, None
            self.writer.put(After(callback))
