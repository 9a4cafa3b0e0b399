"""Issue 12, the input half: every file edgec reads is confined and bounded first, and
every user error in a model, spec, data or plugin is one line with its exit code."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgec.testing.models import mlp

REPO = Path(__file__).resolve().parents[2]


def edgec_cli(*args, cwd, timeout=120, env=None):
    full = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "edgec", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=full)


def one_line(result, code):
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if not ln.startswith("edgec: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def spec_file(path: Path, backend: str = "ort", precision: str = "fp32", body: str = "") -> Path:
    path.write_text(f"target host\n{body}optimize {{\n  precision {precision}\n"
                    f"  backend {backend}\n}}\n")
    return path


def external_model(folder: Path, name: str = "model.onnx") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save_model(mlp(), str(folder / name), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=f"{name}.data", size_threshold=0)
    return folder / name


def decoy_cwd(tmp_path: Path) -> Path:
    """A working folder holding a model.onnx.data of the wrong contents: a backend that
    resolves external data against the current directory reads this one."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    (cwd / "model.onnx.data").write_bytes(b"\x7f" * 40000)
    return cwd


# --------------------------------------------------------------------------- item 2


@pytest.mark.parametrize("backend,precision", [("ort", "fp32"), ("tvm", "fp32"),
                                               ("auto", "int8")])
def test_model_with_external_data_compiles_with_its_folder(tmp_path, backend, precision):
    model = external_model(tmp_path / "proj")
    spec = spec_file(tmp_path / "proj" / "s.edge", backend, precision)
    cwd = decoy_cwd(tmp_path)
    result = edgec_cli("compile", model, "--spec", spec, "-o", tmp_path / "out",
                       "--cache-dir", tmp_path / "cache", cwd=cwd, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "ALL BUDGETS HOLD" in result.stderr  # agreement with fp32: the real weights were read
    assert "100.00 % agreement" in result.stderr


# --------------------------------------------------------------------------- item 4


def _with_location(tmp_path: Path, location: str) -> Path:
    model = external_model(tmp_path / "proj")
    proto = onnx.load(str(model), load_external_data=False)
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    onnx.save(proto, str(model))
    return model


@pytest.mark.parametrize("location,says", [
    ("../secret.txt", "points outside the model's folder"),
    ("../../../../../../../../../dev/zero", "points outside the model's folder"),
    ("/etc/passwd", "points outside the model's folder"),
    ("missing.data", "does not exist"),
    (".", "is not a regular file"),
])
def test_external_data_location_outside_model_folder_is_refused_before_reading(
        tmp_path, location, says):
    (tmp_path / "secret.txt").write_text("secret\n")
    model = _with_location(tmp_path, location)
    spec = spec_file(tmp_path / "s.edge")
    depfile = tmp_path / "deps.d"
    result = edgec_cli("compile", model, "--spec", spec, "-o", tmp_path / "out",
                       "--cache-dir", tmp_path / "cache", "--depfile", depfile,
                       cwd=tmp_path, timeout=60)
    line = one_line(result, 3)
    assert says in line and "fc0.weight" in line
    assert not depfile.exists()  # refused before anything is listed (or hashed)
