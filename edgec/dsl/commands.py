"""``edgec check`` and ``edgec targets``: argument setup and the commands themselves.

Both print their own output and diagnostics and return the exit code; they never raise
for a user's mistake. Text diagnostics go to stderr; with ``--json`` a single JSON
object goes to stdout: ``{"spec": <resolved spec or null>, "diagnostics": [...]}`` for
check, ``{"targets": [...], "diagnostics": [...]}`` for targets.
"""

from __future__ import annotations

import argparse
import json
import sys

from edgec.diagnostics import Diagnostic, ExitCode, Location
from edgec.dsl import check_spec
from edgec.dsl.catalogue import TargetLoadError, target_catalogue
from edgec.dsl.parser import parse_text
from edgec.dsl import ast


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="the .edge spec file to check")
    parser.add_argument("--json", action="store_true",
                        help="print the resolved spec and diagnostics as one JSON object")


def run_check(args: argparse.Namespace) -> int:
    spec, diagnostics = check_spec(args.spec)
    if args.json:
        print(json.dumps({"spec": spec.to_dict() if spec else None,
                          "diagnostics": [d.to_json() for d in diagnostics]}, indent=2))
    else:
        for diagnostic in diagnostics:
            print(diagnostic.render(), file=sys.stderr)
        if spec is not None:
            sys.stdout.write(spec.to_text())
        else:
            errors = sum(d.is_error for d in diagnostics)
            print(f"{errors} error{'s' if errors != 1 else ''} in {args.spec}", file=sys.stderr)
    return int(ExitCode.OK if spec is not None else ExitCode.USAGE)


def add_targets_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print the targets as JSON objects")


def _summary(entry) -> tuple[str | None, Diagnostic | None]:
    """The target's one-line summary, read from its source without resolving it (so
    listing ``host`` does not probe the machine)."""
    try:
        text, path = entry.load()
    except (TargetLoadError, OSError, UnicodeDecodeError) as error:
        return None, Diagnostic.error(str(error), Location(obj=f"target '{entry.name}'"),
                                      code="spec.target-plugin")
    result = parse_text(text, path)
    if not result.ok:
        return None, result.diagnostics[0]
    for statement in result.spec_file.statements:
        if isinstance(statement, ast.TargetStatement) and statement.body is not None:
            for item in statement.body.fields:
                if item.key == "summary":
                    return item.values[0].value, None
    return "", None


def run_targets(args: argparse.Namespace) -> int:
    catalogue = target_catalogue()
    rows = []
    diagnostics: list[Diagnostic] = []
    for name in catalogue.names():
        entry = catalogue.get(name)
        summary, problem = _summary(entry)
        if problem is not None:
            diagnostics.append(problem)
        origins = catalogue.duplicates.get(name)
        if origins:
            diagnostics.append(Diagnostic.error(
                f"target '{name}' is defined more than once: " + "; ".join(origins),
                Location(obj=f"target '{name}'"), code="spec.duplicate-target"))
        rows.append({"name": name, "summary": summary, "origin": entry.origin,
                     "ok": problem is None and not origins})
    if args.json:
        print(json.dumps({"targets": rows,
                          "diagnostics": [d.to_json() for d in diagnostics]}, indent=2))
    else:
        width = max((len(row["name"]) for row in rows), default=0)
        for row in rows:
            origin = "" if row["origin"].startswith("built-in") else f"  [{row['origin']}]"
            summary = row["summary"] if row["summary"] is not None else "(broken, see below)"
            print(f"{row['name']:<{width}}  {summary}{origin}")
        for diagnostic in diagnostics:
            print(diagnostic.render(), file=sys.stderr)
    # A broken plugin is the plugin's problem: the listing itself still worked.
    return int(ExitCode.OK)
