"""Syntax tree of a spec file: what was written and where, before any meaning is checked.

The parser's Transformer builds these frozen dataclasses; `edgec.dsl.semantic` turns
them into a resolved `Spec`. Positions never take part in equality, so two trees
parsed from differently laid out text compare equal when they say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union


@dataclass(frozen=True)
class Span:
    """1-based line and column of the first character; ``length`` on that line."""

    line: int
    column: int
    length: int = 1


def _span() -> Span:
    return field(default=Span(0, 0), compare=False, repr=False)


@dataclass(frozen=True)
class Word:
    """A bare word: a name (``jetson-orin-nano``, ``int8``) or a keyword value (``auto``)."""

    text: str
    span: Span = _span()


@dataclass(frozen=True)
class Text:
    """A double-quoted string literal, escapes already decoded."""

    value: str
    span: Span = _span()


@dataclass(frozen=True)
class QuantityLiteral:
    """A number with an optional unit, exactly as written (the unit is not checked yet)."""

    number: float
    unit: Word | None
    text: str = ""
    span: Span = _span()


Value = Union[Word, Text, QuantityLiteral, tuple]


@dataclass(frozen=True)
class Field:
    """One ``key value...`` line inside a block (target, accelerator, budget, ...).

    ``key`` is the keyword (``latency``, ``peak``); ``values`` the rest of the line in
    order, as `Word`, `Text` or `QuantityLiteral` (lists are tuples of them).
    """

    key: str
    values: tuple[Value, ...]
    span: Span = _span()


@dataclass(frozen=True)
class Block:
    """``keyword [name] { field... }``; ``name`` is the word before the brace, if any."""

    keyword: str
    name: Word | None
    fields: tuple[Field, ...]
    span: Span = _span()


@dataclass(frozen=True)
class Include:
    path: Text
    span: Span = _span()


@dataclass(frozen=True)
class TargetStatement:
    """``target NAME``, ``target NAME { overrides }`` or ``target { description }``."""

    name: Word | None
    body: Block | None
    span: Span = _span()


Statement = Union[Include, TargetStatement, Block]


@dataclass(frozen=True)
class SpecFile:
    path: str
    statements: tuple[Statement, ...]
