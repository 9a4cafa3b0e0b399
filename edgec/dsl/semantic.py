"""Meaning of a parsed spec: includes merged, names resolved, units checked -> `Spec`.

Statements apply in order and a later value replaces an earlier one, so a spec that
includes a team's base spec overrides it line by line. A file is applied once, where it
is first included (like ``#pragma once``): including it again does nothing, so
diamond-shaped includes cost one read each. Every problem is collected as
a diagnostic pointing into the file that holds it; resolution goes on past errors so
that one run reports them all.
"""

from __future__ import annotations

import difflib
import functools
import glob as globbing
import math
import os
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from edgec.diagnostics import Diagnostic, Location
from edgec.dsl import ast, host
from edgec.dsl.catalogue import Catalogue, TargetLoadError, target_catalogue
from edgec.dsl.parser import ParseResult, SourceText, parse_text
from edgec.dsl.spec import (ARCHITECTURES, INT8_ACCUMULATIONS, PERCENTILES,
                            PRECISIONS, SEARCH_MODES, Accelerator, Accuracy, Budget, Latency,
                            Optimize, Pruning, Spec, Target, Tuning,
                            default_int8_accumulation)
from edgec.dsl.units import UNITS, Dimension, Quantity, suggest_unit

BUILTIN_METRICS = ("top1-agreement", "max-abs-error", "cosine-similarity", "sqnr", "accuracy")
METRIC_ENTRY_POINT_GROUP = "edgec.metrics"
# The tolerance a metric gets when the spec names the metric but no tolerance.
DEFAULT_TOLERANCES = {
    "top1-agreement": Quantity(1.0, "%"), "accuracy": Quantity(1.0, "%"),
    "cosine-similarity": Quantity(0.1, "%"), "max-abs-error": Quantity(0.001),
    "sqnr": Quantity(30.0, "dB"),
}
MAX_INCLUDE_DEPTH = 16
# Latency is measured on inputs of the budget's batch, held in memory: a batch beyond
# this is a typo (100000000 would allocate 25 GB for an 8x8 image model).
MAX_BATCH = 1024
# Bounds on the work one spec can ask for: the files it may include in all (each is
# read and applied once, however often it is included), and each file's size.
MAX_INCLUDED_FILES = 64
MAX_SPEC_FILE_BYTES = 1 << 20
ACCELERATOR_KINDS = ("cuda",)
FLOAT_ABIS = ("hard", "soft", "softfp")


@functools.cache
def metric_names() -> tuple[str, ...]:
    """Built-in metrics, then those plugins add through ``edgec.metrics``."""
    try:
        plugins = sorted({ep.name for ep in metadata.entry_points(group=METRIC_ENTRY_POINT_GROUP)})
    except Exception:  # noqa: BLE001 - broken metadata must not break every spec
        plugins = []
    return BUILTIN_METRICS + tuple(name for name in plugins if name not in BUILTIN_METRICS)


def did_you_mean(word: str, known, prefix: str = "") -> str:
    guess = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    if not guess and len(word) >= 3:
        # A shortened name ('cosine' for 'cosine-similarity') scores low on difflib.
        guess = [k for k in known if k.startswith(word)][:1]
    if not guess:
        lowered = {k.lower(): k for k in known}
        guess = [lowered[word.lower()]] if word.lower() in lowered else []
    return f"; did you mean '{prefix}{guess[0]}'?" if guess else ""


@functools.lru_cache(maxsize=128)
def _parse_cached(text: str, path: str) -> ParseResult:
    # Built-in target files are parsed again by every spec that names them.
    return parse_text(text, path)


@dataclass
class _Setting:
    value: Any
    source: SourceText
    span: ast.Span


@dataclass
class _State:
    """What the statements seen so far have set, keyed ``block.field``."""

    settings: dict[str, _Setting] = field(default_factory=dict)
    target: tuple[ast.TargetStatement, SourceText] | None = None
    files: list[str] = field(default_factory=list)


class Resolver:
    """Resolves one spec (and what it includes) into a `Spec`, collecting diagnostics."""

    def __init__(self, catalogue: Catalogue | None = None):
        self.catalogue = catalogue or target_catalogue()
        self.diagnostics: list[Diagnostic] = []
        self._targets: dict[str, dict | None] = {}
        self._syntax_errors_in: set[str] = set()
        self._included: set[str] = set()

    # -- entry points -------------------------------------------------------------

    def resolve_file(self, path: str | os.PathLike) -> Spec | None:
        text, shown = self._read(Path(path), None)
        if text is None:
            return None
        return self.resolve_text(text, shown)

    def resolve_text(self, text: str, path: str = "<spec>") -> Spec | None:
        state = _State()
        real = _real(path)
        self._apply_file(text, path, state, stack=(real,) if real else ())
        spec = self._finish(state)
        # Reading order: by file (as first met), then line and column.
        files: dict[str | None, int] = {}
        for diagnostic in self.diagnostics:
            files.setdefault(diagnostic.location.path if diagnostic.location else None,
                             len(files))

        def position(diagnostic: Diagnostic):
            location = diagnostic.location or Location()
            return (files[location.path], location.line or 0, location.column or 0)
        self.diagnostics.sort(key=position)
        return spec

    # -- reporting ------------------------------------------------------------------

    def error(self, source: SourceText, span: ast.Span, message: str, code: str,
              notes: tuple[str, ...] = ()) -> None:
        self.diagnostics.append(source.at(message, span, code=code, notes=notes))

    def warning(self, source: SourceText, span: ast.Span, message: str, code: str,
                notes: tuple[str, ...] = ()) -> None:
        self.diagnostics.append(source.at(message, span, code=code, notes=notes, warning=True))

    @property
    def has_errors(self) -> bool:
        return any(d.is_error for d in self.diagnostics)

    # -- files and includes -----------------------------------------------------------

    def _read(self, path: Path, failure: tuple[SourceText, ast.Span] | None,
              written: str | None = None) -> tuple[str | None, str]:
        from edgec.safeio import read_regular_file

        shown = str(path)
        try:
            data = read_regular_file(path, MAX_SPEC_FILE_BYTES)
        except OSError as error:
            message = f"cannot read {shown}: {error.strerror or error}"
            notes: tuple[str, ...] = ()
            if isinstance(error, FileNotFoundError) and path.parent.is_dir():
                siblings = sorted(p.name for p in path.parent.glob("*.edge"))
                # Suggest what to write: with the folder part the include wrote ('../').
                folder = os.path.dirname(written) if written else ""
                hint = did_you_mean(path.name, siblings, prefix=f"{folder}/" if folder else "")
                message = f"no such file: {written or shown}{hint}"
                notes = (f"looked for {path.resolve()}",) if written else ()
            if failure is not None:
                self.error(failure[0], failure[1], message, "spec.include-missing", notes)
            else:
                self.diagnostics.append(Diagnostic.error(message, Location(shown),
                                                         code="spec.file-missing"))
            return None, shown
        try:
            return data.decode("utf-8"), shown
        except UnicodeDecodeError:
            text = data.decode("utf-8", errors="replace")
        if b"\0" in data or text.count("\ufffd") > len(text) // 20:
            # Not a text file (an ONNX model given as the spec): one line, not a parse
            # error for every run of binary bytes.
            message = (f"{written} is not a spec file" if written else "not a spec file") + \
                ": it holds binary data"
            if data[:1] == b"\x08" or path.suffix == ".onnx":
                message += " (an ONNX model? the spec is the .edge file)"
            if failure is not None:
                self.error(failure[0], failure[1], message, "spec.binary")
            else:
                self.diagnostics.append(Diagnostic.error(message, Location(shown),
                                                         code="spec.binary"))
            return None, shown
        return text, shown  # a stray bad byte: the parser reports where it is

    def _apply_file(self, text: str, path: str, state: _State, stack: tuple[str, ...]) -> None:
        result = _parse_cached(text, path)
        self.diagnostics.extend(result.diagnostics)
        if not result.ok:
            self._syntax_errors_in.add(path)
        source = SourceText(path, text)
        state.files.append(path)
        seen_here: dict[str, ast.Span] = {}
        for statement in result.spec_file.statements:
            if isinstance(statement, ast.Include):
                self._include(statement, source, state, stack)
            elif isinstance(statement, ast.TargetStatement):
                if "target" in seen_here:
                    self._warn_repeated(source, statement.span, "target", seen_here["target"])
                seen_here["target"] = statement.span
                state.target = (statement, source)
            else:
                for item in statement.fields:
                    key = f"{statement.keyword}.{item.key}"
                    if key in seen_here:
                        self._warn_repeated(source, item.span, key, seen_here[key])
                    seen_here[key] = item.span
                    self._field(statement.keyword, item, source, state)

    def _warn_repeated(self, source: SourceText, span: ast.Span, key: str,
                       first: ast.Span) -> None:
        self.warning(source, span, f"'{key}' is set again in the same file; this later "
                     "value wins", "spec.repeated",
                     (f"first set at {source.path}:{first.line}:{first.column}",))

    def _include(self, statement: ast.Include, source: SourceText, state: _State,
                 stack: tuple[str, ...]) -> None:
        relative = statement.path.value
        base = Path(source.path).parent if source.path and not source.path.startswith("<") \
            else Path.cwd()
        path = (base / relative) if not os.path.isabs(relative) else Path(relative)
        real = _real(str(path))
        if real in stack:
            cycle = " -> ".join(Path(p).name for p in stack[stack.index(real):]) \
                + f" -> {Path(real).name}"
            self.error(source, statement.path.span, f"include cycle: {cycle}",
                       "spec.include-cycle")
            return
        if len(stack) >= MAX_INCLUDE_DEPTH:
            self.error(source, statement.path.span,
                       f"includes nest deeper than {MAX_INCLUDE_DEPTH} files", "spec.include-depth")
            return
        if real in self._included:
            return  # applied where it was first included
        if len(self._included) >= MAX_INCLUDED_FILES:
            self.error(source, statement.path.span,
                       f"this spec includes more than {MAX_INCLUDED_FILES} files in all",
                       "spec.include-limit")
            return
        self._included.add(real)
        if path.is_dir():
            self.error(source, statement.path.span, f"{path} is a directory, not a spec file",
                       "spec.include-missing")
            return
        text, shown = self._read(path, (source, statement.path.span), relative)
        if text is None:
            return
        if not _looks_like_a_spec(text, shown):
            # Its syntax errors would quote its lines: one line instead, at the include.
            self.error(source, statement.path.span,
                       f"{relative} is not a spec file (its first line does not parse as a "
                       "spec statement)", "spec.include-not-spec")
            return
        self._apply_file(text, shown, state, stack + (real,))

    # -- fields of budget, accuracy and optimize ------------------------------------

    def _field(self, block: str, item: ast.Field, source: SourceText, state: _State) -> None:
        handler = getattr(self, f"_{block}_{item.key.replace('-', '_')}")
        value = handler(item, source)
        if value is not _INVALID:
            state.settings[f"{block}.{item.key}"] = _Setting(value, source, item.span)

    def _budget_latency(self, item: ast.Field, source: SourceText):
        limit = self._quantity(item.values[0], source, "a latency", (Dimension.TIME,),
                               positive=True)
        percentile, batch = 50, 1
        for extra in item.values[1:]:
            if isinstance(extra, ast.Word):
                percentile = int(extra.text[1:])
                if percentile not in PERCENTILES:  # pragma: no cover - grammar allows only these
                    self.error(source, extra.span, f"unknown percentile {extra.text}",
                               "spec.percentile")
            else:
                batch = self._integer(extra, source, "a batch size", minimum=1,
                                      maximum=MAX_BATCH)
        if limit is _INVALID or batch is _INVALID:
            return _INVALID
        return Latency(limit, percentile, batch)

    def _budget_memory(self, item: ast.Field, source: SourceText):
        return self._quantity(item.values[0], source, "a peak memory", (Dimension.SIZE,),
                              positive=True)

    def _budget_size(self, item: ast.Field, source: SourceText):
        return self._quantity(item.values[0], source, "an artifact size", (Dimension.SIZE,),
                              positive=True)

    def _accuracy_metric(self, item: ast.Field, source: SourceText):
        word = item.values[0]
        known = metric_names()
        if word.text not in known:
            self.error(source, word.span,
                       f"unknown metric '{word.text}'{did_you_mean(word.text, known)}",
                       "spec.unknown-metric", (f"known metrics: {', '.join(known)}",))
            return _INVALID
        return (word.text, word.span)

    def _accuracy_tolerance(self, item: ast.Field, source: SourceText):
        # Which units fit depends on the metric, known only once every file is merged.
        return self._quantity(item.values[0], source, "a tolerance",
                              (Dimension.NUMBER, Dimension.RATIO, Dimension.DECIBEL))

    def _accuracy_data(self, item: ast.Field, source: SourceText):
        return self._path(item.values[0], source, "data")

    def _accuracy_labels(self, item: ast.Field, source: SourceText):
        return self._path(item.values[0], source, "labels")

    def _path(self, value, source: SourceText, what: str):
        if isinstance(value, ast.Word):  # none
            return None
        if not value.value.strip():
            self.error(source, value.span, f"{what} path is empty", "spec.path")
            return _INVALID
        base = Path(source.path).parent if not source.path.startswith("<") else Path.cwd()
        joined = value.value if os.path.isabs(value.value) else str(base / value.value)
        resolved = os.path.normpath(os.path.abspath(joined))
        if "\x00" in resolved:
            self.error(source, value.span, f"{what} path holds a NUL character", "spec.path")
            return _INVALID
        try:
            matched = bool(globbing.glob(resolved)) if globbing.has_magic(resolved) \
                else os.path.exists(resolved)
        except (OSError, ValueError):
            matched = False
        if not matched:
            self.warning(source, value.span,
                         f"{what} '{value.value}' matches no file (looked for {resolved})",
                         "spec.data-missing",
                         ("the spec is still valid; compiling needs the files",))
        return resolved

    def _optimize_precision(self, item: ast.Field, source: SourceText):
        names = []
        ok = True
        for word in item.values[0]:
            if word.text not in PRECISIONS:
                self.error(source, word.span, f"unknown precision '{word.text}'"
                           f"{did_you_mean(word.text, PRECISIONS)}", "spec.unknown-precision",
                           (f"precisions: {', '.join(PRECISIONS)}",))
                ok = False
            elif word.text in names:
                self.warning(source, word.span, f"precision '{word.text}' is listed twice",
                             "spec.repeated")
            else:
                names.append(word.text)
        if not ok:
            return _INVALID
        # Kept in one canonical order: the set is what matters, not how it was listed.
        return tuple(p for p in PRECISIONS if p in names)

    def _optimize_fallback(self, item: ast.Field, source: SourceText):
        return item.values[0].text == "per-layer"

    def _optimize_prune(self, item: ast.Field, source: SourceText):
        first = item.values[0]
        if isinstance(first, ast.Word):  # none
            return Pruning()
        sparsity = self._quantity(first, source, "a sparsity", (Dimension.RATIO, Dimension.NUMBER))
        if sparsity is _INVALID:
            return _INVALID
        if not 0 < sparsity.base < 1:
            self.error(source, first.span, f"sparsity must lie strictly between 0 and "
                       f"{'100 %' if sparsity.unit else '1'}, got {sparsity}", "spec.range")
            return _INVALID
        structured = True
        if len(item.values) > 1:
            structured = item.values[1].text == "structured"
        return Pruning(sparsity, structured)

    def _optimize_tuning(self, item: ast.Field, source: SourceText):
        first = item.values[0]
        if isinstance(first, ast.Word):  # none
            return Tuning()
        trials = wall_time = None
        ok = True
        for quantity, trials_word in item.values:
            if trials_word is not None or quantity.unit is None:
                if quantity.unit is not None:
                    self.error(source, quantity.unit.span, "a number of trials has no unit",
                               "spec.unit")
                    ok = False
                    continue
                count = self._integer(quantity, source, "a number of trials", minimum=0)
                if count is _INVALID:
                    ok = False
                elif trials is not None:
                    self.error(source, quantity.span, "trials given twice", "spec.repeated")
                    ok = False
                else:
                    trials = count
                    if trials_word is None:
                        self.warning(source, quantity.span,
                                     f"read as {count} trials; write '{count} trials' or a time "
                                     "such as '10 min'", "spec.tuning-unit")
            else:
                limit = self._quantity(quantity, source, "a tuning time", (Dimension.TIME,),
                                       positive=True, other_words=("trials",))
                if limit is _INVALID:
                    ok = False
                elif wall_time is not None:
                    self.error(source, quantity.span, "tuning time given twice", "spec.repeated")
                    ok = False
                else:
                    wall_time = limit
        return Tuning(trials, wall_time) if ok else _INVALID

    def _optimize_backend(self, item: ast.Field, source: SourceText):
        from edgec.backends import backend_names  # the registry: plugins included

        word = item.values[0]
        known = ("auto", *backend_names())
        if word.text not in known:
            self.error(source, word.span, f"unknown backend '{word.text}'"
                       f"{did_you_mean(word.text, known)}", "spec.unknown-backend",
                       (f"backends: {', '.join(known)}",))
            return _INVALID
        return word.text

    def _optimize_pipeline(self, item: ast.Field, source: SourceText):
        value = item.values[0]
        if isinstance(value, ast.Word):  # default
            return None
        if not self._check_pipeline(value, source):
            return _INVALID
        return value.value

    def _optimize_seed(self, item: ast.Field, source: SourceText):
        return self._integer(item.values[0], source, "a seed", minimum=0)

    def _optimize_search(self, item: ast.Field, source: SourceText):
        word = item.values[0]
        if word.text not in SEARCH_MODES:
            self.error(source, word.span, f"unknown search mode '{word.text}'"
                       f"{did_you_mean(word.text, SEARCH_MODES)}", "spec.unknown-search",
                       ("first: stop at the first configuration that holds every budget; "
                        "fastest: keep searching for the fastest one that does",))
            return _INVALID
        return word.text

    def _check_pipeline(self, text: ast.Text, source: SourceText) -> bool:
        """Check the pipeline as the pass manager will run it: its parser, and every pass
        constructed by the registry with its options, so an unknown pass or a bad option
        is an error here, at its place in the string, and not when compiling."""
        from edgec.passmgr.pipeline import PipelineSyntaxError, parse_pipeline
        from edgec.passmgr.registry import UNKNOWN_PASS, default_registry

        def span_at(offset: int, length: int = 1) -> ast.Span:
            # Map into the line only when the literal has no escapes to shift columns.
            if text.span.length == len(text.value) + 2 and 0 <= offset <= len(text.value):
                return ast.Span(text.span.line, text.span.column + 1 + offset, length)
            return text.span

        try:
            pipeline = parse_pipeline(text.value)
        except PipelineSyntaxError as error:
            offset = getattr(error, "offset", 0) or 0
            self.error(source, span_at(offset), f"pass pipeline: {error.message}",
                       "spec.pipeline")
            return False
        except Exception as error:  # noqa: BLE001 - a pipeline parser bug is not the user's
            self.error(source, text.span, "the pass pipeline parser failed on this text "
                       f"(a bug in edgec): {type(error).__name__}: {error}", "spec.pipeline")
            return False
        try:
            problems = default_registry().pipeline_problems(pipeline, text.value)
        except Exception as error:  # noqa: BLE001 - a broken plugin must be named, not crash
            self.error(source, text.span, f"cannot check the passes of this pipeline: "
                       f"{error}", "spec.pipeline")
            return False
        for problem in problems:
            where = problem.location
            span = (span_at(where.column - 1, where.length)
                    if where is not None and where.column is not None else text.span)
            # The spec's diagnostics carry the suggestion in the message.
            hints = [n for n in problem.notes if n.startswith("did you mean")]
            message = problem.message + "".join(f"; {h}" for h in hints)
            code = "spec.unknown-pass" if problem.code == UNKNOWN_PASS else "spec.pipeline"
            self.error(source, span, message, code,
                       tuple(n for n in problem.notes if n not in hints))
        return not problems

    # -- quantities ------------------------------------------------------------------

    def _quantity(self, literal: ast.QuantityLiteral, source: SourceText, what: str,
                  dimensions: tuple[Dimension, ...], positive: bool = False,
                  other_words: tuple[str, ...] = ()):
        if not math.isfinite(literal.number):
            self.error(source, literal.span, f"number too large: {literal.text}", "spec.range")
            return _INVALID
        unit = literal.unit.text if literal.unit else ""
        if unit and unit not in UNITS:
            guess = suggest_unit(unit, dimensions, other_words)
            hint = f"; did you mean '{guess}'?" if guess else ""
            self.error(source, literal.unit.span, f"unknown unit '{unit}'{hint}",
                       "spec.unknown-unit", (f"{what} needs {_describe(dimensions)}",))
            return _INVALID
        quantity = Quantity(literal.number, unit)
        if quantity.dimension not in dimensions:
            span = literal.unit.span if literal.unit else literal.span
            got = f"'{unit}' ({quantity.dimension.value})" if unit else "a plain number"
            self.error(source, span, f"{what} needs {_describe(dimensions)}, not {got}",
                       "spec.unit-mismatch" if unit else "spec.missing-unit")
            return _INVALID
        if positive and quantity.value <= 0:
            self.error(source, literal.span, f"{what} must be greater than zero",
                       "spec.range")
            return _INVALID
        return quantity

    def _integer(self, literal: ast.QuantityLiteral, source: SourceText, what: str,
                 minimum: int, maximum: int | None = None):
        if literal.unit is not None:
            self.error(source, literal.unit.span, f"{what} is a plain count, without a unit",
                       "spec.unit-mismatch")
            return _INVALID
        value = literal.number
        if not math.isfinite(value) or value != int(value) or value > 2 ** 63 - 1:
            self.error(source, literal.span, f"{what} must be a whole number, got "
                       f"{literal.text}", "spec.range")
            return _INVALID
        if value < minimum:
            self.error(source, literal.span, f"{what} must be at least {minimum}", "spec.range")
            return _INVALID
        if maximum is not None and value > maximum:
            self.error(source, literal.span, f"{what} must be at most {maximum}", "spec.range")
            return _INVALID
        return int(value)

    # -- targets ---------------------------------------------------------------------

    def _target_draft(self, statement: ast.TargetStatement, source: SourceText,
                      chain: tuple[str, ...]) -> dict | None:
        """Fields of a target statement, base target included, as ``{key: value}``."""
        draft: dict = {}
        if statement.name is not None:
            base = self._catalogue_target(statement.name, source, chain)
            if base is None:
                return None
            draft = dict(base)
        ok = True
        if statement.body is not None:
            for item in statement.body.fields:
                ok = self._target_field(item, source, draft) and ok
        return draft if ok else None

    def _catalogue_target(self, name: ast.Word, source: SourceText,
                          chain: tuple[str, ...]) -> dict | None:
        known = self.catalogue.names()
        if name.text in chain:
            self.error(source, name.span, "target description cycle: "
                       + " -> ".join(chain + (name.text,)), "spec.target-cycle")
            return None
        entry = self.catalogue.get(name.text)
        if entry is None:
            self.error(source, name.span, f"unknown target '{name.text}'"
                       f"{did_you_mean(name.text, known)}", "spec.unknown-target",
                       ("`edgec targets` lists them: " + ", ".join(known),))
            return None
        if name.text in self.catalogue.duplicates:
            self.error(source, name.span, f"target '{name.text}' is defined more than once: "
                       + "; ".join(self.catalogue.duplicates[name.text]),
                       "spec.duplicate-target")
            return None
        if name.text in self._targets:
            return self._targets[name.text]
        self._targets[name.text] = None  # while resolving: a cycle finds None
        try:
            text, path = entry.load()
        except (TargetLoadError, OSError, UnicodeDecodeError) as error:
            self.error(source, name.span, f"target '{name.text}' cannot be loaded: {error}",
                       "spec.target-plugin")
            return None
        result = _parse_cached(text, path)
        self.diagnostics.extend(result.diagnostics)
        target_source = SourceText(path, text)
        statements = [s for s in result.spec_file.statements
                      if isinstance(s, ast.TargetStatement)]
        if not result.ok:
            return None
        if len(statements) != 1 or len(result.spec_file.statements) != 1:
            self.error(source, name.span, f"target '{name.text}' ({entry.origin}) must hold "
                       "exactly one target statement and nothing else", "spec.target-plugin")
            return None
        draft = self._target_draft(statements[0], target_source, chain + (name.text,))
        if draft is not None and "name" not in draft:
            draft["name"] = (name.text, statements[0].span)
        if draft is not None and draft.get("name", (name.text,))[0] != name.text:
            declared = draft["name"]
            self.error(target_source, declared[1], f"this file describes target "
                       f"'{declared[0]}' but is registered as '{name.text}'", "spec.target-plugin")
            draft = None
        self._targets[name.text] = draft
        return draft

    def _target_field(self, item: ast.Field, source: SourceText, draft: dict) -> bool:
        """Check one target field and record it in ``draft`` as ``key: (value, span)``."""
        key = item.key
        value = item.values[0]
        if isinstance(value, ast.Word) and value.text == "auto" and key != "accelerator" \
                and key not in {"name", "float-abi", "peak"}:
            detected = host.detect(key)
            if detected is None:
                self.error(source, value.span, f"'{key}' cannot be detected on this machine; "
                           "give a value", "spec.undetectable")
                return False
            draft[key] = (detected, item.span)
            return True
        checked = self._target_value(item, source)
        if checked is _INVALID:
            return False
        if key == "peak":
            precision, quantity = checked
            draft[f"peak.{precision}"] = (quantity, item.span)
        else:
            draft[key] = (checked, item.span)
        return True

    def _target_value(self, item: ast.Field, source: SourceText):
        key = item.key
        value = item.values[0]
        if key in ("name", "float-abi", "arch", "int8-accumulation"):
            allowed = {"arch": ARCHITECTURES, "float-abi": FLOAT_ABIS,
                       "int8-accumulation": INT8_ACCUMULATIONS}.get(key)
            if allowed and value.text not in allowed:
                self.error(source, value.span, f"unknown {key} '{value.text}'"
                           f"{did_you_mean(value.text, allowed)}", f"spec.unknown-{key}",
                           (f"one of: {', '.join(allowed)}",))
                return _INVALID
            return value.text
        if key in ("summary", "triple", "cpu"):
            if key != "summary" and not value.value.strip():
                self.error(source, value.span, f"{key} is empty", "spec.range")
                return _INVALID
            return value.value
        if key == "features":
            if isinstance(value, ast.Word):  # none
                return ()
            for feature in value:
                if not re.fullmatch(r"[+-][A-Za-z0-9_.\-]+", feature.value):
                    self.error(source, feature.span, f"an LLVM feature is '+name' or '-name', "
                               f"not {feature.value!r}", "spec.feature")
                    return _INVALID
            return tuple(f.value for f in value)
        if key == "cores":
            return self._integer(value, source, "a core count", minimum=1)
        if key == "clock":
            return self._quantity(value, source, "a clock", (Dimension.FREQUENCY,), positive=True)
        if key == "memory":
            return self._quantity(value, source, "a memory size", (Dimension.SIZE,), positive=True)
        if key == "bandwidth":
            return self._quantity(value, source, "a bandwidth", (Dimension.BANDWIDTH,),
                                  positive=True)
        if key == "launch":
            quantity = self._quantity(value, source, "a launch cost", (Dimension.TIME,))
            if quantity is not _INVALID and quantity.value < 0:
                self.error(source, value.span, "a launch cost cannot be negative", "spec.range")
                return _INVALID
            return quantity
        if key == "peak":
            precision = value
            if precision.text not in PRECISIONS:
                self.error(source, precision.span, f"unknown precision '{precision.text}'"
                           f"{did_you_mean(precision.text, PRECISIONS)}",
                           "spec.unknown-precision")
                return _INVALID
            figure = item.values[1]
            if isinstance(figure, ast.Word):  # auto
                detected = dict(host.peak()).get(precision.text)
                if detected is None:
                    self.error(source, figure.span, f"peak {precision.text} cannot be detected "
                               "on this machine; give a value", "spec.undetectable")
                    return _INVALID
                return precision.text, detected
            quantity = self._quantity(figure, source, "a peak compute", (Dimension.COMPUTE,),
                                      positive=True)
            return _INVALID if quantity is _INVALID else (precision.text, quantity)
        if key == "fast-precisions":
            for word in value:
                if word.text not in PRECISIONS:
                    self.error(source, word.span, f"unknown precision '{word.text}'"
                               f"{did_you_mean(word.text, PRECISIONS)}",
                               "spec.unknown-precision")
                    return _INVALID
            return tuple(p for p in PRECISIONS if p in {w.text for w in value})
        if key == "accelerator":
            if value.text == "none":
                return None
            if value.text not in ACCELERATOR_KINDS:
                self.error(source, value.span, f"unknown accelerator '{value.text}'"
                           f"{did_you_mean(value.text, ACCELERATOR_KINDS + ('none',))}",
                           "spec.unknown-accelerator",
                           (f"one of: {', '.join(ACCELERATOR_KINDS)}, none",))
                return _INVALID
            arch, sm_count = None, None
            body = item.values[1] if len(item.values) > 1 else None
            for sub in body.fields if body else ():
                if sub.key == "arch":
                    arch = sub.values[0].text
                    if not re.fullmatch(r"sm_\d{2,3}[a-z]?", arch):
                        self.error(source, sub.values[0].span, f"a CUDA arch is written like "
                                   f"sm_87, not '{arch}'", "spec.cuda-arch")
                        return _INVALID
                else:
                    sm_count = self._integer(sub.values[0], source, "an SM count", minimum=1)
                    if sm_count is _INVALID:
                        return _INVALID
            return Accelerator(value.text, arch, sm_count)
        raise AssertionError(f"target field {key} has no check")  # pragma: no cover

    def _build_target(self, draft: dict, source: SourceText, span: ast.Span,
                      syntax_broken: bool) -> Target | None:
        def get(key, default=None):
            return draft[key][0] if key in draft else default

        missing = [key for key in ("arch", "cores") if key not in draft]
        if missing:
            if not syntax_broken:  # a broken line is the likelier cause; say that only
                self.error(source, span, "this target does not say its "
                           + " or ".join(missing), "spec.target-incomplete",
                           ("an inline target needs at least 'arch' and 'cores'",))
            return None
        arch = get("arch")
        peak = tuple((p, draft[f"peak.{p}"][0]) for p in PRECISIONS if f"peak.{p}" in draft)
        return Target(
            name=get("name", "custom"), arch=arch,
            triple=get("triple", host.TRIPLES.get(arch, f"{arch}-linux-gnu")),
            cpu=get("cpu", "generic"), features=get("features", ()),
            float_abi=get("float-abi", "hard" if arch == "armv7" else None),
            cores=get("cores"), clock=get("clock"), memory=get("memory"),
            bandwidth=get("bandwidth"), accelerator=get("accelerator"), peak=peak,
            fast_precisions=get("fast-precisions", ("fp32",)), summary=get("summary", ""),
            launch=get("launch"),
            int8_accumulation=get("int8-accumulation",
                                  default_int8_accumulation(arch, get("features", ()))))

    # -- the end: defaults, cross-field checks ----------------------------------------

    def _finish(self, state: _State) -> Spec | None:
        settings = state.settings

        def get(key, default=None):
            return settings[key].value if key in settings else default

        target = None
        if state.target is None:
            statement = ast.TargetStatement(ast.Word("host"), None, ast.Span(1, 1))
            source = SourceText(state.files[0] if state.files else "<spec>", "")
        else:
            statement, source = state.target
        draft = self._target_draft(statement, source, ())
        if draft is not None:
            target = self._build_target(draft, source, statement.span,
                                        source.path in self._syntax_errors_in)

        metric, metric_span = get("accuracy.metric", ("top1-agreement", None))
        tolerance = get("accuracy.tolerance")
        labels = get("accuracy.labels")
        if tolerance is None:
            tolerance = DEFAULT_TOLERANCES.get(metric)
            if tolerance is None:
                setting = settings["accuracy.metric"]
                self.error(setting.source, setting.span, f"metric '{metric}' comes from a "
                           "plugin and has no default tolerance; add 'tolerance ...'",
                           "spec.tolerance")
        else:
            setting = settings["accuracy.tolerance"]
            self._check_tolerance(metric, tolerance, setting)
        if metric == "accuracy" and labels is None and metric_span is not None:
            setting = settings["accuracy.metric"]
            self.error(setting.source, metric_span, "metric 'accuracy' compares with labels; "
                       "add 'labels \"...\"' to the accuracy block", "spec.labels")

        if self.has_errors or target is None:
            return None
        return Spec(
            target=target,
            budget=Budget(get("budget.latency"), get("budget.memory"), get("budget.size")),
            accuracy=Accuracy(metric, tolerance, get("accuracy.data"), labels),
            optimize=Optimize(
                # A GPU's fast path is fp16 (TensorRT, tensor cores): without a
                # 'precision' line, a CUDA target tries it after fp32.
                precisions=get("optimize.precision", ("fp32", "fp16")
                               if target.accelerator is not None
                               and target.accelerator.kind == "cuda" else ("fp32",)),
                per_layer_fallback=get("optimize.fallback", True),
                pruning=get("optimize.prune", Pruning()),
                tuning=get("optimize.tuning", Tuning()),
                backend=get("optimize.backend", "auto"),
                pipeline=get("optimize.pipeline"),
                seed=get("optimize.seed", 0),
                search=get("optimize.search", "first")),
            sources=tuple(state.files))

    def _check_tolerance(self, metric: str, tolerance: Quantity, setting: _Setting) -> None:
        def bad(message: str) -> None:
            self.error(setting.source, setting.span, message, "spec.tolerance")

        unit = tolerance.unit
        if metric in ("top1-agreement", "accuracy", "cosine-similarity"):
            if unit == "dB":
                bad(f"a {metric} tolerance is a drop in % (e.g. '1 %') or a fraction, not dB")
            elif not 0 <= tolerance.base <= 1:
                bad(f"a {metric} drop lies between 0 and {'100 %' if unit else '1'}, "
                    f"not {tolerance}")
        elif metric == "max-abs-error":
            if unit == "dB":
                bad("a max-abs-error tolerance is a plain number (absolute) or % (relative), "
                    "not dB")
        elif metric == "sqnr":
            if unit != "dB":
                bad(f"an SQNR tolerance is the lowest signal-to-noise ratio allowed, in dB "
                    f"(e.g. '30 dB'), not {tolerance}")


class _Invalid:
    def __repr__(self) -> str:
        return "<invalid>"


_INVALID: Any = _Invalid()


def _describe(dimensions: tuple[Dimension, ...]) -> str:
    return " or ".join(d.description for d in dimensions)


def _looks_like_a_spec(text: str, path: str) -> bool:
    """False when the file's very first statement does not parse: an included file that
    is not a spec at all (a password file, a binary), not a spec with a typo further on."""
    result = _parse_cached(text, path)
    errors = [d for d in result.diagnostics if d.is_error]
    if not errors or errors[0].code == "spec.too-large":
        return True
    stripped = re.sub(r"#[^\n]*", "", text)
    first = re.search(r"\S", stripped)
    if first is None:
        return True
    line = stripped.count("\n", 0, first.start()) + 1
    location = errors[0].location
    return location is None or (location.line or 0) > line


def _real(path: str) -> str:
    if not path or path.startswith("<"):
        return ""
    return os.path.realpath(path)

