"""The transfer core: one signed object to one verified file, resumable, at line rate.

    t = Transferer(session, options, state_dir, on_progress=None)
    result = await t.fetch(ObjectRef(asset_id, data_id), url, refresh, dest_root, rel_path)

See :mod:`engine.transfer.fetch` for the flow, :mod:`engine.transfer.partial` for what survives
a crash, and :mod:`engine.transfer.urls` for the signed-URL rules.
"""

from engine.transfer.fetch import ObjectRef, Transferer, TransferResult
from engine.transfer.progress import EventKind, ProgressEvent, TransferStats
from engine.transfer.urls import UrlProvider

__all__ = [
    "EventKind",
    "ObjectRef",
    "ProgressEvent",
    "TransferResult",
    "TransferStats",
    "Transferer",
    "UrlProvider",
]
