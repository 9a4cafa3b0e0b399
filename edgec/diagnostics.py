"""Diagnostics as values: severity, location, message, notes.

Every user-facing problem (a spec typo, a broken model, a pass that failed) becomes a
`Diagnostic`. The CLI renders them as text (``file:line:col: error: ...`` with the
source line and a caret) or as JSON objects; library code raises `EdgecError`
carrying them together with the exit code DESIGN.md assigns.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Iterable, Sequence


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"
    REMARK = "remark"


@dataclass(frozen=True)
class Location:
    """Where a diagnostic points: a file position, an IR object, or both.

    ``line`` and ``column`` are 1-based. ``length`` is how many characters the caret
    underline covers. ``obj`` names an IR object ("node 'conv1' (Conv)") when the
    problem is in a model rather than a text file.
    """

    path: str | None = None
    line: int | None = None
    column: int | None = None
    length: int = 1
    obj: str | None = None

    def __str__(self) -> str:
        """``path:line:col`` (the IR object, if any, is shown with the message)."""
        if not self.path:
            return ""
        where = self.path
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return where


@dataclass(frozen=True)
class Diagnostic:
    severity: Severity
    message: str
    location: Location | None = None
    notes: tuple[str, ...] = ()
    # A stable machine-readable identifier (e.g. "spec.unknown-unit"); optional.
    code: str | None = None
    # The text of the line the location points into, for caret rendering.
    source_line: str | None = None

    @classmethod
    def error(cls, message: str, location: Location | None = None, notes: Iterable[str] = (),
              code: str | None = None, source_line: str | None = None) -> "Diagnostic":
        return cls(Severity.ERROR, message, location, tuple(notes), code, source_line)

    @classmethod
    def warning(cls, message: str, location: Location | None = None, notes: Iterable[str] = (),
                code: str | None = None, source_line: str | None = None) -> "Diagnostic":
        return cls(Severity.WARNING, message, location, tuple(notes), code, source_line)

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def render(self, *, caret: bool = True) -> str:
        """Text form: ``loc: severity: message``, the source line with a caret, notes."""
        message = self.message
        if self.location is not None and self.location.obj:
            message = f"{self.location.obj}: {message}"
        head = f"{self.severity.value}: {message}"
        if self.location is not None and str(self.location):
            head = f"{self.location}: {head}"
        lines = [head]
        if caret and self.source_line is not None and self.location is not None \
                and self.location.column is not None:
            text = self.source_line.rstrip("\n").expandtabs(1)
            lines.append(f"  {text}")
            pad = " " * (self.location.column - 1)
            lines.append(f"  {pad}^{'~' * max(0, self.location.length - 1)}")
        for note in self.notes:
            lines.append(f"note: {note}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        loc = self.location or Location()
        return {
            "severity": self.severity.value,
            "message": self.message,
            "file": loc.path,
            "line": loc.line,
            "column": loc.column,
            "object": loc.obj,
            "notes": list(self.notes),
            "code": self.code,
        }

    def __str__(self) -> str:
        return self.render(caret=False)


class ExitCode(enum.IntEnum):
    """Exit codes of every edgec command (DESIGN.md)."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    MODEL = 3
    BUDGET = 4


class EdgecError(Exception):
    """An error meant for the user: carries diagnostics and the exit code to use."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, diagnostics: Diagnostic | str | Sequence[Diagnostic],
                 exit_code: ExitCode | None = None):
        if isinstance(diagnostics, str):
            diagnostics = [Diagnostic.error(diagnostics)]
        elif isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics: list[Diagnostic] = list(diagnostics)
        if exit_code is not None:
            self.exit_code = exit_code
        super().__init__("\n".join(d.render(caret=False) for d in self.diagnostics))


class UsageError(EdgecError):
    """Bad command line or bad spec (exit 2)."""

    exit_code = ExitCode.USAGE


class SpecError(UsageError):
    """A spec file that does not parse or does not make sense (exit 2)."""


class ModelError(EdgecError):
    """An invalid model or an unsupported operator (exit 3)."""

    exit_code = ExitCode.MODEL


class BudgetError(EdgecError):
    """The spec's budget or tolerance cannot be met (exit 4)."""

    exit_code = ExitCode.BUDGET


def diagnostics_to_json(diagnostics: Iterable[Diagnostic]) -> str:
    return json.dumps([d.to_json() for d in diagnostics], indent=2)


@dataclass
class DiagnosticSink:
    """Collects diagnostics while a stage runs, so several errors can be reported."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def emit(self, diagnostic: Diagnostic) -> None:
        self.diagnostics.append(diagnostic)

    def error(self, message: str, location: Location | None = None, **kwargs) -> None:
        self.emit(Diagnostic.error(message, location, **kwargs))

    def warning(self, message: str, location: Location | None = None, **kwargs) -> None:
        self.emit(Diagnostic.warning(message, location, **kwargs))

    @property
    def has_errors(self) -> bool:
        return any(d.is_error for d in self.diagnostics)

    def raise_if_errors(self, error_type: type[EdgecError] = EdgecError) -> None:
        if self.has_errors:
            raise error_type(self.diagnostics)
