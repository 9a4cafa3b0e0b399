"""Text of a spec file -> `edgec.dsl.ast.SpecFile`, with every syntax error reported.

The LALR parser is built once from ``spec.lark`` and cached. On a syntax error the
parser does not stop: it records a diagnostic, drops the rest of the broken statement
(a whole block, when the bad line opens one), unwinds its stack to the enclosing
statement list and carries on, so one run reports all the mistakes in a file.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import lark
from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from edgec.diagnostics import Diagnostic, Location
from edgec.dsl import ast

GRAMMAR_PATH = Path(__file__).with_name("spec.lark")

# Past this many syntax errors the rest is usually fallout from the first ones (or
# the file is not a spec at all); stopping keeps a binary file from taking minutes.
MAX_SYNTAX_ERRORS = 25


@functools.cache
def _lark() -> Lark:
    return Lark(GRAMMAR_PATH.read_text(encoding="utf-8"), parser="lalr",
                lexer="contextual", propagate_positions=True, start="start")


@functools.cache
def _terminal_descriptions() -> dict[str, str]:
    """How each terminal is named to a user: keywords quoted, the rest in words."""
    names = {
        "NAME": "a name", "NUMBER": "a number", "UNIT": "a unit",
        "STRING": 'a string in double quotes', "_SEP": "end of line",
        "$END": "end of file",
    }
    for terminal in _lark().terminals:
        if terminal.name in names:
            continue
        pattern = terminal.pattern
        if isinstance(pattern, lark.lexer.PatternStr):
            names[terminal.name] = f"'{pattern.value}'"
    return names


@functools.cache
def _statement_starts() -> frozenset[str]:
    """Terminals that begin a statement: where recovery may resume after a bad line."""
    starts = set()
    for rule in _lark().rules:
        origin = rule.origin.name
        origin = origin.value if hasattr(origin, "value") else str(origin)
        if origin in _FIELD_KEYS or origin in {"include", "target", "budget", "accuracy",
                                               "optimize"}:
            first = rule.expansion[0].name
            starts.add(first.value if hasattr(first, "value") else str(first))
    return frozenset(starts)


@functools.cache
def _separator_pattern() -> "re.Pattern[str]":
    for terminal in _lark().terminals:
        if terminal.name == "_SEP":
            return re.compile(terminal.pattern.to_regexp())
    raise AssertionError("the grammar has no _SEP terminal")


def _keyword_spellings() -> dict[str, str]:
    """terminal name -> the keyword's text, for the did-you-mean on misspelled keywords."""
    spellings = {}
    for terminal in _lark().terminals:
        if isinstance(terminal.pattern, lark.lexer.PatternStr):
            text = terminal.pattern.value
            if text[:1].isalpha():
                spellings[terminal.name] = text
    return spellings


@dataclass
class SourceText:
    """A file's text with the lines indexed, to put the offending line under a message."""

    path: str
    text: str

    @functools.cached_property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    def line(self, number: int) -> str | None:
        if 1 <= number <= len(self.lines):
            return self.lines[number - 1]
        return None

    def diagnostic(self, message: str, line: int, column: int, length: int = 1, *,
                   code: str, notes: tuple[str, ...] = (), warning: bool = False) -> Diagnostic:
        source_line = self.line(line)
        if source_line is not None:
            # Keep the caret on the line even when a position points past its end.
            column = max(1, min(column, len(source_line) + 1))
            length = max(1, min(length, len(source_line) - column + 1))
        make = Diagnostic.warning if warning else Diagnostic.error
        return make(message, Location(self.path, line, column, length), notes, code=code,
                    source_line=source_line)

    def at(self, message: str, span: ast.Span, *, code: str, notes: tuple[str, ...] = (),
           warning: bool = False) -> Diagnostic:
        return self.diagnostic(message, span.line, span.column, span.length, code=code,
                               notes=notes, warning=warning)


def _decode_string(literal: str) -> str:
    body = literal[1:-1]
    if "\\" not in body:
        return body
    out = []
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body):
            following = body[i + 1]
            # Unknown escapes stay as written so Windows paths (C:\data) survive.
            out.append({"n": "\n", "t": "\t", '"': '"', "\\": "\\"}.get(following,
                                                                         "\\" + following))
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _token_span(token: Token) -> ast.Span:
    return ast.Span(token.line or 1, token.column or 1, max(1, len(token.value)))


def _meta_span(meta) -> ast.Span:
    if getattr(meta, "empty", True):
        return ast.Span(1, 1)
    length = meta.end_pos - meta.start_pos if meta.end_line == meta.line else 1
    return ast.Span(meta.line, meta.column, max(1, length))


# Grammar rule -> the field keyword as written in a spec.
_FIELD_KEYS = {
    "t_name": "name", "t_summary": "summary", "t_arch": "arch", "t_triple": "triple",
    "t_cpu": "cpu", "t_features": "features", "t_float_abi": "float-abi",
    "t_cores": "cores", "t_clock": "clock", "t_memory": "memory",
    "t_bandwidth": "bandwidth", "t_accelerator": "accelerator",
    "t_accelerator_none": "accelerator", "t_peak": "peak", "t_fast": "fast-precisions",
    "t_launch": "launch",
    "t_int8_accumulation": "int8-accumulation",
    "a_arch": "arch", "a_sm_count": "sm-count",
    "b_latency": "latency", "b_memory": "memory", "b_size": "size",
    "c_metric": "metric", "c_tolerance": "tolerance", "c_data": "data",
    "c_labels": "labels", "c_layout": "layout",
    "o_precision": "precision", "o_fallback": "fallback", "o_prune": "prune",
    "o_prune_none": "prune", "o_tuning": "tuning", "o_tuning_none": "tuning",
    "o_backend": "backend", "o_pipeline": "pipeline", "o_seed": "seed",
    "o_search": "search",
}


@v_args(meta=True)
class _BuildAst(Transformer):
    """Parse tree -> `ast` dataclasses; every node keeps the span of its first token."""

    def __default__(self, data, children, meta):
        key = _FIELD_KEYS.get(str(data))
        if key is None:  # pragma: no cover - every rule of the grammar has a method
            raise AssertionError(f"no AST builder for grammar rule {data}")
        return ast.Field(key, tuple(self._value(child) for child in children),
                         _meta_span(meta))

    def __default_token__(self, token):
        return token

    @staticmethod
    def _value(child):
        if isinstance(child, Token):
            if child.type == "STRING":
                return ast.Text(_decode_string(child.value), _token_span(child))
            return ast.Word(child.value, _token_span(child))
        return child

    def start(self, meta, children):
        return tuple(children)

    def include(self, meta, children):
        return ast.Include(self._value(children[0]), _meta_span(meta))

    def target_named(self, meta, children):
        body = children[1] if len(children) > 1 else None
        return ast.TargetStatement(self._value(children[0]), body, _meta_span(meta))

    def target_inline(self, meta, children):
        return ast.TargetStatement(None, children[0], _meta_span(meta))

    def target_body(self, meta, children):
        return ast.Block("target", None, tuple(children), _meta_span(meta))

    def accel_body(self, meta, children):
        return ast.Block("accelerator", None, tuple(children), _meta_span(meta))

    def budget(self, meta, children):
        return ast.Block("budget", None, tuple(children), _meta_span(meta))

    def accuracy(self, meta, children):
        return ast.Block("accuracy", None, tuple(children), _meta_span(meta))

    def optimize(self, meta, children):
        return ast.Block("optimize", None, tuple(children), _meta_span(meta))

    def quantity(self, meta, children):
        number = children[0]
        unit = self._value(children[1]) if len(children) > 1 else None
        text = number.value + (" " + unit.text if unit else "")
        return ast.QuantityLiteral(float(number.value), unit, text, _token_span(number))

    def percentile(self, meta, children):
        return self._value(children[0])

    def batch(self, meta, children):
        return children[0]

    def metric_option(self, meta, children):
        number = children[1]
        unit = self._value(children[2]) if len(children) > 2 else None
        text = number.value + (" " + unit.text if unit else "")
        return (self._value(children[0]),
                ast.QuantityLiteral(float(number.value), unit, text, _token_span(number)))

    def tuning_limit(self, meta, children):
        trials = self._value(children[1]) if len(children) > 1 else None
        return (children[0], trials)

    def name_list(self, meta, children):
        return tuple(self._value(child) for child in children)

    def string_list(self, meta, children):
        return tuple(self._value(child) for child in children)


def _skip_statement(text: str, position: int, depth: int) -> int:
    """Where the statement broken at ``position`` ends: the next line end, ';' or the
    '}' closing the enclosing block; a '{' opened on the way is skipped as a whole,
    so a misspelled block keyword costs one error, not one per line of its body."""
    length = len(text)
    i = position
    while i < length:
        char = text[i]
        if char == '"':
            i += 1
            while i < length and text[i] not in '"\n':
                i += 2 if text[i] == "\\" else 1
            if i < length and text[i] == '"':
                i += 1
            continue
        if char == "#":
            newline = text.find("\n", i)
            i = length if newline < 0 else newline
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                return i
            depth -= 1
        elif char in "\n;" and depth == 0:
            return i
        i += 1
    return length


class _Recovery:
    """The ``on_error`` hook of lark's LALR parser: report, skip, unwind, resume."""

    def __init__(self, source: SourceText):
        self.source = source
        self.diagnostics: list[Diagnostic] = []
        self.gave_up = False

    def __call__(self, error: UnexpectedInput) -> bool:
        if len(self.diagnostics) >= MAX_SYNTAX_ERRORS:
            self.gave_up = True
            return False
        self.diagnostics.append(self._describe(error))
        parser = error.interactive_parser
        lexer_state = parser.lexer_thread.state
        text = self.source.text

        if isinstance(error, UnexpectedToken) and error.token.type == "$END":
            return self._close_open_blocks(parser)

        if isinstance(error, UnexpectedToken) and error.token.type in {"_SEP", "RBRACE"}:
            # The token that ends the broken statement is still good: unwind to where
            # it is expected and give it back to the parser.
            resumed = self._unwind(parser, error.token.type)
            if resumed == error.token.type:
                parser.feed_token(error.token)
            elif resumed == "statement":
                self._skip_separator(lexer_state)
            # else: the separator is not needed where the parser resumes, or the token
            # is a stray that nothing can take; dropping it loses nothing.
            return True

        start = lexer_state.line_ctr.char_pos
        depth = 1 if isinstance(error, UnexpectedToken) and error.token.type == "LBRACE" else 0
        if isinstance(error, UnexpectedCharacters):
            start = error.pos_in_stream
        end = _skip_statement(text, start, depth)
        if end > lexer_state.line_ctr.char_pos:
            lexer_state.line_ctr.feed(text[lexer_state.line_ctr.char_pos:end])
        elif isinstance(error, UnexpectedCharacters) and end == start:
            # Nothing to skip but the bad character itself.
            lexer_state.line_ctr.feed(text[start:start + 1])
        following = lexer_state.line_ctr.char_pos
        if following >= len(text):
            upcoming = "$END"
        elif text[following] == "}":
            upcoming = "RBRACE"
        else:
            upcoming = "_SEP"
        if upcoming == "$END":
            return self._close_open_blocks(parser)
        resumed = self._unwind(parser, upcoming)
        if resumed == "statement":
            self._skip_separator(lexer_state)
        return resumed is not None

    def _skip_separator(self, lexer_state) -> None:
        """At the start of a statement no separator may come: step over one."""
        separator = _separator_pattern().match(self.source.text, lexer_state.line_ctr.char_pos)
        if separator:
            lexer_state.line_ctr.feed(separator.group(0))

    @staticmethod
    def _unwind(parser, token_type: str) -> str | None:
        """Pop the half-built statement until ``token_type`` can follow, or until a new
        statement can start (never further: that would drop finished statements).
        Returns ``token_type``, ``"statement"``, or None when nothing fits."""
        state = parser.parser_state
        states = state.parse_conf.states
        starts = _statement_starts()
        while True:
            actions = states[state.state_stack[-1]]
            if token_type in actions:
                return token_type
            if not starts.isdisjoint(actions):
                return "statement"
            if len(state.state_stack) <= 1:
                return None
            state.state_stack.pop()
            state.value_stack.pop()

    def _close_open_blocks(self, parser) -> bool:
        """At the end of the file, close whatever blocks are still open so the
        statements that did parse are kept."""
        state = parser.parser_state
        states = state.parse_conf.states
        for _ in range(1000):
            if "$END" in states[state.state_stack[-1]]:
                # Parsing resumes at the end of the text and feeds $END itself.
                return True
            if "RBRACE" in states[state.state_stack[-1]]:
                parser.feed_token(Token("RBRACE", "}"))
                continue
            if len(state.state_stack) <= 1:
                return False
            state.state_stack.pop()
            state.value_stack.pop()
        return False

    def _describe(self, error: UnexpectedInput) -> Diagnostic:
        source = self.source
        if isinstance(error, UnexpectedCharacters):
            return self._describe_character(error)
        assert isinstance(error, UnexpectedToken)
        token = error.token
        expected = sorted(error.expected)
        described = _terminal_descriptions()
        wanted = [described.get(name, name) for name in expected if name in described]
        wanted_text = _join_alternatives(sorted(set(wanted)))
        notes = (f"expected {wanted_text}",) if wanted_text else ()

        if token.type == "$END":
            opening = _unclosed_brace(source.text)
            if opening is not None:
                line, column = opening
                return source.diagnostic("this '{' is never closed", line, column,
                                         code="spec.unclosed-block",
                                         notes=("add '}' after the block's last line",))
            line, column = _end_position(source.text)
            return source.diagnostic("unexpected end of file", line, column,
                                     code="spec.syntax", notes=notes)

        line, column = token.line or 1, token.column or 1
        length = max(1, len(token.value))
        shown = token.value.replace("\n", "\\n")
        if token.type == "_SEP":
            return source.diagnostic("unexpected end of line: this statement is not finished",
                                     line, column, code="spec.syntax", notes=notes)
        if token.type == "RBRACE" and _brace_depth(source.text, token.start_pos) == 0:
            return source.diagnostic("'}' without a matching '{'", line, column,
                                     code="spec.unmatched-brace")
        if token.type == "STRING" and "NAME" in error.expected:
            bare = token.value.strip('"')
            return source.diagnostic(
                f"names are written without quotes: write {bare} rather than {token.value}",
                line, column, length, code="spec.quoted-name", notes=notes)
        if token.type in {"NAME", "UNIT"} and "STRING" in error.expected \
                and error.expected <= {"STRING", "NONE", "AUTO", "DEFAULT"}:
            # The root lexer may have cut a path at '.' or '/': quote the whole word.
            word = re.compile(r'[^\s#;{}"]+').match(source.text, token.start_pos)
            written = word.group(0) if word else token.value
            return source.diagnostic(
                f'this is written in double quotes: "{written}"', line, column, len(written),
                code="spec.unquoted-string", notes=notes)
        if token.type in {"NAME", "UNIT"} and "NUMBER" in error.expected \
                and len(error.expected - {"LESSTHAN", "__ANON_0"}) <= 2:
            return source.diagnostic(
                f"expected a number before '{shown}' (for example '15 ms')", line, column,
                length, code="spec.missing-number", notes=notes)

        spellings = _keyword_spellings()
        candidates = sorted({spellings[name] for name in error.expected if name in spellings})
        if token.value[:1].isalpha() and candidates:
            guess = difflib.get_close_matches(token.value, candidates, n=1, cutoff=0.6)
            if guess:
                return source.diagnostic(
                    f"unknown keyword '{shown}'; did you mean '{guess[0]}'?", line, column,
                    length, code="spec.unknown-keyword", notes=notes)
        kind = {"NUMBER": "number", "STRING": "string", "NAME": "word",
                "UNIT": "word"}.get(token.type, "")
        what = f"{kind} '{shown}'" if kind else f"'{shown}'"
        return source.diagnostic(f"unexpected {what}", line, column, length,
                                 code="spec.syntax", notes=notes)

    def _describe_character(self, error: UnexpectedCharacters) -> Diagnostic:
        source = self.source
        char = source.text[error.pos_in_stream] if error.pos_in_stream < len(source.text) else ""
        line, column = error.line, error.column
        if char in "=:":
            return source.diagnostic(
                f"no '{char}' between a keyword and its value: write 'latency < 15 ms', "
                "'target host', 'metric sqnr'", line, column, code="spec.assignment")
        if char == '"':
            return source.diagnostic("this string is not closed on its line", line, column,
                                     code="spec.unclosed-string",
                                     notes=('add the closing "',))
        allowed = _terminal_descriptions()
        wanted = _join_alternatives(sorted({allowed[name] for name in error.allowed or ()
                                            if name in allowed}))
        notes = (f"expected {wanted}",) if wanted else ()
        shown = repr(char)[1:-1] if char.isprintable() else f"\\u{ord(char):04x}" if char else ""
        return source.diagnostic(f"unexpected character '{shown}'", line, column,
                                 code="spec.syntax", notes=notes)


def _join_alternatives(items: list[str]) -> str:
    if not items:
        return ""
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " or " + items[-1]


def _brace_depth(text: str, end: int) -> int:
    """How many '{' are open just before ``end``."""
    return len(_open_braces(text, end))


def _unclosed_brace(text: str) -> tuple[int, int] | None:
    """Line and column of the innermost '{' still open at the end of the text."""
    stack = _open_braces(text, len(text))
    if not stack:
        return None
    offset = stack[-1]
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


def _open_braces(text: str, length: int) -> list[int]:
    """Offsets of the '{' still open at ``length``, strings and comments skipped."""
    stack: list[int] = []
    i = 0
    while i < length:
        char = text[i]
        if char == '"':
            i += 1
            while i < length and text[i] not in '"\n':
                i += 2 if text[i] == "\\" else 1
        elif char == "#":
            newline = text.find("\n", i)
            i = length if newline < 0 else newline
            continue
        elif char == "{":
            stack.append(i)
        elif char == "}" and stack:
            stack.pop()
        i += 1
    return stack


def _end_position(text: str) -> tuple[int, int]:
    line = text.count("\n") + 1
    return line, len(text) - (text.rfind("\n") + 1) + 1


@dataclass(frozen=True)
class ParseResult:
    spec_file: ast.SpecFile
    diagnostics: tuple[Diagnostic, ...]

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics)


# A spec is a page of settings; lark parses about 100 KB/s of dense statements, so a
# bound on the text that is not comment or blank keeps any input under a second.
MAX_STATEMENT_TEXT = 64 * 1024
_COMMENT = re.compile(r"#[^\n]*")
_BLANK = re.compile(r"\s+")


def _too_large(source: SourceText) -> Diagnostic | None:
    # Whole-text regex passes only (C speed): this runs before every parse.
    text = _COMMENT.sub(lambda m: " " * len(m.group(0)), source.text) \
        if "#" in source.text else source.text
    if len(_BLANK.sub("", text)) <= MAX_STATEMENT_TEXT:
        return None
    seen, offset, chunk = 0, 0, 4096
    while offset < len(text):
        piece = text[offset:offset + chunk]
        count = len(_BLANK.sub("", piece))
        if seen + count > MAX_STATEMENT_TEXT:
            for char in piece:
                if not char.isspace():
                    seen += 1
                    if seen > MAX_STATEMENT_TEXT:
                        break
                offset += 1
            break
        seen += count
        offset += chunk
    line = source.text.count("\n", 0, offset) + 1
    column = offset - (source.text.rfind("\n", 0, offset) + 1) + 1
    return source.diagnostic(
        f"this spec holds more than {MAX_STATEMENT_TEXT // 1024} KiB of statements "
        "(comments and blank space not counted); the limit is reached here",
        line, column, code="spec.too-large",
        notes=("a spec is a page of settings; share common parts with 'include'",))


def parse_text(text: str, path: str = "<spec>") -> ParseResult:
    """Parse spec text; syntax errors come back as diagnostics, never as exceptions."""
    source = SourceText(path, text)
    too_large = _too_large(source)
    if too_large is not None:
        return ParseResult(ast.SpecFile(path, ()), (too_large,))
    recovery = _Recovery(source)
    statements: tuple = ()
    try:
        tree = _lark().parse(text, on_error=recovery)
        statements = _BuildAst().transform(tree)
    except UnexpectedInput:
        # Recovery gave up (too many errors, or nothing left to unwind); what was
        # reported so far stands.
        if not recovery.diagnostics:
            recovery.diagnostics.append(source.diagnostic("cannot parse this file", 1, 1,
                                                          code="spec.syntax"))
    diagnostics = list(recovery.diagnostics)
    if recovery.gave_up:
        last = diagnostics[-1]
        diagnostics[-1] = Diagnostic(
            last.severity, last.message, last.location,
            last.notes + (f"stopped after {MAX_SYNTAX_ERRORS} syntax errors",), last.code,
            last.source_line)
    return ParseResult(ast.SpecFile(path, tuple(statements)), tuple(diagnostics))


def parse_file(path: str | Path) -> ParseResult:
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        source = SourceText(str(path), data.decode("utf-8", errors="replace"))
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        return ParseResult(ast.SpecFile(str(path), ()), (source.diagnostic(
            "a spec file must be UTF-8 text", line, column, code="spec.encoding"),))
    return parse_text(text, str(path))
