"""edgec: an ahead-of-time compiler from ONNX models to artifacts that hold a spec's
latency budget and accuracy tolerance on edge hardware.

    import edgec
    artifact = edgec.compile("model.onnx", "host.edge", out="build/model")
    outputs = edgec.load("build/model").run({"input": x})
"""

from __future__ import annotations

from edgec._version import __version__


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


def compile(model, spec, out: str, **options):
    """Compile ``model`` (a path) for ``spec`` (a .edge path or a resolved Spec) into the
    folder ``out``; returns the `Artifact`. Keyword options are those of
    `edgec.compiler.CompileOptions` (data, backend, cache_dir, allow_over_budget,
    depfile, rpc, threads, progress). Raises `edgec.diagnostics.BudgetError` when a
    budget is missed and ``allow_over_budget`` is not set."""
    from edgec.compiler import CompileOptions, compile_model

    return compile_model(str(model), spec, str(out), CompileOptions(**options)).artifact


def load(path):
    """Open a compiled artifact folder: ``.manifest``, ``.run(inputs) -> outputs``."""
    from edgec.artifact import load as _load

    return _load(str(path))


def load_spec(path):
    """Parse and resolve a ``.edge`` spec file (raises SpecError with every error)."""
    from edgec.dsl import load_spec as _load_spec

    return _load_spec(path)


__all__ = ["__version__", "compile", "load", "load_spec"]
