"""Text from servers and file systems, made safe to print for people.

Asset ids, filenames, storage's XML ``<Code>``/``<Message>`` and error messages all come from
somewhere we do not control. Printed raw on a terminal, an ESC sequence in them can clear the
screen or recolour it, a newline can forge an extra "ok" line, and a bidi override can make a
name read backwards. :func:`printable` escapes every such character, so what a person reads is
what the server sent, character for character, and nothing else.

The escaping is unambiguous: a backslash is escaped too, so every escaped string decodes back to
exactly one original (``\\xNN``, ``\\uNNNN``, ``\\UNNNNNNNN`` and ``\\\\`` as in a Python string
literal). JSON output is not passed through here: the JSON encoder escapes control characters
itself, and machine readers want the exact value.
"""

from __future__ import annotations

import re
import unicodedata

from engine.signed_urls import redact

__all__ = ["is_unsafe", "printable", "safe_message", "scrub_urls"]

# Format characters that reorder or hide text (bidi embeddings, overrides, isolates, marks).
# Other format characters (zero-width joiners in emoji, soft hyphens) are left alone: they
# cannot forge a line or move the cursor.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Cc: C0, DEL and C1 controls; Cs: lone surrogates (from undecodable file names), which a
# UTF-8 terminal cannot even be sent; Zl, Zp: line and paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})

_URL = re.compile(r"https?://\S+")
_TRAILING = ":;,.!?)]}'\""


def is_unsafe(char: str) -> bool:
    """Whether ``char`` (one character) must be escaped before a terminal sees it."""
    return char in _BIDI or unicodedata.category(char) in _UNSAFE_CATEGORIES


def _escape(char: str) -> str:
    if char == "\\":
        return "\\\\"
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` with control, bidi and separator characters (and ``\\``) escaped."""
    if text.isprintable() and "\\" not in text:
        return text  # the common case, at C speed (isprintable is False for all we escape)
    return "".join(_escape(c) if c == "\\" or is_unsafe(c) else c for c in text)


def scrub_urls(text: str) -> str:
    """Every URL in ``text`` without its credentials (see :func:`engine.signed_urls.redact`)."""
    if "://" not in text:
        return text

    def one(match: re.Match[str]) -> str:
        # Punctuation after a URL ("<url>: not found") belongs to the sentence, not the URL.
        url = match.group(0)
        core = url.rstrip(_TRAILING)
        return redact(core) + url[len(core) :]

    return _URL.sub(one, text)


def safe_message(text: str) -> str:
    """A message for people: URLs redacted, then unsafe characters escaped."""
    return printable(scrub_urls(text))
