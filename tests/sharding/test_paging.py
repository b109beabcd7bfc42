"""The listing filter of a shard (engine.mirroring.shard_filter): however the version is paged,
every listed asset reaches exactly one shard, and which one does not depend on the page."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from engine.mirroring.shard_filter import own_assets
from engine.platform import models
from engine.platform.per_item import ListingPage, Rejected
from engine.sharding import AssetShard

ids = st.lists(
    st.text(alphabet="abcdef0123456789-", min_size=1, max_size=36).filter(
        lambda text: text.strip(".") != ""
    ),
    unique=True,
    max_size=80,
)


def _asset(asset_id: str) -> models.Asset:
    return models.Asset(id=asset_id, data=models.Data(id=f"d{asset_id}", object_name=asset_id))


def _pages(listed: list[str], cuts: list[int]) -> list[ListingPage]:
    bounds = sorted({0, len(listed), *(c % (len(listed) + 1) for c in cuts)})
    return [
        ListingPage([_asset(a) for a in listed[lo:hi]], count=len(listed), next_cursor="c")
        for lo, hi in pairwise(bounds)
    ]


@given(listed=ids, cuts=st.lists(st.integers(0, 100), max_size=10), count=st.integers(1, 9))
def test_every_listed_asset_reaches_exactly_one_shard_however_paged(
    listed: list[str], cuts: list[int], count: int
) -> None:
    one_page = _pages(listed, [])
    paged = _pages(listed, cuts)
    seen: list[str] = []
    for index in range(count):
        shard = AssetShard(index, count)
        mine = [a.id for page in paged for a in own_assets(page, shard).items]
        alone = [a.id for page in one_page for a in own_assets(page, shard).items]
        assert mine == alone  # the page an asset came in decides nothing
        assert all(shard.holds(a) for a in mine)
        seen += mine
    assert sorted(seen) == sorted(listed)  # each in exactly one shard


@given(listed=ids, count=st.integers(2, 9))
def test_a_shard_keeps_only_its_rejected_items_and_every_unidentified_one(
    listed: list[str], count: int
) -> None:
    rejected = [Rejected(a, a, "malformed") for a in listed] + [Rejected(None, "?", "no id")]
    page = ListingPage([], count=len(listed), next_cursor=None, rejected=rejected)
    kept: list[str | None] = []
    for index in range(count):
        shard = AssetShard(index, count)
        part = own_assets(page, shard)
        assert part.count is None  # the version's count is not the shard's
        assert [r.asset_id for r in part.rejected if r.asset_id is None] == [None]
        kept += [r.asset_id for r in part.rejected if r.asset_id is not None]
    assert sorted(a for a in kept if a is not None) == sorted(listed)


def test_the_whole_version_is_the_page_itself() -> None:
    page = ListingPage([_asset("a")], count=1, next_cursor=None)
    assert own_assets(page, AssetShard()) is page
