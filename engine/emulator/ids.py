"""Deterministic, decodable UUIDs for the emulator's objects.

A million-asset listing must not need a million-entry ``id -> asset`` table, so every id the
emulator hands out *encodes* the number it stands for: the high 64 bits are a keyed hash (so ids
look random and a forged id fails the check), the low 62 bits are the number, scattered by an
invertible mix and XORed with a per-kind mask.
Decoding is one hash: parse, unmask, recompute, compare. The version nibble (4) and the RFC 4122
variant bits are set, so every id is a valid UUID4-shaped string.

Listing a page encodes thousands of ids, so both directions avoid :class:`uuid.UUID` on the common
path: the keyed hash starts from a per-kind copy of an already keyed BLAKE2b state, the string is
formatted straight from the integer, and a canonical lowercase id is parsed with one ``int()``
(other spellings ``uuid.UUID`` accepts, such as upper case or braces, take the general path, so
what decodes is unchanged).
"""

from __future__ import annotations

import hashlib
import re
import struct
import uuid
from typing import Any

__all__ = ["IdCodec"]

_LOW_BITS = (1 << 62) - 1
_MOD = 1 << 62
# Odd multipliers are invertible modulo 2**62: together with an xorshift they scatter
# consecutive numbers over all 62 bits, so neighbouring ids do not look alike.
_MUL_A = 0x2545F4914F6CDD1D & _LOW_BITS
_MUL_B = 0x1B873593CC9E2D51 & _LOW_BITS
_INV_A = pow(_MUL_A, -1, _MOD)
_INV_B = pow(_MUL_B, -1, _MOD)


# Reductions modulo 2**62 are written as masks with _LOW_BITS (the same for non-negative values).


def _scatter(number: int) -> int:
    value = (number * _MUL_A) & _LOW_BITS
    value ^= value >> 29
    return (value * _MUL_B) & _LOW_BITS


def _gather(value: int) -> int:
    value = (value * _INV_B) & _LOW_BITS
    value ^= (value >> 29) ^ (value >> 58)
    return (value * _INV_A) & _LOW_BITS


_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_VARIANT = 0b10 << 62
_PACK_Q = struct.Struct(">Q").pack


class IdCodec:
    """Encodes ``(kind, number)`` as a UUID string and back, keyed by the emulator's seed."""

    def __init__(self, seed: int) -> None:
        self._key = hashlib.sha256(b"assetsync-emulator-ids:" + str(seed).encode()).digest()[:32]
        self._masks: dict[str, int] = {}
        self._hashers: dict[str, Any] = {}

    def _mask(self, kind: str) -> int:
        mask = self._masks.get(kind)
        if mask is None:
            digest = hashlib.blake2b(kind.encode(), key=self._key, digest_size=8).digest()
            mask = int.from_bytes(digest, "big") & _LOW_BITS
            self._masks[kind] = mask
        return mask

    def _check(self, kind: str, number: int) -> int:
        # BLAKE2b keyed with self._key over kind + number: the keyed state after ``kind`` is
        # kept, so one id costs a copy and one update instead of a keyed start.
        hasher = self._hashers.get(kind)
        if hasher is None:
            hasher = hashlib.blake2b(kind.encode(), key=self._key, digest_size=8)
            self._hashers[kind] = hasher
        state = hasher.copy()
        state.update(_PACK_Q(number))
        # Version nibble 4 lives in bits 12..15 of the high half.
        high = int.from_bytes(state.digest(), "big")
        return (high & ~(0xF << 12)) | (0x4 << 12)

    def encode(self, kind: str, number: int) -> str:
        """The UUID string of object ``number`` of ``kind`` (0 <= number < 2**62)."""
        if not 0 <= number <= _LOW_BITS:
            raise ValueError(f"id number out of range: {number}")
        low = (_scatter(number) ^ self._mask(kind)) | _VARIANT
        h = f"{(self._check(kind, number) << 64) | low:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def decode(self, kind: str, text: str) -> int | None:
        """The number encoded in ``text`` for ``kind``, or None if it is not one of ours."""
        if isinstance(text, str) and _CANONICAL.fullmatch(text):
            value = int(text.replace("-", ""), 16)
        else:
            try:
                value = uuid.UUID(text).int
            except (ValueError, AttributeError, TypeError):
                return None
        number = _gather((value & _LOW_BITS) ^ self._mask(kind))
        if (value >> 64) != self._check(kind, number):
            return None
        return number
