"""edgec: an ahead-of-time compiler from ONNX models to artifacts that hold a spec's
latency budget and accuracy tolerance on edge hardware.

    import edgec
    result = edgec.compile("model.onnx", "host.edge", out="build/model")
    result.diagnostics, result.cached, result.budgets_held
    outputs = edgec.load("build/model").run({"input": x})

Errors are `EdgecError`s carrying diagnostics and an exit code: `UsageError` (and
`SpecError`), `ModelError`, `BudgetError`, `BackendError`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from edgec._version import __version__
from edgec.diagnostics import (BudgetError, Diagnostic, EdgecError, ModelError, SpecError,
                               UsageError)

if TYPE_CHECKING:
    from edgec.artifact import Artifact
    from edgec.backends.base import BackendError, RpcConfig
    from edgec.compiler import CompileOptions, CompileResult
    from edgec.dsl.spec import Spec
    from edgec.progress import Progress


def _map_checkout_packages() -> None:
    """In a source checkout, ``passes/`` and ``targets/`` sit beside ``edgec/`` and an
    install maps them to ``edgec.passes`` / ``edgec.targets``. When this ``edgec`` is the
    checkout's own (run from the repository root, or an editable install), make those
    two importable from the same checkout, so it never mixes in another copy's passes."""
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if (os.path.isfile(os.path.join(root, "pyproject.toml"))
            and os.path.isfile(os.path.join(root, "passes", "__init__.py"))
            and os.path.isfile(os.path.join(root, "targets", "__init__.py"))
            and root not in __path__):
        __path__.append(root)


_map_checkout_packages()


def compile(model: str | os.PathLike, spec: str | os.PathLike | Spec,
            out: str | os.PathLike, *, data: str | None = None, backend: str | None = None,
            cache_dir: str | None = None, allow_over_budget: bool = False,
            depfile: str | None = None, rpc: RpcConfig | None = None,
            threads: int | None = None, progress: Progress | None = None) -> CompileResult:
    """Compile ``model`` (a path) for ``spec`` (a .edge path or a resolved `Spec`) into the
    folder ``out``. The keywords are `CompileOptions`' fields: ``data`` overrides the
    spec's data, ``backend`` its backend (``auto`` or a name in
    `edgec.backends.backend_names`), ``cache_dir`` holds build and tuning caches.

    Returns the `CompileResult`: ``diagnostics``, ``cached``, ``manifest``, and the
    published ``artifact`` (its ``run`` and ``measurements`` are the result's too).
    Raises `BudgetError` when a budget is missed and ``allow_over_budget`` is not set,
    and the other `EdgecError`s for bad input."""
    from edgec.compiler import CompileOptions, compile_model
    from edgec.progress import no_progress

    options = CompileOptions(data=data, backend=backend, cache_dir=cache_dir,
                             allow_over_budget=allow_over_budget, depfile=depfile, rpc=rpc,
                             threads=threads, progress=progress or no_progress)
    return compile_model(str(model), spec, str(out), options)


def load(path: str | os.PathLike) -> Artifact:
    """Open a compiled artifact folder: ``.manifest``, ``.run(inputs) -> outputs``."""
    from edgec.artifact import load as _load

    return _load(str(path))


def load_spec(path: str | os.PathLike) -> Spec:
    """Parse and resolve a ``.edge`` spec file (raises SpecError with every error)."""
    from edgec.dsl import load_spec as _load_spec

    return _load_spec(path)


# Imported when first asked for: `import edgec` stays light (no numpy, onnx or TVM).
_LAZY = {"Artifact": "edgec.artifact", "BackendError": "edgec.backends.base",
         "CompileOptions": "edgec.compiler", "CompileResult": "edgec.compiler",
         "Spec": "edgec.dsl.spec", "Target": "edgec.dsl.spec"}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgec' has no attribute '{name}'")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["Artifact", "BackendError", "BudgetError", "CompileOptions", "CompileResult",
           "Diagnostic", "EdgecError", "ModelError", "Spec", "SpecError", "Target", "UsageError",
           "__version__", "compile", "load", "load_spec"]
