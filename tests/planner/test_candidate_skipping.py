"""A candidate that cannot be chosen is not built (issue 15): under `search first`, once
"fp32 on ort" holds every budget, the untuned "fp32 on tvm" of the same group — 5-190x
slower than onnxruntime here — is listed as skipped with the reason instead of being
compiled and measured; a tuned TVM candidate whose cost-model estimate is already far
over a measured rival is skipped too."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest

from edgec.backends.base import BuildOptions
from edgec.dsl import check_text
from edgec.planner.evaluate import Attempt, cannot_win
from edgec.planner.search import Configuration, Evaluation
from edgec.testing import models

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "spec_examples" / "digits.onnx"


def _compile(model, spec_text, tmp_path):
    spec = tmp_path / "s.edge"
    spec.write_text(spec_text)
    result = subprocess.run([sys.executable, "-m", "edgec", "compile", str(model), "--spec",
                             str(spec), "-o", "out", "--json", "--cache-dir", "cache"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout)


def _statuses(doc):
    return {c["label"]: (c["status"], c.get("reason", "")) for c in doc["candidates"]}


def test_untuned_tvm_is_not_built_once_ort_holds(tmp_path):
    """The shipped README example: host.edge allows fp32 and int8 on either backend."""
    spec = (REPO / "spec_examples" / "host.edge").read_text().replace(
        '"data/digits.npz"', f'"{REPO / "spec_examples" / "data" / "digits.npz"}"')
    doc = _compile(DIGITS, spec, tmp_path)
    status = _statuses(doc)
    assert status["fp32 on ort"][0] == "chosen"
    assert status["fp32 on tvm"][0] == "skipped"
    assert "untuned TVM runs 5-190x slower than onnxruntime" in status["fp32 on tvm"][1]
    assert "fp32 on ort measured" in status["fp32 on tvm"][1]
    measurements = json.loads((tmp_path / "out" / "measurements.json").read_text())
    skipped = next(c for c in measurements["candidates"] if c["label"] == "fp32 on tvm")
    assert skipped["latency"] is None and skipped["seconds"] < 30
    assert "fp32 on tvm  skipped" in (tmp_path / "out" / "report.txt").read_text()


def test_resnet18_with_a_dynamic_batch_skips_untuned_tvm(tmp_path):
    """The case that spent 199 of 229 s building and measuring fp32 on tvm."""
    model = models.resnet18()
    for value in [*model.graph.input, *model.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = "N"
    onnx.save(model, tmp_path / "resnet18.onnx")
    doc = _compile(tmp_path / "resnet18.onnx",
                   "target host\nbudget {\n  latency < 2 s p50 at batch 1\n}\n"
                   "accuracy {\n  metric top1-agreement\n  tolerance 1 %\n}\n"
                   "optimize {\n  precision fp32, int8\n  backend auto\n}\n", tmp_path)
    status = _statuses(doc)
    assert status["fp32 on ort"][0] == "chosen"
    assert status["fp32 on tvm"][0] == "skipped"
    assert not any(s == "skipped" for label, (s, _) in status.items() if "ort" in label)


def _tried(label, backend, latency_s, held=True, precision="fp32"):
    ev = Evaluation(Configuration(label, precision, "", "", backend), latency_s=latency_s,
                    latency_where="host",
                    budgets=[{"name": "latency", "status": "held" if held else "missed"}])
    return Attempt(ev, "", latency=SimpleNamespace(), estimate=None)


def _ctx(trials):
    spec, diagnostics = check_text("target host\nbudget {\n  latency < 1 s p50 at batch 1\n}\n"
                                   "optimize {\n  search fastest\n}\n", "t.edge")
    assert spec is not None, diagnostics
    return SimpleNamespace(spec=spec, at_hand=True, build_options=BuildOptions(cache_dir="", tuning_trials=trials))


def test_a_tuned_tvm_candidate_estimated_far_slower_than_a_measured_one_is_skipped(monkeypatch):
    from edgec.planner import costmodel

    tvm = Configuration("fp32 on tvm", "fp32", "", "", "tvm")
    rivals = [_tried("fp32 on ort", "ort", 0.010),
              _tried("int8 on ort", "ort", 0.002, precision="int8")]
    monkeypatch.setattr(costmodel, "estimate", lambda *a, **k: SimpleNamespace(seconds=0.021))
    reason = cannot_win(tvm, None, _ctx(64), rivals)
    assert reason == ("not built: even tuned, estimated at 21 ms, over 10x the 2 ms "
                      "int8 on ort measured")
    monkeypatch.setattr(costmodel, "estimate", lambda *a, **k: SimpleNamespace(seconds=0.019))
    assert cannot_win(tvm, None, _ctx(64), rivals) is None
    # Nothing measured yet, a rival that neither holds nor shares the group, or an
    # onnxruntime candidate: built.
    assert cannot_win(tvm, None, _ctx(0), []) is None
    assert cannot_win(
        tvm, None, _ctx(0), [_tried("int8 on ort", "ort", 0.001, held=False,
                                    precision="int8")]) is None
    assert cannot_win(Configuration("x on ort", "fp32", "", "", "ort"), None,
                      _ctx(0), rivals) is None


def test_progress_shows_each_plan_step_and_why_the_plan_ended(monkeypatch):
    """`plan 0/5` then `plan 5/5: done` with nothing between: another stage's line (the
    measurement just before) no longer hides the next plan step, and the last line says
    how many were built, skipped and not needed."""
    import io

    from edgec import progress as progress_module
    from edgec.progress import ProgressPrinter

    # plan 0 at 0 s, the measurement at 0.2 s, plan 1 at 0.6 s: 0.4 s after the
    # measurement line, which used to hide it.
    clock = iter([0.0, 0.2, 0.6])
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    stream = io.StringIO()
    progress = ProgressPrinter(stream)
    progress("plan", 0, 5, "fp32 on ort")
    progress("measure", 0, None, "measuring fp32 on ort")
    progress("plan", 1, 5, "fp32 on tvm")
    assert stream.getvalue().splitlines() == [
        "edgec: plan 0/5: fp32 on ort", "edgec: measure: measuring fp32 on ort",
        "edgec: plan 1/5: fp32 on tvm"]


def test_compile_summary_shows_scores_in_the_metrics_unit_and_the_plans_end(tmp_path):
    spec = tmp_path / "s.edge"
    spec.write_text((REPO / "spec_examples" / "host.edge").read_text().replace(
        '"data/digits.npz"', f'"{REPO / "spec_examples" / "data" / "digits.npz"}"'))
    result = subprocess.run([sys.executable, "-m", "edgec", "compile", str(DIGITS), "--spec",
                             str(spec), "-o", "out", "--cache-dir", "cache"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    line = next(l for l in result.stderr.splitlines() if l.startswith("  fp32 on ort "))
    assert "100.00 %" in line and "acc 1" not in line
    assert "edgec: plan 6/6: done: 1 built, 1 skipped, 4 not needed (search first: an " \
           "earlier one holds)" in result.stderr
