"""edgec: an ahead-of-time compiler from ONNX models to artifacts that hold a spec's
latency budget and accuracy tolerance on edge hardware.

    import edgec
    artifact = edgec.compile("model.onnx", "host.edge", out="build/model")
    outputs = edgec.load("build/model").run({"input": x})
"""

from __future__ import annotations

from edgec._version import __version__


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
