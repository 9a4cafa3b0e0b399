"""Small real artifacts for tests and campaigns: the digits classifier compiled for this
host with the ort or the tvm backend (seconds each), copied per test so that a test may
damage its copy."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "spec_examples" / "digits.onnx"
DIGITS_DATA = REPO / "spec_examples" / "data" / "digits.npz"

SPEC = """target host
budget {{
  latency < 1000 ms p50 at batch {batch}
}}
accuracy {{
  metric top1-agreement
  tolerance 5 %
  data "{data}"
}}
optimize {{
  precision fp32
  backend {backend}
}}
"""


def build_digits(out: str | os.PathLike, backend: str = "ort", batch: int = 1) -> Path:
    """Compile the digits model for this host into ``out`` (an artifact folder)."""
    from edgec.compiler import CompileOptions, compile_model

    out = Path(out)
    spec = out.parent / f".{out.name}.edge"
    spec.write_text(SPEC.format(backend=backend, data=DIGITS_DATA, batch=batch))
    compile_model(str(DIGITS), str(spec), str(out),
                  CompileOptions(cache_dir=str(out.parent / ".edgec-cache")))
    return out


def one_line_exit_2(capsys, argv, main=None) -> str:
    """Run a CLI ``main`` in-process (edgec's by default) and check it failed as a user
    error should: exit 2, exactly one ``error:`` line, no traceback, no "internal error".
    Returns standard error."""
    if main is None:
        from edgec.cli import main
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "internal error" not in err and "Traceback" not in err, err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1, err
    return err


def copy_artifact(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    shutil.copytree(src, dst)
    return Path(dst)


try:  # pytest fixtures, for test modules to import (no conftest needed)
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

if pytest is not None:
    @pytest.fixture(scope="session")
    def built(tmp_path_factory):
        """``built(backend)``: the digits artifact for this host, built once a session."""
        cache = {}

        def get(backend):
            if backend not in cache:
                if backend == "tvm":
                    pytest.importorskip("tvm_ffi")
                cache[backend] = build_digits(tmp_path_factory.mktemp(backend) / "art", backend)
            return cache[backend]
        return get

    @pytest.fixture
    def ort_artifact(built, tmp_path):
        """A copy of the ort digits artifact that the test may damage."""
        return copy_artifact(built("ort"), tmp_path / "ort_art")

    @pytest.fixture
    def tvm_artifact(built, tmp_path):
        """A copy of the tvm digits artifact that the test may damage."""
        return copy_artifact(built("tvm"), tmp_path / "tvm_art")
