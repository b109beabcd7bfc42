"""engine.layout: table of hostile names, then properties (Hypothesis)."""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Collection, Mapping, Set
from pathlib import PurePosixPath

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from engine.digests import path_key
from engine.layout import (
    MAX_COMPONENT_BYTES,
    MAX_DEPTH,
    STATE_DIR,
    Claim,
    assign_paths,
    candidate,
    extension_for,
    is_form_of,
    sanitize_component,
    short_id,
    variant,
)

AID = "0190c8a5-1234-7abc-8def-0123456789ab"
BID = "0190c8a5-1234-7abc-8def-fedcba987654"

# -- the table ---------------------------------------------------------------------------------

NASTY = [
    ("img_001.jpg", "img_001.jpg"),
    ("../escape.jpg", "escape.jpg"),
    ("../../../../etc/passwd", "etc/passwd"),
    ("/absolute/path/img.jpg", "absolute/path/img.jpg"),
    ("a/../../b.jpg", "a/b.jpg"),
    ("./dot/./seg.jpg", "dot/seg.jpg"),
    ("sub//double//slash.jpg", "sub/double/slash.jpg"),
    ("back\\slash\\win.jpg", "back/slash/win.jpg"),
    ("C:\\Users\\me\\img.jpg", "Users/me/img.jpg"),
    ("c:/x.jpg", "x.jpg"),
    ("trailing-dot.", "trailing-dot"),
    ("trailing-space ", "trailing-space"),
    ("dir. /x.jpg", "dir/x.jpg"),
    ("CON", "_CON"),
    ("con", "_con"),
    ("aux.txt", "_aux.txt"),
    ("nul.tar.gz", "_nul.tar.gz"),
    ("COM1.png", "_COM1.png"),
    ("LPT9", "_LPT9"),
    ("COM¹.jpg", "_COM¹.jpg"),
    ("CON .txt", "_CON .txt"),
    ("CONSOLE.txt", "CONSOLE.txt"),
    ("sub/PRN/x.jpg", "sub/_PRN/x.jpg"),
    (".hidden.jpg", ".hidden.jpg"),
    (".bashrc", ".bashrc"),
    ("colon:star*quest?.jpg", "colon_star_quest_.jpg"),
    ('quote"pipe|lt<gt>.jpg', "quote_pipe_lt_gt_.jpg"),
    ("tab\tand\nnewline.jpg", "tab_and_newline.jpg"),
    ("nul\x00byte.jpg", "nul_byte.jpg"),
    ("del\x7fc1\x85.jpg", "del_c1_.jpg"),
    ("lone\ud800surrogate.jpg", "lone_surrogate.jpg"),
    ("e\u0301-nfd.jpg", "\u00e9-nfd.jpg"),
    ("日本語の画像.jpg", "日本語の画像.jpg"),
    (".assetsync", "_.assetsync"),
    (".assetsync/manifest.sqlite", "_.assetsync/manifest.sqlite"),
    (".AssetSync/x.jpg", "_.AssetSync/x.jpg"),
    (".assetsync./x.jpg", "_.assetsync/x.jpg"),
    ("sub/.assetsync/x.jpg", "sub/.assetsync/x.jpg"),  # only the top level is reserved
]


@pytest.mark.parametrize(("filename", "expected"), NASTY)
def test_nasty_names(filename: str, expected: str) -> None:
    assert candidate(AID, filename) == PurePosixPath(expected)


@pytest.mark.parametrize("filename", ["", ".", "..", "...", " ", "/", "//", "../..", "\\", ". ."])
def test_empty_names_come_from_the_asset_id(filename: str) -> None:
    assert candidate(AID, filename, content_type="image/png") == PurePosixPath(f"{AID}.png")
    assert candidate(AID, filename) == PurePosixPath(AID)


def test_directory_without_leaf_gets_an_id_name() -> None:
    assert candidate(AID, "sub/", content_type="image/jpeg") == PurePosixPath(f"sub/{AID}.jpg")


def test_long_names_keep_their_extension_and_cut_on_characters() -> None:
    path = candidate(AID, "x" * 300 + ".jpg")
    assert path.name == "x" * 251 + ".jpg"
    wide = candidate(AID, "é" * 200 + ".png").name  # 400 bytes
    assert wide.endswith(".png")
    assert len(wide.encode()) <= MAX_COMPONENT_BYTES
    assert wide == "é" * 125 + ".png"  # 250 + 4 bytes: the 126th é would be cut in half
    emoji = candidate(AID, "😀" * 100).name  # 4 bytes each, no extension
    assert emoji == "😀" * 63


def test_deep_paths_are_capped() -> None:
    path = candidate(AID, "d/" * 100 + "leaf.jpg")
    assert len(path.parts) == MAX_DEPTH
    assert path.name == "leaf.jpg"


def test_truncation_cannot_leave_a_reserved_or_dotted_name() -> None:
    assert sanitize_component("CON" + " " * 300 + "x") not in ("CON", "")
    assert not sanitize_component("a" + " " * 300 + "x").endswith(" ")
    assert sanitize_component("." * 300 + "x") == "." * 253 + ".x"  # extension kept
    assert sanitize_component("x" + "." * 300) == "x"


def test_reserved_asset_ids_are_not_used_as_names() -> None:
    assert candidate("PRN", "").name.startswith("PRN-")
    assert candidate("CON", "a.jpg", layout="id").name.startswith("CON-")


def test_id_layout() -> None:
    assert candidate(AID, "IMG.JPEG", layout="id") == PurePosixPath(f"{AID}.jpeg")
    assert candidate(AID, "noext", layout="id", content_type="image/png") == PurePosixPath(
        f"{AID}.png"
    )
    assert candidate(AID, "a.weird ext!", layout="id", content_type="video/mp4").name == (
        f"{AID}.mp4"
    )
    assert candidate(AID, "", layout="id") == PurePosixPath(AID)
    # ids from other implementations of the contract are sanitised too
    odd = candidate("../../x", "a.jpg", layout="id")
    assert len(odd.parts) == 1
    assert ".." not in odd.name.split("~")
    assert odd != candidate("..\\..\\x", "a.jpg", layout="id")
    assert candidate(STATE_DIR, "a.jpg", layout="id").parts[0] != STATE_DIR


def test_extension_for() -> None:
    assert extension_for("a/b/photo.PNG", None) == ".png"
    assert extension_for("archive.tar.gz", None) == ".gz"
    assert extension_for("noext", "image/jpeg; charset=binary") == ".jpg"
    assert extension_for("noext", "application/x-unknown") == ""
    assert extension_for(".bashrc", None) == ""


def test_variants() -> None:
    assert variant("dup.jpg", AID, 0) == "dup~456789ab.jpg"
    assert variant("dup.jpg", AID, 1) == f"dup~{AID}.jpg"
    assert variant("dup.jpg", AID, 2) == f"dup~{AID}~2.jpg"
    assert variant(".bashrc", AID, 0) == ".bashrc~456789ab"
    assert variant("photos.2020", AID, 0, leaf=False) == "photos.2020~456789ab"
    long = variant("x" * 251 + ".jpg", AID, 1)
    assert long.endswith(f"~{AID}.jpg")
    assert len(long.encode()) <= MAX_COMPONENT_BYTES
    assert short_id("a-b") != short_id("a_b")  # short ids hash when there is too little to keep


# -- assignment ------------------------------------------------------------------------------


class FakeManifest:
    """The lookup the scheduler builds from the manifest: recorded file paths by key."""

    def __init__(self, paths: Mapping[str, str] | None = None) -> None:
        self.paths: dict[str, str] = dict(paths or {})  # path -> asset id
        self.calls: list[list[str]] = []

    def record(self, chosen: Mapping[str, PurePosixPath]) -> None:
        for asset_id, path in chosen.items():
            for old in [p for p, a in self.paths.items() if a == asset_id]:
                del self.paths[old]
            self.paths[str(path)] = asset_id

    def __call__(self, keys: Collection[str]) -> tuple[Mapping[str, str], Set[str]]:
        self.calls.append(list(keys))
        by_key = {path_key(p): a for p, a in self.paths.items()}
        dirs = set()
        for p in self.paths:
            parts = PurePosixPath(p).parts
            dirs.update(path_key("/".join(parts[:i])) for i in range(1, len(parts)))
        return {k: by_key[k] for k in keys if k in by_key}, {k for k in keys if k in dirs}


def claims(*pairs: tuple[str, str], manifest: FakeManifest | None = None) -> list[Claim]:
    current = {}
    if manifest is not None:
        current = {a: PurePosixPath(p) for p, a in manifest.paths.items()}
    return [Claim(a, candidate(a, name), current.get(a)) for a, name in pairs]


def test_same_name_and_case_insensitive_collisions() -> None:
    manifest = FakeManifest()
    ids = [str(uuid.UUID(int=i + 1)) for i in range(4)]
    page = claims(
        (ids[0], "dup.jpg"), (ids[1], "dup.jpg"), (ids[2], "DUP.JPG"), (ids[3], "e\u0301.jpg")
    )
    chosen = assign_paths(page, manifest)
    assert chosen[ids[0]] == PurePosixPath("dup.jpg")
    assert chosen[ids[1]] == PurePosixPath(f"dup~{short_id(ids[1])}.jpg")
    assert chosen[ids[2]] == PurePosixPath(f"DUP~{short_id(ids[2])}.JPG")
    assert len({path_key(str(p)) for p in chosen.values()}) == 4
    assert len(manifest.calls) == 1  # one lookup for the page


def test_stable_across_runs_and_pages() -> None:
    manifest = FakeManifest()
    page1 = claims((AID, "dup.jpg"))
    manifest.record(assign_paths(page1, manifest))
    page2 = claims((BID, "dup.jpg"), manifest=manifest)
    first = assign_paths(page2, manifest)
    manifest.record(first)
    assert first[BID] == PurePosixPath(f"dup~{short_id(BID)}.jpg")
    # Next run: same answer for both, page by page, even in another order.
    again = assign_paths(claims((BID, "dup.jpg"), (AID, "dup.jpg"), manifest=manifest), manifest)
    assert again == {AID: PurePosixPath("dup.jpg"), BID: first[BID]}
    # The plain name's owner leaves: the variant stays where it is (no needless move).
    del manifest.paths["dup.jpg"]
    assert assign_paths(claims((BID, "dup.jpg"), manifest=manifest), manifest)[BID] == first[BID]


def test_renamed_asset_moves_to_its_new_name() -> None:
    manifest = FakeManifest({"old.jpg": AID})
    assert assign_paths(claims((AID, "new.jpg"), manifest=manifest), manifest) == {
        AID: PurePosixPath("new.jpg")
    }


def test_file_versus_directory() -> None:
    # "a" is a file first: "a/b" must not put a directory there.
    manifest = FakeManifest()
    chosen = assign_paths(claims((AID, "a"), (BID, "a/b")), manifest)
    assert chosen[AID] == PurePosixPath("a")
    assert chosen[BID] == PurePosixPath(f"a~{short_id(BID)}/b")
    # "a/b" first: the file "a" takes the variant.
    chosen = assign_paths(claims((BID, "a/b"), (AID, "A")), FakeManifest())
    assert chosen[AID] == PurePosixPath(f"A~{short_id(AID)}")
    # The same, against what the manifest recorded on an earlier run.
    manifest = FakeManifest({"a/b/c.jpg": BID})
    chosen = assign_paths(claims((AID, "a/b"), manifest=manifest), manifest)
    assert chosen[AID] == PurePosixPath(f"a/b~{short_id(AID)}")


def test_variant_taken_escalates() -> None:
    # Someone literally uploaded the short-id variant's name.
    manifest = FakeManifest({"dup.jpg": str(uuid.uuid4()), f"dup~{short_id(AID)}.jpg": "other"})
    chosen = assign_paths(claims((AID, "dup.jpg")), manifest)
    assert chosen[AID] == PurePosixPath(f"dup~{AID}.jpg")


# -- properties ------------------------------------------------------------------------------

names = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.sampled_from("./\\ :*?\x00\x7fé😀aBcON1 ~"), max_size=40),
    st.lists(
        st.sampled_from(
            ["..", ".", "", "CON", "aux.txt", ".assetsync", ".ASSETSYNC ", "x" * 260, "a.b"]
        ),
        max_size=6,
    ).map("/".join),
)
ids = st.one_of(st.uuids().map(str), st.text(min_size=1, max_size=80))


def _check_path(path: PurePosixPath) -> None:
    assert not path.is_absolute()
    assert path.parts, "never empty"
    assert len(path.parts) <= MAX_DEPTH
    assert path_key(path.parts[0]) != path_key(STATE_DIR)
    for part in path.parts:
        assert part not in ("", ".", "..")
        assert "/" not in part
        assert "\\" not in part
        assert len(part.encode("utf-8")) <= MAX_COMPONENT_BYTES
        assert not part.endswith((".", " "))
        assert all(ord(c) >= 0x20 and not 0x7F <= ord(c) <= 0x9F for c in part)
        assert not any(c in part for c in '<>:"|?*')
        assert part.split(".", 1)[0].rstrip(" ").upper() not in {"CON", "PRN", "AUX", "NUL"}
        assert unicodedata.is_normalized("NFC", part)


@given(ids, names, st.sampled_from(["name", "id"]), st.sampled_from([None, "image/png"]))
@example("0.", "", "name", None)  # an id ending with a dot, as the whole name (CI found it)
@example("a.", "", "id", None)
def test_candidate_is_always_safe(asset_id: str, filename: str, layout, ctype) -> None:
    path = candidate(asset_id, filename, layout=layout, content_type=ctype)
    _check_path(path)
    assert path == candidate(asset_id, filename, layout=layout, content_type=ctype)
    # Never outside DEST, even joined naively.
    joined = PurePosixPath("/dest") / path
    assert ".." not in joined.parts
    assert joined.is_relative_to("/dest")


@given(ids, ids, names, st.integers(0, 3))
def test_variants_are_safe_and_tell_ids_apart(a: str, b: str, filename: str, level: int) -> None:
    path = candidate(a, filename)
    for leaf in (True, False):
        for asset_id in (a, b):
            v = variant(path.name, asset_id, level, leaf=leaf)
            _check_path(PurePosixPath(v))
            assert v != path.name
    if a != b and level >= 1:
        assert variant(path.name, a, level) != variant(path.name, b, level)


@given(st.uuids(), st.uuids(), names)
def test_uuid_short_variants_differ(a: uuid.UUID, b: uuid.UUID, filename: str) -> None:
    assume(a.hex[-8:] != b.hex[-8:])
    name = candidate(str(a), filename).name
    assert variant(name, str(a), 0) != variant(name, str(b), 0)


@given(st.lists(st.tuples(st.uuids().map(str), names), min_size=1, max_size=25), st.integers(1, 5))
def test_assignment_is_collision_free_and_stable(pairs, page_size: int) -> None:
    pairs = list(dict(pairs).items())  # one claim per asset id
    manifest = FakeManifest()
    for start in range(0, len(pairs), page_size):
        page = claims(*pairs[start : start + page_size], manifest=manifest)
        manifest.record(assign_paths(page, manifest))
    paths = {a: PurePosixPath(p) for p, a in manifest.paths.items()}
    assert len(paths) == len(pairs)
    keys = [path_key(str(p)) for p in paths.values()]
    assert len(set(keys)) == len(keys), "two assets, one path (case-insensitively)"
    files = set(keys)
    for p in paths.values():
        _check_path(p)
        for i in range(1, len(p.parts)):
            assert path_key("/".join(p.parts[:i])) not in files, "a file where a dir is needed"
    for asset_id, wanted in pairs:
        assert is_form_of(paths[asset_id], candidate(asset_id, wanted), asset_id)
    # A second run, all in one page, in reverse order, changes nothing.
    again = assign_paths(claims(*reversed(pairs), manifest=manifest), manifest)
    assert again == paths
