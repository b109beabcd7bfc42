from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.plan import Action, LocalFile, StoredAsset, decide, deletion_verdict

ids = st.sampled_from(["d1", "d2"])
names = st.sampled_from(["o1", "o2"])
digests = st.sampled_from(["t1", "t2"])
states = st.sampled_from(["ok", "missing", "corrupt", "failed", "evicted"])
sizes = st.integers(min_value=0, max_value=3)

stored_assets = st.builds(
    StoredAsset,
    data_id=ids,
    object_name=names,
    path=st.one_of(st.none(), st.just("a.jpg")),
    size=st.one_of(st.none(), sizes),
    state=states,
    tags_digest=digests,
    annotations_digest=digests,
)
local_files = st.one_of(st.none(), st.builds(LocalFile, size=sizes, is_regular=st.booleans()))


def test_new_asset_is_downloaded():
    d = decide(
        data_id="d",
        object_name="o",
        stored=None,
        local=None,
        tags_digest="t",
        annotations_digest="a",
    )
    assert d.action is Action.DOWNLOAD
    assert d.reason == "new"


@given(stored_assets, local_files, ids, names, digests, st.one_of(st.none(), digests))
def test_skip_only_when_everything_matches(stored, local, data_id, object_name, tags, annotations):
    d = decide(
        data_id=data_id,
        object_name=object_name,
        stored=stored,
        local=local,
        tags_digest=tags,
        annotations_digest=annotations,
    )
    same_content = stored.data_id == data_id and stored.object_name == object_name
    file_ok = (
        stored.state == "ok"
        and stored.path is not None
        and local is not None
        and local.is_regular
        and stored.size is not None
        and local.size == stored.size
    )
    meta_same = stored.tags_digest == tags and (
        annotations is None or stored.annotations_digest == annotations
    )
    if same_content and file_ok:
        assert d.action is (Action.SKIP if meta_same else Action.UPDATE_METADATA)
    else:
        # Anything short of identical identity and an intact file costs a download.
        assert d.action is Action.DOWNLOAD
    assert d.metadata_changed == (not meta_same)


@given(st.integers(0, 1000), st.integers(0, 1000), st.booleans(), st.floats(0, 100), st.booleans())
def test_deletion_verdict_rules(candidates, total, complete, limit, force):
    total = max(total, candidates)
    v = deletion_verdict(
        candidates=candidates,
        total=total,
        listing_complete=complete,
        max_delete_percent=limit,
        force=force,
    )
    if candidates == 0:
        assert v.allowed
    elif not complete:
        assert not v.allowed  # never after a broken listing, even with force
    elif 100.0 * candidates / total > limit:
        assert v.allowed == force
    else:
        assert v.allowed
