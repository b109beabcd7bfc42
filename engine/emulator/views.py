"""JSON shapes of the platform's objects, as the SDK reads them (see platform-api.md)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from engine.emulator.app import Context
from engine.emulator.records import AssetRecord

__all__ = ["asset_json", "asset_json_text", "data_json", "tag_json", "version_json"]

# What json.dumps(..., ensure_ascii=False) writes for a str (quotes included).
_encode_str: Callable[[str], str] = json.encoder.encode_basestring

SDK_VERSION = "6.37.0"


def tag_json(ctx: Context, target: str, name: str) -> dict[str, Any]:
    names = ctx.dataset.asset_tag_names() if target == "ASSET" else ctx.dataset.data_tag_names()
    # Every tag name in use is registered (pools at start, mutations when they happen).
    return {
        "id": ctx.dataset.codec.encode(f"tag-{target}", names.index(name)),
        "name": name,
        "target_type": target,
    }


def data_json(ctx: Context, record: AssetRecord, *, url: bool) -> dict[str, Any]:
    """The Asset's ``data`` object; ``url=False`` gives ``presigned_url: null``."""
    return {
        "id": record.data_id,
        "object_name": record.object_name,
        "filename": record.filename,
        "type": "IMAGE",
        "content_type": record.content_type,
        "upload_status": "DONE",
        "presigned_url": ctx.presign(record) if url else None,
        "metadata": {},
        "custom_metadata": {},
        "meta": {"width": record.width, "height": record.height},
    }


def asset_json(ctx: Context, record: AssetRecord, *, url: bool = True) -> dict[str, Any]:
    return {"id": record.asset_id, "data": data_json(ctx, record, url=url)}


def asset_json_text(ctx: Context, record: AssetRecord, *, url: bool = True) -> str:
    """``dumps(asset_json(ctx, record, url=url))``, written directly (the listing's hot path:
    a page is a thousand of these). Ids, object names and content types are ASCII without
    characters JSON escapes; the filename and the URL go through the encoder."""
    presigned = _encode_str(ctx.presign(record)) if url else "null"
    return (
        f'{{"id":"{record.asset_id}","data":{{"id":"{record.data_id}",'
        f'"object_name":"{record.object_name}","filename":{_encode_str(record.filename)},'
        f'"type":"IMAGE","content_type":"{record.content_type}","upload_status":"DONE",'
        f'"presigned_url":{presigned},"metadata":{{}},"custom_metadata":{{}},'
        f'"meta":{{"width":{record.width},"height":{record.height}}}}}}}'
    )


def version_json(ctx: Context) -> dict[str, Any]:
    dataset = ctx.dataset
    return {
        "id": dataset.dataset_version_id,
        "origin_name": "emulated-dataset",
        "origin_id": dataset.dataset_id,
        "version": "v1",
        "type": "OBJECT_DETECTION",
        "tags": [],
    }
