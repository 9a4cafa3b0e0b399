"""The spec language (``.edge`` files): parse, resolve, check.

``load_spec(path)`` is what the rest of edgec calls; ``check_spec`` / ``check_text``
return the diagnostics (warnings included) instead of raising.
"""

from __future__ import annotations

import os

from edgec.diagnostics import Diagnostic, SpecError
from edgec.dsl.semantic import Resolver
from edgec.dsl.spec import (Accelerator, Accuracy, Budget, Latency, Optimize, Pruning, Spec,
                            Target, Tuning)
from edgec.dsl.units import Quantity


def check_spec(path: str | os.PathLike) -> tuple[Spec | None, list[Diagnostic]]:
    """Resolve a spec file; the Spec is None when any diagnostic is an error."""
    resolver = Resolver()
    spec = resolver.resolve_file(path)
    return spec, resolver.diagnostics


def check_text(text: str, path: str = "<spec>") -> tuple[Spec | None, list[Diagnostic]]:
    """As `check_spec`, for text; relative paths in it are taken from ``path``'s
    directory (the working directory when ``path`` is not a file name)."""
    resolver = Resolver()
    spec = resolver.resolve_text(text, path)
    return spec, resolver.diagnostics


def load_spec(path: str | os.PathLike) -> Spec:
    """The resolved spec of a ``.edge`` file; raises `SpecError` (exit 2) with every
    error found. Warnings are dropped: use `check_spec` to see them."""
    spec, diagnostics = check_spec(path)
    if spec is None:
        raise SpecError([d for d in diagnostics if d.is_error] or diagnostics)
    return spec


__all__ = ["Accelerator", "Accuracy", "Budget", "Latency", "Optimize", "Pruning", "Quantity",
           "Spec", "Target", "Tuning", "check_spec", "check_text", "load_spec"]
