"""The public Python API: what `import edgec` offers, typed, and what `edgec.compile`
returns and raises."""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import edgec
from edgec import artifact, compiler, diagnostics
from edgec.backends import base

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "spec_examples" / "digits.onnx"
DIGITS_DATA = REPO / "spec_examples" / "data" / "digits.npz"

SPEC = f"""target host
budget {{
  latency < {{latency}} p50
}}
accuracy {{
  metric top1-agreement
  tolerance 1 %
  data "{DIGITS_DATA}"
}}
optimize {{
  precision fp32
  backend ort
}}
"""


def _spec(tmp_path: Path, latency: str = "1000 ms") -> Path:
    path = tmp_path / "s.edge"
    path.write_text(SPEC.replace("{latency}", latency))
    return path


def test_everything_in_all_is_there_and_is_the_defining_modules_object():
    for name in edgec.__all__:
        assert getattr(edgec, name) is not None, name
    assert edgec.Artifact is artifact.Artifact
    assert edgec.CompileOptions is compiler.CompileOptions
    assert edgec.CompileResult is compiler.CompileResult
    assert edgec.BackendError is base.BackendError
    for name in ("EdgecError", "UsageError", "SpecError", "ModelError", "BudgetError"):
        assert getattr(edgec, name) is getattr(diagnostics, name)
        assert issubclass(getattr(edgec, name), edgec.EdgecError)
    assert issubclass(edgec.BackendError, edgec.EdgecError)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        edgec.Nope  # noqa: B018


def test_import_edgec_stays_light():
    """The lazy names load their modules when asked, not on `import edgec`."""
    code = ("import sys, edgec\n"
            "print(sorted(m for m in ('numpy', 'onnx', 'edgec.compiler', 'tvm') "
            "if m in sys.modules))\n"
            "edgec.CompileResult\n"
            "print('edgec.compiler' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120, check=True).stdout.splitlines()
    assert out == ["[]", "True"]


def test_compile_takes_each_compile_option_as_a_keyword():
    parameters = inspect.signature(edgec.compile).parameters
    assert list(parameters)[:3] == ["model", "spec", "out"]
    keywords = {name for name, p in parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert keywords == {f.name for f in dataclasses.fields(compiler.CompileOptions)}
    assert inspect.signature(edgec.compile).return_annotation == "CompileResult"
    with pytest.raises(TypeError, match="unexpected keyword argument 'cache'"):
        edgec.compile(DIGITS, "s.edge", "out", cache="x")


def test_compile_returns_the_result_with_diagnostics_and_the_cached_flag(tmp_path):
    spec, out, cache = _spec(tmp_path), tmp_path / "out", str(tmp_path / "cache")
    first = edgec.compile(DIGITS, spec, out=out, cache_dir=cache)
    assert isinstance(first, edgec.CompileResult)
    assert first.cached == "no" and first.budgets_held
    assert isinstance(first.diagnostics, list)
    assert all(isinstance(d, edgec.Diagnostic) for d in first.diagnostics)
    assert first.manifest == json.loads((out / "manifest.json").read_text())
    assert isinstance(first.artifact, edgec.Artifact)
    again = edgec.compile(DIGITS, spec, out=out, cache_dir=cache)
    assert again.cached == "output"

    # What the artifact offers, as when edgec.compile returned it: the same outputs as
    # onnxruntime on the original model (fp32 passes only: 1e-4 of the largest logit).
    x = np.load(DIGITS_DATA)["input"][:16]
    got = first.run({"input": x})["logits"]
    want = ort.InferenceSession(str(DIGITS), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert first.measurements["latency"]["where"] == "host"


def test_compile_raises_the_exported_error_types(tmp_path):
    bad = tmp_path / "bad.edge"
    bad.write_text("target host\noptimize { backend trt }\n")
    with pytest.raises(edgec.SpecError) as error:
        edgec.compile(DIGITS, bad, out=tmp_path / "out", cache_dir=str(tmp_path / "cache"))
    assert error.value.exit_code == 2
    assert "unknown backend 'trt'" in error.value.diagnostics[0].message

    impossible = _spec(tmp_path, "1 ns")
    with pytest.raises(edgec.BudgetError) as missed:
        edgec.compile(DIGITS, impossible, out=tmp_path / "out2", cache_dir=str(tmp_path / "c2"))
    assert missed.value.exit_code == 4
    assert not (tmp_path / "out2").exists()
