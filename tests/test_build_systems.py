"""The Makefile and the CMake function in examples/build-systems rebuild exactly when an
input changes — the model, the spec, or a spec it includes (through edgec's depfile) —
and not otherwise."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "build-systems"
EDGEC = f"{sys.executable} -m edgec"


@pytest.fixture
def project(tmp_path):
    shutil.copy(REPO / "spec_examples" / "digits.onnx", tmp_path / "model.onnx")
    shutil.copy(REPO / "spec_examples" / "data" / "digits.npz", tmp_path / "samples.npz")
    (tmp_path / "base.edge").write_text(
        'accuracy {\n  metric top1-agreement\n  tolerance 1 %\n  data "samples.npz"\n}\n')
    (tmp_path / "host.edge").write_text(
        'include "base.edge"\ntarget host\nbudget {\n  latency < 50 ms p50 at batch 1\n}\n'
        'optimize {\n  backend ort\n}\n')
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new))


def _make(project, *args):
    return subprocess.run(["make", "-f", str(EXAMPLES / "Makefile"), f"EDGEC={EDGEC}",
                           "MODEL=model.onnx", "SPEC=host.edge",
                           "EDGEC_CACHE_DIR=cache", *args], cwd=project, capture_output=True,
                          text=True, timeout=300, env=_env(project))


def test_makefile_defaults_build_the_shipped_example(tmp_path):
    """A plain `make` in examples/build-systems (only the edgec command and the output
    folder given, so that nothing is written into the checkout) compiles the shipped
    example: spec_examples/digits.onnx for spec_examples/host.edge."""
    out = tmp_path / "digits"
    result = subprocess.run(["make", f"EDGEC={EDGEC}", f"OUT={out}"], cwd=EXAMPLES,
                            capture_output=True, text=True, timeout=600, env=_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / "manifest.json").exists()
    assert "digits.onnx" in (tmp_path / "digits.d").read_text()


def _env(project):
    import os
    return dict(os.environ, EDGEC_CACHE_DIR=str(project / "cache"))


def _up_to_date(project) -> bool:
    return _make(project, "-q").returncode == 0


def test_makefile_rebuilds_exactly_when_an_input_changes(project):
    first = _make(project)
    assert first.returncode == 0, first.stderr
    manifest = project / "build" / "digits" / "manifest.json"
    assert manifest.exists()
    assert _up_to_date(project)
    assert "Nothing to be done" in _make(project).stdout

    key = manifest.read_text()
    _edit(project / "base.edge", "tolerance 1 %", "tolerance 2 %")   # an included spec
    assert not _up_to_date(project)
    assert _make(project).returncode == 0
    assert manifest.read_text() != key and _up_to_date(project)

    key = manifest.read_text()
    _edit(project / "host.edge", "50 ms", "40 ms")                    # the spec itself
    assert not _up_to_date(project)
    assert _make(project).returncode == 0
    assert manifest.read_text() != key and _up_to_date(project)

    key = manifest.read_text()
    import onnx
    model = onnx.load(project / "model.onnx")
    model.doc_string = "retrained"
    onnx.save(model, project / "model.onnx")                          # the model
    assert not _up_to_date(project)
    assert _make(project).returncode == 0
    assert manifest.read_text() != key and _up_to_date(project)


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_cmake_function_rebuilds_exactly_when_an_input_changes(project):
    shutil.copytree(EXAMPLES / "cmake", project / "src")
    for name in ("model.onnx", "host.edge", "base.edge", "samples.npz"):
        shutil.move(project / name, project / "src" / name)
    build = project / "build"
    configure = subprocess.run(["cmake", "-S", str(project / "src"), "-B", str(build),
                                f"-DEDGEC_COMMAND={EDGEC}"], capture_output=True, text=True,
                               timeout=120, env=_env(project))
    assert configure.returncode == 0, configure.stdout + configure.stderr

    def build_and_report() -> bool:
        result = subprocess.run(["cmake", "--build", str(build)], capture_output=True,
                                text=True, timeout=300, env=_env(project))
        assert result.returncode == 0, result.stdout + result.stderr
        return "edgec: compiling" in result.stdout

    assert build_and_report()
    manifest = build / "digits" / "manifest.json"
    assert manifest.exists()
    assert not build_and_report()
    _edit(project / "src" / "base.edge", "tolerance 1 %", "tolerance 2 %")
    assert build_and_report()
    assert not build_and_report()
    _edit(project / "src" / "host.edge", "50 ms", "40 ms")
    assert build_and_report()
    assert not build_and_report()
