"""The largest modules and functions of edgec's code, in lines, to see where a split by
concern is due: ``python tools/largest.py [-n 5] [folders...]`` (edgec/, passes/ and
edgec_runtime/ by default, relative to the repository root).

A function's lines run from its ``def`` (decorators aside) to its last line, docstring
and nested functions included; a method is named ``Class.method``, a nested function
``outer.<locals>.inner``.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("edgec", "passes", "edgec_runtime")


def modules(folders: list[Path]) -> list[Path]:
    return sorted(p for folder in folders for p in folder.rglob("*.py")
                  if "__pycache__" not in p.parts)


def functions(path: Path) -> list[tuple[int, str, int]]:
    """(lines, qualified name, first line) of every function in the module at ``path``."""
    out: list[tuple[int, str, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                out.append((child.end_lineno - child.lineno + 1, name, child.lineno))
                visit(child, name + ".<locals>.")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), "")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", default=list(FOLDERS))
    parser.add_argument("-n", type=int, default=5, help="how many of each (default 5)")
    args = parser.parse_args(argv)
    folders = [Path(f) if Path(f).is_absolute() else ROOT / f for f in args.folders]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        print(f"error: no such folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    paths = modules(folders)
    sizes = sorted(((len(p.read_text(encoding="utf-8").splitlines()), p) for p in paths),
                   key=lambda item: (-item[0], str(item[1])))
    print(f"largest modules (lines), of {len(paths)}:")
    for lines, path in sizes[:args.n]:
        print(f"  {lines:6d}  {path.relative_to(ROOT)}")
    found = sorted(((lines, f"{p.relative_to(ROOT)}:{first} {name}")
                    for p in paths for lines, name, first in functions(p)),
                   key=lambda item: (-item[0], item[1]))
    print(f"largest functions (lines), of {len(found)}:")
    for lines, where in found[:args.n]:
        print(f"  {lines:6d}  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
