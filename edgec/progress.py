"""Progress: the one callback type long stages report through (`Progress`), and its
terminal form: a redrawn bar on a TTY, plain lines when piped, nothing when quiet."""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO


class Progress(Protocol):
    """``progress(stage, done, total, message)``: ``done`` of ``total`` steps of ``stage``
    (total None when unknown). Backends call it while tuning or building, passes while
    calibrating; the CLI draws a bar on a terminal and lines otherwise."""

    def __call__(self, stage: str, done: int, total: int | None, message: str) -> None: ...


def no_progress(stage: str, done: int, total: int | None, message: str) -> None:
    """A `Progress` that reports nothing."""


class ProgressPrinter:
    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False):
        self._stream = stream
        self.quiet = quiet
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_line: dict[str, float] = {}   # per stage: another stage's line never hides a step
        self._open_bar = False

    @property
    def stream(self) -> TextIO:
        # sys.stderr as it is now: while a backend's output goes to a log file
        # (edgec.backends.logs), sys.stderr is the one that still reaches the terminal.
        return self._stream or sys.stderr

    def __call__(self, stage: str, done: int, total: int | None, message: str) -> None:
        if self.quiet:
            return
        if self.tty and total:
            width = 30
            filled = int(width * done / total)
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r{stage:>8} [{bar}] {done}/{total} {message[:40]:<40}")
            self._open_bar = done < total
            if not self._open_bar:
                self.stream.write("\n")
            self.stream.flush()
            return
        if self._open_bar:
            self.stream.write("\n")
            self._open_bar = False
        # Piped: one line per event, but not more than a few per second.
        now = time.monotonic()
        if total and done not in (0, total) and now - self._last_line.get(stage, 0.0) < 0.5:
            return
        self._last_line[stage] = now
        count = f" {done}/{total}" if total else ""
        self.stream.write(f"edgec: {stage}{count}: {message}\n")
        self.stream.flush()


class PhaseClock:
    """A progress callback that passes every event on and adds the wall time between
    events to the stage of the earlier one: compile time per phase (calibrate,
    sensitivity, build, measure, ...), stages renamed by ``names``. Time before the
    first event is ``first``'s."""

    def __init__(self, progress, first: str = "load", names: dict[str, str] | None = None):
        self._progress = progress
        self._names = dict(names or {})
        self._stage = first
        self._since = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def __call__(self, stage: str, done: int, total: int | None, message: str) -> None:
        self._tick(stage)
        self._progress(stage, done, total, message)

    def _tick(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[self._stage] = self.seconds.get(self._stage, 0.0) + now - self._since
        self._stage, self._since = self._names.get(stage, stage), now

    def finish(self) -> dict[str, float]:
        self._tick(self._stage)
        return {k: round(v, 3) for k, v in self.seconds.items()}
