"""The emulator's pure parts: ids, content, ranges, the q parser, signing, filenames."""

from __future__ import annotations

import hashlib
import random
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.emulator import Emulator
from engine.emulator.content import BLOCK_SIZE, ContentSource, ObjectSource
from engine.emulator.ids import IdCodec
from engine.emulator.names import NASTY_NAMES
from engine.emulator.query import QueryError, parse_query
from engine.emulator.ranges import UNSATISFIABLE, http_date, parse_range, select_range
from engine.emulator.signing import Signer, Verdict


@given(st.text(max_size=12), st.integers(min_value=0, max_value=2**62 - 1))
def test_ids_round_trip(kind: str, number: int) -> None:
    codec = IdCodec(5)
    text = codec.encode(kind, number)
    assert codec.decode(kind, text) == number
    assert codec.decode(kind + "x", text) is None
    assert IdCodec(6).decode(kind, text) is None


def test_ids_reject_junk_and_look_random() -> None:
    codec = IdCodec(0)
    assert codec.decode("asset", "nope") is None
    assert codec.decode("asset", "00000000-0000-4000-8000-000000000000") is None
    neighbours = [codec.encode("asset", i) for i in range(3)]
    assert len({n[-12:] for n in neighbours}) == 3
    assert len({n[:8] for n in neighbours}) == 3
    with pytest.raises(ValueError, match="range"):
        codec.encode("asset", -1)


@given(
    size=st.integers(min_value=0, max_value=3 * BLOCK_SIZE + 17),
    data=st.data(),
)
def test_generated_content_slices_agree(size: int, data: st.DataObject) -> None:
    source = ContentSource(1, multipart_part_size=BLOCK_SIZE)
    obj = ObjectSource(key=12345, size=size)
    whole = source.read(obj)
    assert len(whole) == size
    start = data.draw(st.integers(min_value=0, max_value=size))
    end = data.draw(st.integers(min_value=start, max_value=size + 5))
    assert b"".join(source.iter_bytes(obj, start, end)) == whole[start:end]
    assert all(len(c) <= BLOCK_SIZE for c in source.iter_bytes(obj))


def test_content_differs_per_object_and_digests_are_cached() -> None:
    source = ContentSource(1, multipart_part_size=8 * 1024 * 1024)
    one, two = ObjectSource(key=1, size=5000), ObjectSource(key=2, size=5000)
    assert source.read(one) != source.read(two)
    assert source.cached == 0
    digests = source.digests(one)
    assert digests.sha256 == hashlib.sha256(source.read(one)).hexdigest()
    assert digests.etag == f'"{digests.md5}"'
    assert source.cached == 1
    assert source.digests(one) is digests


def test_from_dir_content_reads_the_file(tmp_path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789" * 100_000)
    source = ContentSource(1, multipart_part_size=8 * 1024 * 1024)
    obj = ObjectSource(key=0, size=1_000_000, path=path)
    assert b"".join(source.iter_bytes(obj, 5, 999_990)) == path.read_bytes()[5:999_990]


def _reference(header: str, size: int):
    """A straightforward reading of RFC 9110 for one byte range."""
    spec = header.strip()
    if not spec.startswith("bytes=") or "," in spec:
        return None
    first, sep, last = spec[len("bytes=") :].partition("-")
    if not sep or not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        return None
    if first == "" and last == "":
        return None
    if first == "":
        n = int(last)
        return UNSATISFIABLE if n == 0 or size == 0 else (max(0, size - n), size)
    a = int(first)
    if last and int(last) < a:
        return None
    if a >= size:
        return UNSATISFIABLE
    return (a, size if last == "" else min(int(last) + 1, size))


@given(
    size=st.integers(min_value=0, max_value=5000),
    first=st.one_of(st.none(), st.integers(min_value=0, max_value=6000)),
    last=st.one_of(st.none(), st.integers(min_value=0, max_value=6000)),
)
def test_parse_range_matches_the_rfc(size: int, first: int | None, last: int | None) -> None:
    header = f"bytes={'' if first is None else first}-{'' if last is None else last}"
    assert parse_range(header, size) == _reference(header, size)
    result = parse_range(header, size)
    if isinstance(result, tuple):
        start, end = result
        assert 0 <= start < end <= size


def test_select_range_if_range() -> None:
    etag, modified = '"abc"', 1_700_000_000
    assert select_range(None, etag, size=10, etag=etag, last_modified=modified) is None
    assert select_range("bytes=0-1", etag, size=10, etag=etag, last_modified=modified) == (0, 2)
    assert select_range("bytes=0-1", '"old"', size=10, etag=etag, last_modified=modified) is None
    date = http_date(modified)
    assert select_range("bytes=0-1", date, size=10, etag=etag, last_modified=modified) == (0, 2)
    assert select_range("bytes=0-1", 'W/"abc"', size=10, etag=etag, last_modified=modified) is None


@pytest.mark.parametrize(
    ("text", "asset", "data", "match"),
    [
        ('tags.name = "a"', ["a"], [], True),
        ('tags.name="a"', ["b"], [], False),
        ('tags.name in ("a","b")', ["b"], [], True),
        ('tags.name in ( "a" , "b" )', [], ["a"], False),
        ('data.tags.name = "a"', [], ["a"], True),
        ('tags.name = "a" and data.tags.name in ("x")', ["a"], ["x"], True),
        ('tags.name = "a" AND tags.name = "b"', ["a"], [], False),
        ('tags.name = "say \\"hi\\""', ['say "hi"'], [], True),
        ('tags.name = "back\\\\slash"', ["back\\slash"], [], True),
        ('tags.name = "\\u00e9"', ["é"], [], True),
    ],
)
def test_query_subset(text: str, asset: list[str], data: list[str], match: bool) -> None:
    assert parse_query(text).matches(asset, data) is match


@pytest.mark.parametrize(
    "text",
    [
        "",
        "tags.name",
        'tags.name = "a',
        "tags.name = a",
        'tags.name != "a"',
        'tags.name in "a"',
        'tags.name in ("a" "b")',
        'name = "a"',
        'tags.name = "a" or tags.name = "b"',
        'tags.name = "a" and',
        'tags.name = "bad \\x escape"',
    ],
)
def test_query_rejects_everything_else(text: str) -> None:
    with pytest.raises(QueryError):
        parse_query(text)


@pytest.mark.parametrize("style", ["s3", "gcs", "azure"])
def test_signer_round_trip(style: str) -> None:
    signer = Signer(b"k" * 32, "http://127.0.0.1:1")
    url = signer.sign(style, "lake/obj.jpg", 1_700_000_000.5, 60)
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    assert signer.expiry(style, params) == 1_700_000_000 + 60
    assert signer.verify(style, parts.path, params, 1_700_000_059.9) is Verdict.OK
    assert signer.verify(style, parts.path, params, 1_700_000_060) is Verdict.EXPIRED
    assert signer.verify(style, parts.path + "x", params, 1_700_000_000) is Verdict.TAMPERED
    other = Signer(b"j" * 32, "http://127.0.0.1:1")
    assert other.verify(style, parts.path, params, 1_700_000_000) is Verdict.TAMPERED
    with pytest.raises(ValueError, match="style"):
        signer.sign("ftp", "x", 0, 1)


def test_every_nasty_filename_appears_in_a_small_dataset() -> None:
    emu = Emulator(assets=7 * len(NASTY_NAMES))
    names = [emu.dataset.expected(a).filename for a in emu.dataset.asset_ids()]
    for nasty in NASTY_NAMES:
        assert any(n == nasty.replace("{i}", str(i)) for i, n in enumerate(names)), nasty
    assert "" in names
    assert any(len(n.encode()) > 255 for n in names)
    assert any(n.startswith("../") for n in names)
    assert any(n.startswith("/") for n in names)
    assert any(n.upper() in ("CON", "AUX.TXT", "NUL.JPG") for n in names)
    assert any(not n.isascii() for n in names)
    assert any(n.startswith(".") and len(n) > 2 for n in names)
    assert len(names) - len(set(names)) >= 2  # duplicates
    plain = Emulator(assets=200, nasty_filenames=False)
    plain_names = [plain.dataset.expected(a).filename for a in plain.dataset.asset_ids()]
    assert len(set(plain_names)) == len(plain_names)
    for asset_id in plain.dataset.asset_ids():
        name = plain.dataset.expected(asset_id).filename
        assert name.isascii()
        assert ".." not in name
        assert not name.startswith("/")


def test_generation_is_deterministic_per_seed() -> None:
    def fingerprint(seed: int) -> list[tuple[str, str, int, str]]:
        emu = Emulator(assets=30, seed=seed)
        return [
            (e.asset_id, e.data_id, e.size, e.sha256)
            for e in map(emu.dataset.expected, emu.dataset.asset_ids())
        ]

    assert fingerprint(1) == fingerprint(1)
    assert fingerprint(1) != fingerprint(2)


def test_size_distribution_knobs() -> None:
    emu = Emulator(
        assets=400,
        min_size=1000,
        max_size=2000,
        large_share=0.05,
        large_size=123_456,
        empty_share=0.025,
    )
    sizes = [emu.dataset.expected(a).size for a in emu.dataset.asset_ids()]
    assert sizes.count(123_456) == 20
    assert sizes.count(0) == 10
    rest = [s for s in sizes if s not in (0, 123_456)]
    assert all(1000 <= s <= 2000 for s in rest)
    assert len(set(rest)) > 100


def test_drift_helper_uses_the_given_rng() -> None:
    emu = Emulator(assets=50)
    added, removed = emu.dataset.drift(2, 3, random.Random(1))
    assert len(added) == 2
    assert len(removed) == 3
    assert emu.dataset.count() == 49
