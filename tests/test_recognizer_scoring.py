"""A recognizer's [N, T, C] output is scored per position and by sequence agreement in a
compile: every int8 candidate's score, and the figures beside it (per position, per
sample, sequence agreement after CTC decoding), are in the manifest — where the old
top-1 (one argmax over the whole flattened sequence) scored int8 candidates 0 %.

The model is a small stand-in for an exported CTC recognizer: features x [N, T, F] ->
MatMul, Relu, MatMul -> logits [N, T, C], class 0 the blank.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.metrics import ctc_collapse, evaluate, predictions

T, F, H, C = 16, 12, 24, 6


def recognizer(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.5, (F, H)).astype(np.float32)
    w2 = rng.normal(0, 0.5, (H, C)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]),
         helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["logits"])], "recognizer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", T, F])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", T, C])],
        initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


SPEC = """target host
budget {{
  latency < 1 s p50 at batch 1
}}
accuracy {{
  metric {metric}
  tolerance 50 %
  data "x.npz"
}}
optimize {{
  precision fp32, int8
  fallback {fallback}
  backend ort
  search fastest
}}
"""


@pytest.mark.parametrize("metric", ["top1-agreement", "sequence-agreement blank 0"])
def test_int8_candidates_are_scored_per_position_and_by_sequence(tmp_path, metric):
    model = recognizer()
    onnx.save(model, tmp_path / "rec.onnx")
    x = np.random.default_rng(1).normal(0, 1, (32, T, F)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    # The sequence metric also drives the per-layer fallback (the pass gets it, options
    # included, in its pipeline text).
    fallback = "per-layer" if metric.startswith("sequence") else "none"
    (tmp_path / "rec.edge").write_text(SPEC.format(metric=metric, fallback=fallback))
    result = subprocess.run(
        [sys.executable, "-m", "edgec", "compile", "rec.onnx", "--spec", "rec.edge", "-o",
         "out", "--json", "--cache-dir", "cache"], cwd=tmp_path, capture_output=True,
        text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["accuracy"]["metric"] == metric
    int8 = [c for c in manifest["candidates"] if c["label"].startswith("int8")
            and c["status"] != "skipped"]
    assert len(int8) == (3 if fallback == "per-layer" else 2), manifest["candidates"]
    # The figures are recomputed here from the fp32 model's outputs (onnxruntime) on the
    # samples scored (the odd-numbered half), against what the candidate could give:
    # they must be fractions, per position over 16 x 16 positions.
    reference = ort.InferenceSession(model.SerializeToString(),
                                     providers=["CPUExecutionProvider"]).run(None, {"x": x[1::2]})
    classes = predictions(reference[0])
    assert classes.shape == (16, T) and len(np.unique(classes)) > 2  # it discriminates
    for candidate in int8:
        figures = candidate["accuracy_figures"]
        assert (figures["samples"], figures["positions"]) == (16, T)
        assert 0 <= figures["per_sample"] <= figures["per_position"] <= 1
        if metric == "top1-agreement":
            assert candidate["accuracy"] == figures["per_position"]
        else:
            assert candidate["accuracy"] == figures["sequence_agreement"]
            assert figures["blank"] == 0
        # Per position, int8 agrees with fp32 far more often than one flattened argmax
        # per sample would credit it for being "right" on the whole sequence.
        assert figures["per_position"] > 0.5, candidate
    assert "caveat" not in manifest["accuracy"]


def test_sequence_agreement_is_what_ctc_decoding_reads():
    """The compile's figure, recomputed by hand on one pair of outputs."""
    model = recognizer()
    x = np.random.default_rng(2).normal(0, 1, (8, T, F)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = session.run(None, {"x": x})[0]
    noisy = ref + np.random.default_rng(3).normal(0, 0.3, ref.shape).astype(np.float32)
    result = evaluate("sequence-agreement", "1%", [ref], [noisy])
    by_hand = np.mean([ctc_collapse(a.argmax(-1)) == ctc_collapse(b.argmax(-1))
                       for a, b in zip(ref, noisy)])
    assert result.value == pytest.approx(by_hand)
    per_position = np.mean(ref.argmax(-1) == noisy.argmax(-1))
    assert result.figures["per_position"] == pytest.approx(per_position)
