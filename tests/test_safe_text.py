"""``printable``: what people see of server-controlled text. Property tests: nothing a terminal
acts on survives, and the escaping is unambiguous (it decodes back to exactly the input)."""

from __future__ import annotations

import re
import unicodedata

from hypothesis import example, given
from hypothesis import strategies as st

from engine.safe_text import is_unsafe, printable, safe_message, scrub_urls

_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_ESCAPE = re.compile(r"\\(?:x([0-9a-f]{2})|u([0-9a-f]{4})|U([0-9a-f]{8})|(\\))")

# Text biased towards what matters: controls, bidi marks, separators, backslashes, surrogates.
_nasty = st.sampled_from(
    [chr(c) for c in range(0x20)]
    + ["\x7f", "\x85", "\x9b", "\u2028", "\u2029", "\\", "\ud800"]
    + list(_BIDI)
)
texts = st.lists(st.one_of(st.characters(), _nasty), max_size=60).map("".join)


def _decode(escaped: str) -> str:
    """The inverse of printable: every escape back to its character."""

    def one(match: re.Match[str]) -> str:
        if match.group(4):
            return "\\"
        return chr(int(next(g for g in match.groups()[:3] if g), 16))

    return _ESCAPE.sub(one, escaped)


@given(texts)
@example("\x1b[2J\nok: all good")
@example("a\\x1b")  # an escape-looking literal must not decode as an ESC
def test_output_holds_nothing_a_terminal_acts_on(text: str) -> None:
    out = printable(text)
    for char in out:
        assert unicodedata.category(char) not in ("Cc", "Cs", "Zl", "Zp"), repr(out)
        assert char not in _BIDI, repr(out)
    out.encode("utf-8")  # no lone surrogate: a terminal can be sent every character


@given(texts)
@example("a\\x1b")
@example("\\\\x41")
def test_escaping_is_unambiguous(text: str) -> None:
    assert _decode(printable(text)) == text


@given(texts, texts)
def test_different_texts_print_differently(a: str, b: str) -> None:
    if a != b:
        assert printable(a) != printable(b)


@given(st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"))))
def test_ordinary_text_is_left_as_it_is(text: str) -> None:
    text = "".join(c for c in text if c not in _BIDI and c != "\\")
    assert printable(text) == text


def test_what_counts_as_unsafe() -> None:
    assert is_unsafe("\x1b") and is_unsafe("\n") and is_unsafe("\x9b") and is_unsafe("\u202e")
    assert not is_unsafe("é") and not is_unsafe("\u200d") and not is_unsafe(" ")
    assert printable("\x1b[2J\nok") == "\\x1b[2J\\x0aok"
    assert printable("\u202egpj.exe") == "\\u202egpj.exe"


def test_urls_lose_their_signatures_and_keep_their_punctuation() -> None:
    text = "http://h/o?X-Amz-Signature=s3cr3t: not found (see http://h/p?sig=abc)."
    assert scrub_urls(text) == (
        "http://h/o?X-Amz-Signature=REDACTED: not found (see http://h/p?sig=REDACTED)."
    )
    assert safe_message("https://h/x?token=t0k\x1b[2J") == "https://h/x?token=REDACTED"
