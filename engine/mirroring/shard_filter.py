"""A listing page cut down to the assets of this run's shard (``--shard K/N``).

Applied where the lister hands a page on, before planning: whatever the planner, the writer and
``--delete`` see is the shard's own assets (its manifest records nothing else, so what is
"unseen" is the shard's too). Which shard owns an asset depends on its id alone
(:func:`engine.sharding.shard_of`), never on the page it came in.
"""

from __future__ import annotations

from engine.platform.per_item import ListingPage
from engine.sharding import AssetShard

__all__ = ["own_assets"]


def own_assets(page: ListingPage, shard: AssetShard) -> ListingPage:
    """The page with only ``shard``'s assets; unchanged for the whole version.

    A rejected item without a readable id stays: no shard can tell it is not its own, and it
    keeps every shard's listing from counting as complete (so none deletes). The version's
    count is dropped: it is not this shard's (progress shows no total).
    """
    if shard.is_whole:
        return page
    return ListingPage(
        items=[asset for asset in page.items if shard.holds(asset.id)],
        count=None,
        next_cursor=page.next_cursor,
        rejected=[r for r in page.rejected if r.asset_id is None or shard.holds(r.asset_id)],
    )
