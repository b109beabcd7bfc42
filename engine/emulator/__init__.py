"""A local Picsellia-style platform: the API of platform-api.md, signed storage, faults.

::

    from engine.emulator import Emulator, FaultRule

    async with Emulator(assets=200, seed=0, signing="s3", url_ttl=3600.0) as emu:
        emu.api_url, emu.token, emu.dataset_version_id      # what a client needs
        emu.dataset.expected(asset_id)                       # what a mirror must contain
        emu.faults.add(FaultRule(target="storage", kind="drop", after_bytes=1000, count=1))
        emu.counters.requests["storage"], emu.counters.storage_bytes

Modules: :mod:`~engine.emulator.emulator` (lifecycle), :mod:`~engine.emulator.api_routes`,
:mod:`~engine.emulator.storage_routes`, :mod:`~engine.emulator.control` (HTTP surfaces);
:mod:`~engine.emulator.dataset`, :mod:`~engine.emulator.records`,
:mod:`~engine.emulator.content`, :mod:`~engine.emulator.annotations` (the model);
:mod:`~engine.emulator.signing`, :mod:`~engine.emulator.ranges`,
:mod:`~engine.emulator.faults`, :mod:`~engine.emulator.bodies` (storage behaviour);
:mod:`~engine.emulator.xget` (accepting the XGET method); :mod:`~engine.emulator.thread`;
:mod:`~engine.emulator.cli`.

Choices made where the contract is silent
-----------------------------------------
Identity and data
    One organisation, one datalake, one dataset version (``OBJECT_DETECTION``, ``tags: []``);
    ids are deterministic per seed and encode what they name (:mod:`~engine.emulator.ids`), so a
    million assets need no table. Every asset is a ``DONE`` ``IMAGE``; ``content_type`` follows
    the filename's extension (JPEG by default); ``object_name`` is
    ``<datalake_id>/<data_id><ext>``; ``metadata`` and ``custom_metadata`` are ``{}``.
    ``replace_data`` gives new content, size, data id and object name and keeps tags,
    dimensions and annotations (one change at a time). The old object stays in storage (a
    datalake keeps its data), as do the objects of deleted assets. ``from_dir`` assets are
    named by their path relative to the folder (``/``-separated); ``assets`` is then ignored.
    ``nasty_filenames=False`` gives ordinary, unique, relative ASCII names (no duplicates).
Authentication and errors
    Route resolution comes first (unknown paths: 404 JSON; a known path with another method:
    405 JSON), then injected status faults (a gateway answers before the application), then
    the bearer token (401 JSON with ``WWW-Authenticate: Bearer``). Malformed parameters and
    bodies get 400 JSON with ``message`` and ``detail``; unknown parameters are ignored.
Pagination
    ``limit`` 1..1000 (absent 100; 0, negative, non-integer or >1000 is 400). Cursor mode
    peeks one item ahead: ``next_cursor`` is null exactly when nothing follows (an empty page
    has a null cursor too). ``offset`` applies to the first page only; ``cursor`` with
    ``offset`` or ``order_by`` is 400, and so is a cursor replayed with other filters. A cursor
    encodes the last asset served, so deletions never skip or repeat survivors and assets added
    during a listing appear at its end. ``count`` is the live total matching the filter when
    the page is served. Offset mode (``order_by`` given) answers ``next_cursor: null``;
    ``order_by`` accepts ``created_at`` and ``filename``, ``-`` for descending. The datalake
    tags endpoint honours ``limit``/``offset`` (same bounds) and has no ``count``.
Filters
    ``q`` per :mod:`~engine.emulator.query` (string literals with JSON escapes).
    ``upload_statuses`` and ``types`` are validated against the SDK's enums; as every asset is a
    DONE IMAGE, a filter without DONE or without IMAGE selects nothing.
XGET
    Accepted by a per-server swap to aiohttp's pure-Python HTTP parser
    (:mod:`~engine.emulator.xget`). Asset XGET needs exactly one non-empty key of ``ids``,
    ``filenames``, ``object_names``, ``data_ids``, ``filename_startswith`` (at most 1000
    values); items come in creation order, unknown values are dropped, ``count`` is the number
    of items; ``data_ids``/``object_names`` match an asset's *current* data only. The bulk
    annotation XGET answers the annotations found, in the order asked.
Annotations
    0-3 per generated asset, newest first; every annotation at position 0 carries every shape
    kind. ``annotations/ids`` without ``asset_ids`` lists the whole version; ``status`` filters.
    ``/api/asset/{id}/annotations`` gives the plain Annotation fields only.
Presigned URLs
    ``null_url_share`` of assets have ``presigned_url: null`` in the GET listing only; XGET,
    ``/api/asset/{id}``, ``/api/data/{id}`` and the presign endpoint always sign afresh with the
    TTL in force at that moment. ``signing="mixed"`` picks the style per object.
Storage
    See :mod:`~engine.emulator.signing` (signature checked before expiry, whole-second expiry)
    and :mod:`~engine.emulator.storage_routes`. A multi-range request gets the whole object (as
    S3 does); a syntactically invalid Range is ignored (RFC 9110); ``If-Range`` uses strong
    ETag comparison or the exact ``Last-Modified`` date. Objects above
    ``multipart_part_size`` (8 MiB) carry multipart-style ETags ``"<md5 of part md5s>-<n>"``.
    ``HEAD`` is served. ``If-Match`` / ``If-None-Match`` are not implemented. Bodies up to 64
    KiB go out in one write with their headers; larger files with ``os.sendfile`` on asyncio's
    loop (uvloop has none: 256 KiB reads), generated content in 256 KiB chunks.
Faults
    See :mod:`~engine.emulator.faults`. ``Retry-After`` is written as given, fractions included.
    Throttle rules are shared links. Body faults apply to API answers too. External (nginx)
    storage is outside the emulator: storage faults and storage counters do not apply to it.
Counters
    Requests are counted on arrival under their endpoint kind, whatever the answer; storage
    bytes when handed to the transport.
Time
    ``clock`` (default ``time.time``) drives URL signing and expiry only (plus
    :meth:`Emulator.advance_clock` / the control endpoint's offset); stalls and throttles use
    the event loop's real clock.
SDK
    The platform SDK (picsellia 6.37.0) needs nothing beyond the contract for ``Client``,
    ``get_dataset_version_by_id``, ``list_assets`` (cursor, offset, tags, ids), ``download``,
    ``get_tags``, ``get_data_tags``, ``list_annotations``, ``list_labels`` and ``reset_url``.
"""

from engine.emulator.counters import Counters
from engine.emulator.dataset import Dataset, ExpectedAsset
from engine.emulator.emulator import Emulator
from engine.emulator.faults import FaultController, FaultRule
from engine.emulator.signing import ExternalStorage
from engine.emulator.thread import EmulatorThread

__all__ = [
    "Counters",
    "Dataset",
    "Emulator",
    "EmulatorThread",
    "ExpectedAsset",
    "ExternalStorage",
    "FaultController",
    "FaultRule",
]
