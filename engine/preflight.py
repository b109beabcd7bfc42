"""What a run asks the platform before it touches the disk: who we are, the version, its tags.

A mirror or a prefetcher opens with :func:`check_platform`, before DEST, its lock or its
manifest exist: a wrong token, an unknown version or a tag the version does not have is refused
with nothing created.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from engine.errors import NotFoundError, UsageError
from engine.pipeline.metadata import DATALAKE_CANDIDATES, datalake_of
from engine.platform import PlatformClient, models
from engine.signed_urls import redact

__all__ = ["MAX_LISTED_TAGS", "check_platform", "check_tags", "unknown_tags_message"]

# How many of the version's tags an "unknown tag" message names before it says "and N more":
# the message stays one readable line however many tags a version has.
MAX_LISTED_TAGS = 12
_MAX_TAG_CHARS = 40


def _shown(name: str) -> str:
    if len(name) > _MAX_TAG_CHARS:
        name = name[: _MAX_TAG_CHARS - 1] + "…"
    return f'"{name}"'


def unknown_tags_message(
    kind: str, unknown: Sequence[str], where: str, known: Sequence[str]
) -> str:
    """``unknown asset tag "x" (dataset version V has: "a", "b", ... and 30 more)``."""
    names = ", ".join(_shown(n) for n in unknown)
    plural = "s" if len(unknown) > 1 else ""
    if not known:
        return f"unknown {kind}{plural} {names}: {where} has no {kind}s"
    listed = sorted(known)
    shown = ", ".join(_shown(n) for n in listed[:MAX_LISTED_TAGS])
    more = len(listed) - MAX_LISTED_TAGS
    tail = f" and {more} more" if more > 0 else ""
    return f"unknown {kind}{plural} {names}: {where} has {shown}{tail}"


def _missing(wanted: Iterable[str], known: Iterable[str]) -> list[str]:
    have = set(known)
    return [name for name in dict.fromkeys(wanted) if name not in have]


async def _datalake_of(client: PlatformClient, dataset_version: str) -> str | None:
    # The version does not say which datalake its data lives in; its first assets' data does.
    pages = client.asset_pages(dataset_version, limit=DATALAKE_CANDIDATES)
    try:
        page = await anext(pages, None)
    finally:
        # The listing reads one page ahead: stop that request now, not when collected.
        await pages.aclose()  # type: ignore[attr-defined]
    items = page.items if page is not None else []
    return await datalake_of(client, [asset.data.id for asset in items])


async def check_tags(
    client: PlatformClient,
    dataset_version: str,
    tags: Sequence[str],
    data_tags: Sequence[str],
) -> None:
    """Refuse (:class:`~engine.errors.UsageError`) a filter naming a tag the version does not
    have: it would list nothing and look like success."""
    if tags:
        known = [t.name for t in await client.version_tags(dataset_version)]
        unknown = _missing(tags, known)
        if unknown:
            where = f"dataset version {dataset_version}"
            raise UsageError(unknown_tags_message("asset tag", unknown, where, known))
    if data_tags:
        lake = await _datalake_of(client, dataset_version)
        if lake is None:
            return  # an empty version: no datalake to ask, and nothing to list either way
        known = [t.name for t in await client.datalake_tags(lake)]
        unknown = _missing(data_tags, known)
        if unknown:
            where = f"the version's datalake {lake}"
            raise UsageError(unknown_tags_message("data tag", unknown, where, known))


async def check_platform(
    client: PlatformClient,
    api_url: str,
    dataset_version: str,
    *,
    tags: Sequence[str] = (),
    data_tags: Sequence[str] = (),
) -> models.DatasetVersion:
    """The token (``ping``: :class:`~engine.errors.AuthError`), the version (unknown:
    :class:`~engine.errors.UsageError`) and the tags of the filter."""
    await client.ping()
    try:
        version = await client.dataset_version(dataset_version)
    except NotFoundError:
        raise UsageError(
            f"dataset version {dataset_version} not found on {redact(api_url)}"
        ) from None
    await check_tags(client, dataset_version, tags, data_tags)
    return version
