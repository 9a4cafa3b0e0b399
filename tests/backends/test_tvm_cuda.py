"""TVM CUDA artifacts (issue 11): the manifest says what runtime the module needs, and
`edgec run` where that runtime lacks CUDA says so in one line (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgec.testing.required import import_or_missing

tvm = import_or_missing("tvm")

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "spec_examples" / "digits.onnx"
DATA = REPO / "spec_examples" / "data" / "digits.npz"

pytestmark = pytest.mark.skipif(tvm.runtime.enabled("cuda"),
                                reason="this TVM has CUDA: the refusal cannot be shown here")


def test_cuda_module_states_its_runtime_and_run_refuses_without_cuda(tmp_path):
    from edgec.backends.tvm import host_arch

    spec = tmp_path / "gpu.edge"
    spec.write_text(f"""target {{
  name gpu-here
  arch {host_arch()}
  cores 2
  accelerator cuda {{ arch sm_90 }}
  peak fp32 67 TFLOPS
}}
accuracy {{ data "{DATA}" }}
optimize {{ precision fp32; backend tvm }}
""")
    compiled = subprocess.run([sys.executable, "-m", "edgec", "compile", DIGITS, "--spec", spec,
                               "-o", "out", "--cache-dir", tmp_path / "cache", "-q"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=600)
    if compiled.returncode == 2 and "CUDA code generator" in compiled.stderr:
        pytest.skip(compiled.stderr.strip())
    assert compiled.returncode == 0, compiled.stderr
    details = json.loads((tmp_path / "out" / "manifest.json").read_text())["backend"]["details"]
    assert "USE_CUDA=ON" in details["requires"]
    run = subprocess.run([sys.executable, "-m", "edgec", "run", "out", "--inputs", DATA],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "built without CUDA" in lines[0], run.stderr
