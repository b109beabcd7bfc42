"""The API's fast paths answer exactly what the plain derivations say, before and after mutations.

The emulator keeps derived records, tag masks and annotation texts (see
``engine.emulator.dataset``); these tests warm every cache first, then mutate, then check that
the API shows the new state, and compare each fast path with the straightforward computation.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from engine.emulator import Emulator, FaultRule
from engine.emulator.annotations import LABELS, STATUSES, generate_annotations
from engine.emulator.app import dumps
from engine.emulator.cache import LruCache
from engine.emulator.dataset import ANNOTATION_CACHE_ENTRIES, TAG_MASK_BLOCK
from engine.emulator.query import parse_query
from engine.emulator.records import RECORD_CACHE_ENTRIES
from engine.emulator.signing import ExternalStorage
from engine.emulator.views import asset_json, asset_json_text

from .conftest import Api

QUERIES = [
    'tags.name = "train"',
    'tags.name in ("val", "test")',
    'tags.name = "say \\"hi\\""',
    'data.tags.name = "night"',
    'data.tags.name = "back\\\\slash"',
    'tags.name = "reviewed" and data.tags.name in ("camera-a", "blurry")',
    'tags.name = "golden"',
    'data.tags.name = "sensor-9"',
    'tags.name = "train" and tags.name = "hard"',
]


# ----- pure parts ---------------------------------------------------------------------------


def test_lru_cache_is_bounded_and_keeps_the_recently_used() -> None:
    cache: LruCache[int, str] = LruCache(3)
    for key in range(3):
        cache.put(key, str(key))
    assert cache.get(0) == "0"  # 0 is now the most recent
    cache.put(3, "3")  # evicts 1, the least recently used
    assert [cache.get(k) for k in range(4)] == ["0", None, "2", "3"]
    assert len(cache) == 3
    cache.pop(0)
    cache.pop(42)  # absent: nothing happens
    assert len(cache) == 2
    nothing: LruCache[int, str] = LruCache(0)
    assert nothing.put(1, "x") == "x"
    assert nothing.get(1) is None and len(nothing) == 0
    with pytest.raises(ValueError, match="entries"):
        LruCache(-1)


def _reference_annotations(
    *, seed: int, index: int, gen: int, count: int, width: int, height: int, ids: list[str]
) -> list[dict[str, Any]]:
    """The generator as first written, with plain ``random.Random`` calls."""
    rng = random.Random(f"ann:{seed}:{index}:{gen}")

    def label() -> str:
        return LABELS[rng.randrange(len(LABELS))]

    def xy() -> list[int]:
        return [rng.randrange(max(width, 1)), rng.randrange(max(height, 1))]

    def shape(extra: dict[str, Any]) -> dict[str, Any]:
        return {**extra, "label": label(), "text": None, "attributes": {}}

    def rectangles(n: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(n):
            x, y = xy()
            w = 1 + rng.randrange(max(width - x, 1))
            h = 1 + rng.randrange(max(height - y, 1))
            out.append(shape({"x": x, "y": y, "w": w, "h": h}))
        return out

    result = []
    for position in range(count):
        full = position == 0
        result.append(
            {
                "id": ids[position],
                "asset_id": "a",
                "status": STATUSES[rng.randrange(len(STATUSES))],
                "duration": round(rng.uniform(0.0, 120.0), 3),
                "attributes": {},
                "rectangles": rectangles(1 + rng.randrange(2)),
                "polygons": [
                    shape({"polygon": [xy() for _ in range(3 + rng.randrange(4))]})
                    for _ in range(1 if full else rng.randrange(2))
                ],
                "classifications": [shape({}) for _ in range(1 if full else rng.randrange(2))],
                "lines": [
                    shape({"line": [xy() for _ in range(2 + rng.randrange(3))]})
                    for _ in range(1 if full else rng.randrange(2))
                ],
                "points": [shape({"point": xy()}) for _ in range(1 if full else rng.randrange(3))],
            }
        )
    return result


def test_generated_annotations_are_the_draws_of_plain_random() -> None:
    draw = random.Random(3)
    for _ in range(400):
        count = draw.randrange(5)
        args: dict[str, Any] = {
            "seed": draw.randrange(50),
            "index": draw.randrange(10**7),
            "gen": draw.randrange(4),
            "count": count,
            "width": draw.choice([0, 1, 2, 64, draw.randrange(1, 5000)]),
            "height": draw.choice([0, 1, 3, draw.randrange(1, 5000)]),
            "ids": [f"id-{k}" for k in range(count)],
        }
        got = generate_annotations(asset_id="a", **args)
        assert dumps(got) == dumps(_reference_annotations(**args))


@pytest.mark.parametrize(
    "options",
    [
        {"assets": 300, "seed": 1, "signing": "mixed", "null_url_share": 0.3},
        {"assets": 120, "seed": 2, "nasty_filenames": False, "signing": "azure"},
        {"assets": 40, "seed": 3, "external_storage": ExternalStorage("http://nginx:1", "s")},
    ],
)
def test_asset_json_text_is_the_serialised_asset_json(options: dict[str, Any]) -> None:
    emu = Emulator(clock=lambda: 1_750_000_000.5, **options)
    ctx = emu._context
    for index in emu.dataset.iter_live():
        record = emu.dataset.record(index)
        for url in (True, False):
            text = asset_json_text(ctx, record, url=url)
            assert text == dumps(asset_json(ctx, record, url=url))
            assert json.loads(text)["data"]["filename"] == record.filename


def _plain_matches(emu: Emulator, index: int, q: str) -> bool:
    dataset = emu.dataset
    query = parse_query(q)
    return query.matches(dataset.asset_tags(index), dataset.data_tags(dataset.record(index)))


def _check_tag_filters(emu: Emulator) -> None:
    dataset = emu.dataset
    for q in QUERIES:
        query = parse_query(q)
        wanted = [i for i in dataset.iter_live() if _plain_matches(emu, i, q)]
        assert [i for i in dataset.iter_live() if dataset.matches(i, query)] == wanted
        assert dataset.count(query) == len(wanted)
        assert dataset.page(-1, len(wanted) + 5, query) == wanted
        if len(wanted) > 3:
            assert dataset.page(wanted[1], 2, query) == wanted[2:4]
            assert dataset.page(-1, 2, query, skip=2) == wanted[2:4]


def test_tag_masks_agree_with_the_tags_through_mutations() -> None:
    # More than one mask block, so block edges are crossed.
    emu = Emulator(assets=TAG_MASK_BLOCK + 300, seed=4)
    _check_tag_filters(emu)
    dataset = emu.dataset
    ids = list(dataset.asset_ids())
    train = parse_query('tags.name = "train"')
    in_train = next(a for a in ids if "train" in dataset.expected(a).tags)
    emu.set_asset_tags(in_train, ["golden"])  # loses its generated tags
    emu.set_data_tags(ids[5], ["sensor-9"])
    emu.replace_data(ids[5])  # the new data keeps the tags set on the old one
    emu.replace_data(ids[6])  # generated data tags follow the original data
    emu.set_data_tags(ids[TAG_MASK_BLOCK + 1], [])
    emu.delete_assets([ids[7], ids[TAG_MASK_BLOCK]])
    emu.add_assets(TAG_MASK_BLOCK)  # into blocks not computed yet
    assert not dataset.matches(dataset.index_of(in_train) or 0, train)
    assert dataset.expected(ids[5]).data_tags == ["sensor-9"]
    _check_tag_filters(emu)


def test_caches_stay_bounded_over_a_large_listing() -> None:
    emu = Emulator(assets=RECORD_CACHE_ENTRIES + 2_000, seed=5)
    dataset = emu.dataset
    for index in dataset.iter_live():
        dataset.record(index)
        dataset.annotation_texts(index)
    assert dataset.factory.cached == RECORD_CACHE_ENTRIES
    assert len(dataset._annotation_texts) == ANNOTATION_CACHE_ENTRIES
    assert dataset.content_source.cached == 0  # no content generated for metadata


def test_cache_assets_keeps_a_whole_version_derived_once() -> None:
    assets = RECORD_CACHE_ENTRIES + 2_000
    emu = Emulator(assets=assets, seed=5, cache_assets=assets)
    dataset = emu.dataset
    for _ in range(2):
        for index in dataset.iter_live():
            dataset.record(index)
            dataset.annotation_texts(index)
    assert dataset.factory.cached == assets
    assert len(dataset._annotation_texts) == assets
    # The second pass derived nothing again.
    assert dataset._annotation_texts.misses == assets
    assert dataset._annotation_texts.hits == assets


# ----- through the API: warm every cache, mutate, look again ---------------------------------


async def _warm(api: Api) -> list[dict[str, Any]]:
    """Everything a mirror asks for, so every cache holds the current state."""
    items = await api.list_all(limit=1000)
    ids = [i["id"] for i in items]
    annotation_ids: list[str] = []
    for start in range(0, len(ids), 50):
        annotation_ids += await api.ok(
            f"{api.dv}/annotations/ids", asset_ids=ids[start : start + 50]
        )
    status, bulk = await api.xget(f"{api.dv}/annotations", annotation_ids)
    assert status == 200 and [a["id"] for a in bulk] == annotation_ids
    for q in QUERIES:
        await _ids(api, q)
    await api.xget(f"{api.dv}/assets", {"ids": ids})
    return items


async def _ids(api: Api, q: str) -> list[str]:
    page = await api.ok(f"{api.dv}/assets/ids/paginated", limit=1000, q=q)
    assert page["next_cursor"] is None and page["count"] == len(page["items"])
    listed: list[str] = page["items"]
    return listed


async def _annotations_of(api: Api, asset_id: str) -> list[dict[str, Any]]:
    ids = await api.ok(f"{api.dv}/annotations/ids", asset_ids=asset_id)
    status, bulk = await api.xget(f"{api.dv}/annotations", ids)
    assert status == 200
    assert [a["id"] for a in bulk] == ids
    found: list[dict[str, Any]] = bulk
    return found


async def test_listing_shows_replaced_and_added_data_after_caching(api: Api, emu: Emulator) -> None:
    items = await _warm(api)
    asset_id = items[3]["id"]
    old = items[3]["data"]
    new_data_id = emu.replace_data(asset_id)
    listed = {i["id"]: i for i in await api.list_all(limit=1000)}
    assert listed[asset_id]["data"]["id"] == new_data_id != old["id"]
    assert listed[asset_id]["data"]["object_name"] != old["object_name"]
    assert listed[asset_id]["data"]["filename"] == old["filename"]
    _, body = await api.xget(f"{api.dv}/assets", {"ids": [asset_id]})
    assert body["items"][0]["data"]["id"] == new_data_id
    # The storage object behind the listed URL is the new data's.
    url = (
        listed[asset_id]["data"]["presigned_url"]
        or (await api.ok(f"/api/asset/{asset_id}"))["data"]["presigned_url"]
    )
    async with api.session.get(url) as response:
        assert await response.read() == emu.dataset.content(new_data_id)
    added = emu.add_assets(2)
    emu.delete_assets([items[0]["id"]])
    listed_ids = [i["id"] for i in await api.list_all(limit=1000)]
    assert listed_ids == [i["id"] for i in items[1:]] + added


async def test_rewritten_object_is_served_after_caching(api: Api, emu: Emulator) -> None:
    items = await _warm(api)
    item = next(i for i in items if emu.dataset.expected(i["id"]).size > 0)
    url = (await api.ok(f"/api/asset/{item['id']}"))["data"]["presigned_url"]
    async with api.session.get(url) as response:
        before = await response.read()
    emu.rewrite_object(item["data"]["id"], size=len(before) + 10)
    again = {i["id"]: i for i in await api.list_all(limit=1000)}
    assert again[item["id"]]["data"]["id"] == item["data"]["id"]  # same data, same ids
    async with api.session.get(url) as response:
        after = await response.read()
    assert len(after) == len(before) + 10 and after != before
    assert after == emu.dataset.content(item["data"]["id"])


async def test_tag_filters_follow_tag_changes_after_caching(api: Api, emu: Emulator) -> None:
    await _warm(api)
    dataset = emu.dataset
    ids = list(dataset.asset_ids())
    train_before = await _ids(api, 'tags.name = "train"')
    leaving = train_before[0]
    emu.set_asset_tags(leaving, ["golden"])
    train_after = await _ids(api, 'tags.name = "train"')
    assert train_after == [a for a in train_before if a != leaving]
    assert await _ids(api, 'tags.name = "golden"') == [leaving]
    joining = next(a for a in ids if a not in train_before)
    emu.set_asset_tags(joining, ["train", "hard"])
    assert joining in await _ids(api, 'tags.name = "train" and tags.name = "hard"')

    night_before = await _ids(api, 'data.tags.name = "night"')
    target = next(a for a in ids if a not in night_before)
    emu.set_data_tags(target, ["night", "sensor-9"])
    assert target in await _ids(api, 'data.tags.name = "night"')
    emu.replace_data(target)  # the new data inherits the tags set on the old one
    assert target in await _ids(api, 'data.tags.name = "sensor-9"')
    emu.set_data_tags(target, [])
    assert target not in await _ids(api, 'data.tags.name = "night"')
    # Replaced data without tags set keeps the original data's generated tags.
    plain = next(a for a in night_before if a not in (leaving, joining, target))
    emu.replace_data(plain)
    assert plain in await _ids(api, 'data.tags.name = "night"')
    emu.delete_assets([plain])
    assert plain not in await _ids(api, 'data.tags.name = "night"')
    _, body = await api.xget(
        f"{api.dv}/assets", {"ids": [leaving, joining], "q": 'tags.name = "train"'}
    )
    assert [i["id"] for i in body["items"]] == [joining]
    for q in QUERIES:
        listed = await _ids(api, q)
        assert listed == [
            a for a in dataset.asset_ids() if _plain_matches(emu, dataset.index_of(a) or 0, q)
        ]


async def test_annotation_answers_follow_mutations_after_caching(api: Api, emu: Emulator) -> None:
    await _warm(api)
    dataset = emu.dataset
    ids = list(dataset.asset_ids())
    asset_id = next(a for a in ids if dataset.expected(a).annotations)
    old = await _annotations_of(api, asset_id)
    assert old == dataset.expected(asset_id).annotations

    new_ids = emu.mutate_annotations(asset_id)
    new = await _annotations_of(api, asset_id)
    assert [a["id"] for a in new] == new_ids and new == dataset.expected(asset_id).annotations
    assert {a["id"] for a in old}.isdisjoint(new_ids)
    assert (await api.xget(f"{api.dv}/annotations", [a["id"] for a in old]))[1] == []
    for status in STATUSES:
        assert await api.ok(f"{api.dv}/annotations/ids", asset_ids=asset_id, status=status) == [
            a["id"] for a in new if a["status"] == status
        ]

    shape = {"x": 1, "y": 2, "w": 3, "h": 4, "label": "dog", "text": None, "attributes": {}}
    set_ids = emu.set_annotations(asset_id, [{"status": "SKIPPED", "rectangles": [shape]}])
    replaced = await _annotations_of(api, asset_id)
    assert [a["id"] for a in replaced] == set_ids and replaced[0]["rectangles"] == [shape]
    assert (await api.xget(f"{api.dv}/annotations", new_ids))[1] == []
    assert await api.ok(f"{api.dv}/annotations/ids", asset_ids=asset_id, status="SKIPPED") == (
        set_ids
    )
    # Back to generated annotations: a new generation, never the cached old one.
    regenerated_ids = emu.mutate_annotations(asset_id)
    regenerated = await _annotations_of(api, asset_id)
    assert [a["id"] for a in regenerated] == regenerated_ids
    assert set(regenerated_ids).isdisjoint(new_ids + set_ids)
    assert (await api.xget(f"{api.dv}/annotations", set_ids))[1] == []

    # A deleted asset's annotations are gone from the bulk answer and the version's ids.
    other = next(a for a in ids if a != asset_id and dataset.expected(a).annotations)
    other_ids = [a["id"] for a in await _annotations_of(api, other)]
    emu.delete_assets([other])
    assert (await api.xget(f"{api.dv}/annotations", other_ids))[1] == []
    everything = await api.ok(f"{api.dv}/annotations/ids")
    assert set(everything).isdisjoint(other_ids)
    assert set(regenerated_ids) <= set(everything)
    # Replacing the data keeps the annotations.
    emu.replace_data(asset_id)
    assert await _annotations_of(api, asset_id) == regenerated


async def test_drift_during_a_cached_filtered_listing(api: Api, emu: Emulator) -> None:
    q = 'tags.name in ("train", "val", "test")'  # every generated asset has one of these
    before = await _ids(api, q)
    assert len(before) == emu.dataset.count()
    emu.faults.add(FaultRule(target="asset_ids", kind="drift", add=4, remove=3, count=1))
    listed: list[str] = []
    page = await api.ok(f"{api.dv}/assets/ids/paginated", limit=20, q=q)
    listed += page["items"]
    while page["next_cursor"]:
        page = await api.ok(
            f"{api.dv}/assets/ids/paginated", limit=20, q=q, cursor=page["next_cursor"]
        )
        listed += page["items"]
    after = await _ids(api, q)
    assert len(after) == len(before) + 1 == page["count"]
    assert set(after) - set(before) == set(list(emu.dataset.asset_ids())[-4:])
    assert set(listed) >= set(after) - set(before)
