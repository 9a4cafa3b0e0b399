"""A bad pass option is a usage error (exit 2) with a caret at the option, found before
any pass runs: in `edgec opt -p`, in a spec's pipeline under `edgec compile`, and by
`edgec check` of that spec."""

import subprocess
import sys
from pathlib import Path

MODEL = Path(__file__).resolve().parents[2] / "spec_examples" / "digits.onnx"
SPEC = 'target host\noptimize {\n  pipeline "fold-constants,cse{bogus=1}"\n}\n'
SPEC_ERROR = [
    "bad.edge:3:32: error: pass 'cse' has no option 'bogus'",
    '    pipeline "fold-constants,cse{bogus=1}"',
    "                                 ^",
    "note: 'cse' takes: no options",
]


def edgec(*args, cwd):
    return subprocess.run([sys.executable, "-m", "edgec", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_opt_bad_option_exits_2_with_a_caret_before_any_pass(tmp_path):
    result = edgec("opt", str(MODEL), "-p", "fold-constants,prune-channels{criterion=l3}",
                   "--time-passes", "-o", "out.onnx", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "<pipeline>:1:31: error: option 'criterion' of pass 'prune-channels': "
        "expected one of l1, l2, got 'l3'",
        "  fold-constants,prune-channels{criterion=l3}",
        "                                ^",
    ]
    assert result.stdout == "" and not (tmp_path / "out.onnx").exists()


def test_opt_checks_options_before_reading_the_model(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"not a model")
    result = edgec("opt", "m.onnx", "-p", "quantize-weights{bits=3}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr  # not 3: the model was never read
    assert "option 'bits' of pass 'quantize-weights': expected one of 8, 4, got '3'" \
        in result.stderr


def test_compile_with_a_bad_spec_pipeline_exits_2_at_the_spec(tmp_path):
    (tmp_path / "bad.edge").write_text(SPEC)
    result = edgec("compile", str(MODEL), "--spec", "bad.edge", "-o", "out",
                   "--cache-dir", "cache", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == SPEC_ERROR
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_check_validates_the_pipeline_through_the_registry(tmp_path):
    (tmp_path / "bad.edge").write_text(SPEC)
    result = edgec("check", "bad.edge", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [*SPEC_ERROR, "1 error in bad.edge"]


def test_passes_lists_the_values_a_literal_option_takes(tmp_path):
    result = edgec("passes", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "criterion: l1|l2 = l1" in result.stdout
    assert "bits: 8|4 = 8" in result.stdout
