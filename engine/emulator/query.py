"""The ``q`` filter subset: tag clauses joined with `` and ``.

Grammar (whitespace around tokens is free; string literals use JSON string syntax, so a tag
named ``say "hi"`` is written ``"say \\"hi\\""``)::

    q       := clause ( "and" clause )*
    clause  := field "=" string | field "in" "(" string ( "," string )* ")"
    field   := "tags.name" | "data.tags.name"

A clause matches an asset carrying any of its names; all clauses must match. Anything else is a
:class:`QueryError` (the API answers 400).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Clause", "Query", "QueryError", "parse_query"]

_FIELDS = {"tags.name": "asset", "data.tags.name": "data"}


class QueryError(ValueError):
    """The q string is outside the supported subset."""


@dataclass(frozen=True, slots=True)
class Clause:
    target: str  # "asset" or "data"
    names: frozenset[str]


@dataclass(frozen=True, slots=True)
class Query:
    clauses: tuple[Clause, ...]

    def matches(self, asset_tags: Iterable[str], data_tags: Iterable[str]) -> bool:
        asset_set = set(asset_tags)
        data_set = set(data_tags)
        for clause in self.clauses:
            have = asset_set if clause.target == "asset" else data_set
            if not (clause.names & have):
                return False
        return True

    def fingerprint(self) -> str:
        parts = sorted(f"{c.target}:{sorted(c.names)}" for c in self.clauses)
        return json.dumps(parts)


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1

    def at_end(self) -> bool:
        self.skip_space()
        return self.pos >= len(self.text)

    def expect(self, token: str) -> None:
        self.skip_space()
        if not self.text.startswith(token, self.pos):
            raise QueryError(f"expected {token!r} at position {self.pos}")
        self.pos += len(token)

    def word(self) -> str:
        self.skip_space()
        start = self.pos
        while self.pos < len(self.text) and (
            self.text[self.pos].isalnum() or self.text[self.pos] in "._"
        ):
            self.pos += 1
        if start == self.pos:
            raise QueryError(f"expected a word at position {start}")
        return self.text[start : self.pos]

    def peek(self, token: str) -> bool:
        self.skip_space()
        return self.text.startswith(token, self.pos)

    def string(self) -> str:
        self.skip_space()
        if not self.peek('"'):
            raise QueryError(f"expected a double-quoted string at position {self.pos}")
        end = self.pos + 1
        while end < len(self.text):
            char = self.text[end]
            if char == "\\":
                end += 2
                continue
            if char == '"':
                break
            end += 1
        else:
            raise QueryError("unterminated string literal")
        literal = self.text[self.pos : end + 1]
        self.pos = end + 1
        try:
            value = json.loads(literal)
        except json.JSONDecodeError as exc:
            raise QueryError(f"bad string literal: {exc.msg}") from None
        if not isinstance(value, str):  # pragma: no cover - a quoted literal is a str
            raise QueryError("bad string literal")
        return value


def parse_query(text: str) -> Query:
    """Parse ``q``; raises :class:`QueryError` on anything outside the subset."""
    scanner = _Scanner(text)
    if scanner.at_end():
        raise QueryError("empty query")
    clauses: list[Clause] = []
    while True:
        field = scanner.word()
        target = _FIELDS.get(field)
        if target is None:
            raise QueryError(f"unsupported field {field!r}")
        if scanner.peek("="):
            scanner.expect("=")
            names = [scanner.string()]
        else:
            operator = scanner.word()
            if operator.lower() != "in":
                raise QueryError(f"unsupported operator {operator!r}")
            scanner.expect("(")
            names = [scanner.string()]
            while scanner.peek(","):
                scanner.expect(",")
                names.append(scanner.string())
            scanner.expect(")")
        clauses.append(Clause(target=target, names=frozenset(names)))
        if scanner.at_end():
            return Query(tuple(clauses))
        joiner = scanner.word()
        if joiner.lower() != "and":
            raise QueryError(f"expected 'and', got {joiner!r}")
