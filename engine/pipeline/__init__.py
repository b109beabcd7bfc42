"""The one pipeline a mirror and a prefetcher both run.

A run is opened and closed in one place (:mod:`~engine.pipeline.run`: settings and DEST checked,
the platform asked, DEST created and locked, the manifest opened and checked, clients, transfer
core and run record). Between those, listed assets flow through the same stages whatever order
the caller wants them in:

* :mod:`~engine.pipeline.planning`: a page or chunk of listed assets against the manifest
  (the decision is :func:`engine.plan.decide`), paths from :mod:`engine.layout`;
* :mod:`~engine.pipeline.freshness`: the signed URL of a job about to start is usable, or is
  refreshed in a batch (:func:`engine.signed_urls.usable` is the rule);
* :mod:`~engine.pipeline.jobs`: one asset's download through the transfer core;
* :mod:`~engine.pipeline.metadata`: tags staged in the background, annotations per page;
* :mod:`~engine.pipeline.commit`: what the manifest records and when (a file in place at once,
  its metadata following), through :mod:`~engine.pipeline.writer`;
* :mod:`~engine.pipeline.summary`: the live counters and what a run returns.

:mod:`engine.mirroring` drives these in listing order (and deletes what left the version);
:mod:`engine.prefetch` drives them in a consumer's order. Neither imports the other, and nothing
here imports either.
"""
