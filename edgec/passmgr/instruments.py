"""Instruments: objects the pass manager calls around every pass (timing, printing, dumping).

An instrument implements any of ``run_before_pass(invocation, model)`` and
``run_after_pass(invocation, model, record)``; the pass manager calls them in order.
Verification is not an instrument: it decides whether the run fails, so the manager
does it itself.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TextIO

from edgec.ir.core import Model
from edgec.passmgr.pipeline import PassInvocation


@dataclass
class PassRecord:
    """One execution of one pass."""

    name: str
    text: str            # the invocation as pipeline text, options included
    modified: bool
    seconds: float
    stats: dict[str, int | float] = field(default_factory=dict)
    iteration: int | None = None   # inside a fixed-point group: which round

    def to_json(self) -> dict:
        return {"pass": self.name, "invocation": self.text, "modified": self.modified,
                "seconds": round(self.seconds, 6), "stats": self.stats,
                "iteration": self.iteration}


class Instrument:
    def run_before_pass(self, invocation: PassInvocation, model: Model) -> None:
        pass

    def run_after_pass(self, invocation: PassInvocation, model: Model, record: PassRecord) -> None:
        pass


class PrintAfter(Instrument):
    """``--print-after=NAME`` / ``--print-after-all``: the IR text after a pass."""

    def __init__(self, names: set[str] | None, stream: TextIO | None = None,
                 only_modified: bool = False):
        self.names = names  # None: every pass
        self.stream = stream
        self.only_modified = only_modified

    def run_after_pass(self, invocation, model, record):
        if self.names is not None and invocation.name not in self.names:
            return
        if self.only_modified and not record.modified:
            return
        from edgec.ir.printer import print_model
        stream = self.stream or sys.stderr
        stream.write(f"// ----- IR after {record.text} -----\n")
        stream.write(print_model(model))
        stream.write("\n")
        stream.flush()


class DumpEach(Instrument):
    """Write the IR after each pass to ``DIR/NNN_<pass>.txt``, numbered in run order."""

    def __init__(self, directory: str):
        self.directory = directory
        self.count = 0
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as e:
            self._refuse(e)

    def _refuse(self, e: OSError):
        from edgec.diagnostics import Diagnostic, Location, UsageError
        reason = ("it exists and is not a folder" if isinstance(e, FileExistsError)
                  else e.strerror)
        raise UsageError(Diagnostic.error(f"cannot write the IR dumps: {reason}",
                                          Location(path=self.directory))) from None

    def run_after_pass(self, invocation, model, record):
        from edgec.publish import write_if_changed
        from edgec.ir.printer import print_model
        self.count += 1
        path = os.path.join(self.directory, f"{self.count:03d}_{invocation.name}.txt")
        try:
            write_if_changed(path, print_model(model))
        except OSError as e:
            self._refuse(e)


def timing_table(records: list[PassRecord]) -> str:
    """``--time-passes``: wall time per pass name, largest first, like LLVM's report."""
    totals: dict[str, float] = defaultdict(float)
    runs: dict[str, int] = defaultdict(int)
    for r in records:
        totals[r.name] += r.seconds
        runs[r.name] += 1
    total = sum(totals.values()) or 1e-12
    lines = ["===-------------------------------------------------------------------------===",
             "                          ... Pass execution timing report ...",
             "===-------------------------------------------------------------------------===",
             f"  Total Execution Time: {total:.4f} seconds", "",
             "   ---Wall Time---   Runs  --- Name ---"]
    for name, secs in sorted(totals.items(), key=lambda kv: -kv[1]):
        lines.append(f"   {secs:8.4f} ({secs / total * 100:5.1f}%)  {runs[name]:4d}  {name}")
    lines.append(f"   {total:8.4f} (100.0%)        Total")
    return "\n".join(lines)


def stats_table(records: list[PassRecord]) -> str:
    """``--stats``: each counter, summed over the runs of its pass."""
    summed = aggregate_stats(records)
    lines = ["===-------------------------------------------------------------------------===",
             "                          ... Statistics Collected ...",
             "===-------------------------------------------------------------------------==="]
    for name, counters in summed.items():
        for key, value in counters.items():
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            lines.append(f"{shown:>12} {name} - {key}")
    return "\n".join(lines)


def aggregate_stats(records: list[PassRecord]) -> dict[str, dict[str, int | float]]:
    summed: dict[str, dict[str, int | float]] = {}
    for r in records:
        counters = summed.setdefault(r.name, {})
        for key, value in r.stats.items():
            counters[key] = counters.get(key, 0) + value
    return summed


def stats_json(records: list[PassRecord]) -> str:
    return json.dumps({"passes": [r.to_json() for r in records],
                       "totals": aggregate_stats(records)}, indent=2)
