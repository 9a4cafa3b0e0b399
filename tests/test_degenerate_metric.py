"""A top-1 metric on samples where the fp32 model predicts one class for all of them
cannot tell candidates apart (a random ResNet-18 predicted class 262 for all 64
synthetic samples and reported "100 % agreement"): the compile warns, in its
diagnostics and in the report. Scores are shown in the metric's unit."""

import json
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgec.metrics import cannot_discriminate, format_value


def _constant_class_model():
    weight = numpy_helper.from_array(np.full((4, 3), 1e-3, np.float32), "w")
    bias = numpy_helper.from_array(np.array([0.0, 10.0, 0.0], np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["logits"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        initializer=[weight, bias])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_constant_predictions_are_flagged(tmp_path):
    onnx.save(_constant_class_model(), tmp_path / "m.onnx")
    (tmp_path / "s.edge").write_text(
        "target host\nbudget {\n  latency < 1 s p50 at batch 1\n}\n"
        "accuracy {\n  metric top1-agreement\n  tolerance 1 %\n}\n"
        "optimize {\n  precision fp32\n  backend ort\n}\n")
    result = subprocess.run([sys.executable, "-m", "edgec", "compile", "m.onnx", "--spec",
                             "s.edge", "-o", "out", "--json", "--cache-dir", "cache"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    warnings = [d["message"] for d in doc["diagnostics"] if d["severity"] == "warning"]
    assert any("predicts class 1 for all 32 samples scored, so top1-agreement cannot tell"
               in w for w in warnings), warnings
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert "cannot tell" in manifest["accuracy"]["caveat"]
    report = (tmp_path / "out" / "report.txt").read_text()
    assert "  warning: the fp32 model predicts class 1 for all 32 samples" in report
    assert "cannot tell" in (tmp_path / "out" / "report.html").read_text()


def test_varied_predictions_and_other_metrics_are_not_flagged():
    varied = [np.eye(3, dtype=np.float32)[[0, 1, 2, 1]]]
    assert cannot_discriminate("top1-agreement", varied) is None
    assert cannot_discriminate("sqnr", [np.ones((4, 3))]) is None
    assert cannot_discriminate("accuracy", [np.ones((4, 3))]) is not None


def test_scores_are_shown_in_the_metrics_unit():
    assert format_value("top1-agreement", 1) == "100.00 %"
    assert format_value("accuracy", 0.9972) == "99.72 %"
    assert format_value("sqnr", 37.731) == "37.7 dB"
    assert format_value("cosine-similarity", 0.99999812) == "0.999998"
    assert format_value("max-abs-error", 0.00123456) == "0.001235"
