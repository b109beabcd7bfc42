"""The pure functions the planner shares with the store: digests and path keys."""

from __future__ import annotations

import hashlib
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from engine.digests import canonical_json
from engine.manifest import annotations_digest, path_key, tags_digest
from tests.manifest.helpers import annotation, annotations_st

names = st.lists(st.text(max_size=10), max_size=8)


@given(names, names, st.randoms())
def test_tags_digest_ignores_order_and_duplicates(tags, data_tags, rnd) -> None:
    shuffled, shuffled_data = tags + tags[:2], list(data_tags)
    rnd.shuffle(shuffled)
    rnd.shuffle(shuffled_data)
    assert tags_digest(tags, data_tags) == tags_digest(shuffled, shuffled_data)
    assert tags_digest(iter(tags), iter(data_tags)) == tags_digest(tuple(tags), tuple(data_tags))


@given(names, names)
def test_tags_digest_tells_sets_apart(tags, data_tags) -> None:
    if set(tags) != set(data_tags):
        assert tags_digest(tags, data_tags) != tags_digest(data_tags, tags)
    assert tags_digest(tags, data_tags) != tags_digest([*tags, "\x00new"], data_tags)


@given(names, names)
def test_tags_digest_is_the_sha256_of_the_canonical_json(tags, data_tags) -> None:
    """Digests stored by earlier versions (the stdlib's spelling) stay valid."""
    payload = canonical_json([sorted(set(tags)), sorted(set(data_tags))]).encode("utf-8")
    assert tags_digest(tags, data_tags) == hashlib.sha256(payload).hexdigest()


@given(st.lists(st.text(st.characters(codec=None, categories=["Cs", "Cc", "Lo"]), min_size=1)))
def test_tags_digest_takes_names_orjson_cannot_encode(tags) -> None:
    payload = canonical_json([sorted(set(tags)), []]).encode("utf-8", "surrogatepass")
    assert tags_digest(tags, []) == hashlib.sha256(payload).hexdigest()


def test_tags_digest_separators_cannot_collide() -> None:
    assert tags_digest(["a,b"], []) != tags_digest(["a", "b"], [])
    assert tags_digest(["a"], ["b"]) != tags_digest(["a", "b"], [])
    assert tags_digest([], []) == tags_digest((), ())


@given(annotations_st("asset"), st.randoms())
def test_annotations_digest_ignores_the_order_of_annotations(annotations, rnd) -> None:
    shuffled = list(annotations)
    rnd.shuffle(shuffled)
    # Key order inside a dict is JSON spelling, not content.
    reordered = [dict(reversed(list(a.items()))) for a in shuffled]
    assert annotations_digest(annotations) == annotations_digest(reordered)


@given(annotations_st("asset").filter(bool))
def test_annotations_digest_sees_every_change(annotations) -> None:
    before = annotations_digest(annotations)
    changed = [dict(a) for a in annotations]
    changed[0]["status"] = changed[0]["status"] + "!"
    assert annotations_digest(changed) != before
    assert annotations_digest(annotations[1:]) != before
    assert annotations_digest([*annotations, annotations[0]]) != before  # a duplicate counts


def test_annotations_digest_of_none_and_empty() -> None:
    assert annotations_digest([]) == annotations_digest(())
    assert annotations_digest([]) != annotations_digest([annotation("a", 0)])


@given(st.text(max_size=20))
def test_path_key_is_idempotent_and_case_blind(path) -> None:
    key = path_key(path)
    assert path_key(key) == key
    assert path_key(path.casefold()) == key
    assert path_key(unicodedata.normalize("NFC", path)) == path_key(
        unicodedata.normalize("NFD", path)
    )


def test_path_key_examples() -> None:
    assert path_key("Cat.JPG") == path_key("cat.jpg")
    assert path_key("caf\u00e9.png") == path_key("cafe\u0301.png")
    assert path_key("STRASSE") == path_key("stra\u00dfe")
    assert path_key("a/b") != path_key("a_b")
