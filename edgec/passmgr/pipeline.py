"""Pipeline text ⇄ pipeline structure.

    fold-constants,fixed-point{max-iterations=4}(cse,dce),fuse{patterns=conv-bn,matmul-add}

Passes are separated by commas. Options sit in braces as space-separated
``key=value`` pairs; a list value is comma-separated inside the braces; a value with
spaces or braces is double-quoted. A group ``name{options}(pipeline)`` runs a nested
pipeline (``fixed-point`` repeats it until nothing changes). The same text works on
the command line, in spec files and in crash reproducers, and prints back exactly as
it was written, up to whitespace between elements.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Mapping

# The groups the pass manager knows; anything else followed by "(" is an error.
GROUPS = ("fixed-point",)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_BARE_VALUE = re.compile(r"[^\s{}()\"=]+")


class PipelineSyntaxError(Exception):
    """Pipeline text that does not parse; ``offset`` is a 0-based index into the text."""

    def __init__(self, message: str, offset: int, text: str = ""):
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.text = text

    def render(self) -> str:
        return f"{self.message}\n  {self.text}\n  {' ' * self.offset}^"


@dataclass(frozen=True)
class Option:
    key: str
    raw: str        # the value exactly as written (quotes included)
    offset: int     # where the key starts in the text

    @property
    def text(self) -> str:
        """The value with quotes removed."""
        if len(self.raw) >= 2 and self.raw[0] == '"' and self.raw[-1] == '"':
            return self.raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        return self.raw


@dataclass(frozen=True)
class PassInvocation:
    """One element of a pipeline: a pass with options, or a group with children."""

    name: str
    options: tuple[Option, ...] = ()
    children: "Pipeline | None" = None
    offset: int = 0

    @property
    def is_group(self) -> bool:
        return self.children is not None

    def option(self, key: str, default: str | None = None) -> str | None:
        for o in self.options:
            if o.key == key:
                return o.text
        return default

    def __str__(self) -> str:
        text = self.name
        if self.options:
            text += "{" + " ".join(f"{o.key}={o.raw}" for o in self.options) + "}"
        if self.children is not None:
            text += f"({self.children})"
        return text


@dataclass(frozen=True)
class Pipeline:
    elements: tuple[PassInvocation, ...] = field(default_factory=tuple)

    def __str__(self) -> str:
        return ",".join(str(e) for e in self.elements)

    def __iter__(self):
        return iter(self.elements)

    def __len__(self) -> int:
        return len(self.elements)

    def with_options(self, pass_name: str, options: Mapping[str, str]) -> "Pipeline":
        """This pipeline with ``options`` (key -> value text) set on every invocation of
        ``pass_name``, nested ones included; an option already given is replaced."""
        elements = []
        for e in self.elements:
            if e.children is not None:
                e = replace(e, children=e.children.with_options(pass_name, options))
            elif e.name == pass_name:
                kept = tuple(o for o in e.options if o.key not in options)
                added = tuple(Option(key, quote_value(value), e.offset)
                              for key, value in options.items())
                e = replace(e, options=kept + added)
            elements.append(e)
        return Pipeline(tuple(elements))

    def then(self, *pass_names: str) -> "Pipeline":
        """This pipeline followed by the passes ``pass_names`` (without options)."""
        return Pipeline(self.elements + tuple(PassInvocation(n) for n in pass_names))

    def pass_names(self) -> list[str]:
        """Every pass name used, groups excluded, nested ones included."""
        names: list[str] = []
        for e in self.elements:
            if e.children is not None:
                names.extend(e.children.pass_names())
            else:
                names.append(e.name)
        return names


def quote_value(value: str) -> str:
    """An option value as pipeline text: bare when it can be, else double-quoted."""
    if _BARE_VALUE.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_pipeline(text: str) -> Pipeline:
    """Parse pipeline text; an empty text is the empty pipeline."""
    parser = _Parser(text)
    pipeline = parser.pipeline(top=True)
    parser.skip_space()
    if parser.pos != len(text):
        parser.fail(f"unexpected '{text[parser.pos]}'")
    return pipeline


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def fail(self, message: str, offset: int | None = None) -> None:
        raise PipelineSyntaxError(message, self.pos if offset is None else offset, self.text)

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def pipeline(self, top: bool = False) -> Pipeline:
        self.skip_space()
        elements: list[PassInvocation] = []
        if top and self.pos == len(self.text):
            return Pipeline(())
        while True:
            elements.append(self.element())
            self.skip_space()
            if self.peek() == ",":
                self.pos += 1
                continue
            break
        return Pipeline(tuple(elements))

    def element(self) -> PassInvocation:
        self.skip_space()
        start = self.pos
        m = _NAME.match(self.text, self.pos)
        if not m:
            found = f"'{self.peek()}'" if self.peek() else "the end of the text"
            self.fail(f"expected a pass name, found {found}")
        name = m.group(0)
        self.pos = m.end()
        options: tuple[Option, ...] = ()
        if self.peek() == "{":
            options = self.options()
        children = None
        if self.peek() == "(":
            if name not in GROUPS:
                self.fail(f"'{name}' is not a group; groups are: {', '.join(GROUPS)}", start)
            self.pos += 1
            children = self.pipeline()
            self.skip_space()
            if self.peek() != ")":
                self.fail(f"expected ')' closing '{name}('")
            self.pos += 1
        elif name in GROUPS:
            self.fail(f"'{name}' needs a nested pipeline in parentheses: {name}(a,b)")
        return PassInvocation(name, options, children, start)

    def options(self) -> tuple[Option, ...]:
        self.pos += 1  # "{"
        options: list[Option] = []
        seen: set[str] = set()
        while True:
            self.skip_space()
            if self.peek() == "}":
                self.pos += 1
                return tuple(options)
            if not self.peek():
                self.fail("expected '}' closing the options")
            key_at = self.pos
            m = _NAME.match(self.text, self.pos)
            if not m:
                self.fail(f"expected an option name, found '{self.peek()}'")
            key = m.group(0)
            self.pos = m.end()
            if self.peek() != "=":
                self.fail(f"expected '=' after option '{key}'")
            self.pos += 1
            raw = self.value()
            if key in seen:
                self.fail(f"option '{key}' is given twice", key_at)
            seen.add(key)
            options.append(Option(key, raw, key_at))

    def value(self) -> str:
        if self.peek() == '"':
            end = self.pos + 1
            while end < len(self.text) and self.text[end] != '"':
                end += 2 if self.text[end] == "\\" else 1
            if end >= len(self.text):
                self.fail("unterminated string")
            raw = self.text[self.pos:end + 1]
            self.pos = end + 1
            return raw
        m = _BARE_VALUE.match(self.text, self.pos)
        if not m:
            self.fail("expected a value after '='")
        self.pos = m.end()
        return m.group(0)
