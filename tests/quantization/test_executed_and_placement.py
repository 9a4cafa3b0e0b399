"""What onnxruntime runs in int8 (probed one node at a time, cached per onnxruntime
version; profiled per node) and the contiguous placement built on it: every node with
an int8 kernel inside an int8 region, fp32 islands only where there is none, and
numerics against onnxruntime on the model before quantization (SQNR >= 30 dB)."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.frontend import export_model, import_model
from edgec.metrics import evaluate
from edgec.passes.infer_shapes import InferShapes
from edgec.passmgr.base import PassContext
from edgec.quantization.executed import Int8Kernels, profile
from edgec.quantization.observe import run
from edgec.quantization.placement import contiguous_nodes
from edgec.quantization.qdq import QuantConfig, quantize_static


def detector_like(seed: int = 0) -> onnx.ModelProto:
    """A MobileNetV3/FPN-style block: Conv + HardSwish, depthwise Conv, a squeeze-excite
    gate (GlobalAveragePool, Conv, HardSigmoid, Mul), nearest and linear Resize, a
    ConvTranspose, Concat, MaxPool and a Sigmoid head."""
    rng = np.random.default_rng(seed)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32), name)

    def b(name, n):
        return numpy_helper.from_array((0.1 * rng.standard_normal(n)).astype(np.float32), name)

    inits = [w("w0", 16, 3, 3, 3), b("b0", 16), w("w1", 16, 1, 3, 3), b("b1", 16),
             w("wse", 16, 16, 1, 1), b("bse", 16), w("w2", 24, 16, 1, 1), b("b2", 24),
             w("w3", 24, 24, 3, 3), b("b3", 24), w("wt", 24, 8, 2, 2),
             w("w4", 16, 56, 3, 3), b("b4", 16), w("w5", 1, 16, 1, 1), b("b5", 1),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "up2")]
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1], strides=[2, 2], name="stem"),
        helper.make_node("HardSwish", ["c0"], ["a0"], name="stem_act"),
        helper.make_node("Conv", ["a0", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], group=16, name="dw"),
        helper.make_node("Relu", ["c1"], ["a1"], name="dw_relu"),
        helper.make_node("GlobalAveragePool", ["a1"], ["g"], name="se_pool"),
        helper.make_node("Conv", ["g", "wse", "bse"], ["s"], name="se_conv"),
        helper.make_node("HardSigmoid", ["s"], ["sg"], alpha=1 / 6, name="se_gate"),
        helper.make_node("Mul", ["a1", "sg"], ["se"], name="se_mul"),
        helper.make_node("Conv", ["se", "w2", "b2"], ["c2"], name="project"),
        helper.make_node("MaxPool", ["c2"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("Conv", ["p", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1], name="deep"),
        helper.make_node("Relu", ["c3"], ["a3"], name="deep_relu"),
        helper.make_node("Resize", ["a3", "", "up2"], ["up_nearest"], mode="nearest", name="up_nearest"),
        helper.make_node("Resize", ["a3", "", "up2"], ["up_linear"], mode="linear", name="up_linear"),
        helper.make_node("ConvTranspose", ["a3", "wt"], ["t"], strides=[2, 2], name="deconv"),
        helper.make_node("Concat", ["up_nearest", "up_linear", "t"], ["cat"], axis=1, name="fuse_cat"),
        helper.make_node("Conv", ["cat", "w4", "b4"], ["c4"], pads=[1, 1, 1, 1], name="head"),
        helper.make_node("Relu", ["c4"], ["a4"], name="head_relu"),
        helper.make_node("Conv", ["a4", "w5", "b5"], ["c5"], name="prob_conv"),
        helper.make_node("Sigmoid", ["c5"], ["prob"], name="prob"),
    ]
    graph = helper.make_graph(nodes, "detector_like",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 64, 64])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 1, 16, 16])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


CAL = {"x": np.random.default_rng(1).uniform(0, 1, (16, 3, 64, 64)).astype(np.float32)}
EVAL = {"x": np.random.default_rng(2).uniform(0, 1, (16, 3, 64, 64)).astype(np.float32)}


def _model():
    model = import_model(detector_like())
    InferShapes().run(model, PassContext())
    return model


def _node(model, name):
    return next(n for n in model.graph if n.name == name)


def test_probe_asks_onnxruntime_and_caches_per_version(tmp_path):
    cache = tmp_path / "kernels.json"
    kernels = Int8Kernels(str(cache))
    model = _model()
    # What onnxruntime 1.3x's CPU EP fuses (QLinearConv, uint8 MaxPool/Resize,
    # QLinearConcat, QLinearSigmoid, QLinearGlobalAveragePool) and what it does not
    # (linear Resize; a Relu on its own, which edgec folds into its producer instead).
    expected = {"stem": True, "dw": True, "pool": True, "up_nearest": True, "fuse_cat": True,
                "prob": True, "se_pool": True, "se_mul": True,
                "up_linear": False, "dw_relu": False}
    assert {n: kernels.runs_int8(_node(model, n)) for n in expected} == expected
    saved = json.loads(cache.read_text())
    assert saved["onnxruntime"] == ort.__version__ and len(saved["kernels"]) == kernels.probed
    # A second instance answers from the file without probing.
    (tmp_path / "kernels.json.copy").write_text(cache.read_text())
    again = Int8Kernels(str(cache) + ".copy")
    assert again.runs_int8(_node(model, "up_linear")) is False and again.probed == 0


def test_contiguous_placement_leaves_fp32_only_where_onnxruntime_has_no_int8_kernel():
    model = _model()
    placed = {n.name for n in contiguous_nodes(model)}
    # Everything with an int8 kernel that touches a Conv's region ...
    assert {"stem", "dw", "se_pool", "se_conv", "se_mul", "project", "pool", "deep", "up_nearest",
            "fuse_cat", "head", "prob_conv", "prob"} <= placed
    # ... and nothing onnxruntime would run in fp32 between a DQ and a Q.
    assert not placed & {"up_linear", "deconv", "stem_act", "se_gate"}

    proto = detector_like()
    quantize_static(model, CAL, QuantConfig(placement="contiguous"))
    quantized = export_model(model)
    report = profile(quantized, {"x": EVAL["x"][:1]}, runs=1)
    fp32 = {n for n, p in report.precision.items() if p == "fp32"}
    assert fp32 <= {"stem_act", "se_gate", "up_linear", "deconv"}, report.precision
    assert {report.precision[n] for n in ("stem", "dw", "project", "deep", "head", "fuse_cat")} == {"int8"}
    # Numerics against onnxruntime on the model before the pass.
    sqnr = evaluate("sqnr", "30dB", run(proto, EVAL), run(quantized, EVAL))
    assert sqnr.held, sqnr.detail


def test_contiguous_placement_has_fewer_transitions_than_the_op_policies():
    counts = {}
    for label, config in [("conv", QuantConfig()), ("all", QuantConfig(ops=("all",))),
                          ("contiguous", QuantConfig(placement="contiguous"))]:
        model = _model()
        quantize_static(model, CAL, config)
        counts[label] = profile(export_model(model), {"x": EVAL["x"][:1]}, runs=1).transitions
    assert counts["contiguous"] < counts["conv"] and counts["contiguous"] <= counts["all"], counts


def test_profile_reports_per_node_precision_transitions_and_time():
    model = _model()
    # Without the HardSwish/HardSigmoid rewrite (edgec.quantization.decompose), so
    # that an fp32 island is left to report.
    quantize_static(model, CAL, QuantConfig(placement="contiguous", decompose_hard=False))
    report = profile(export_model(model), {"x": EVAL["x"][:1]}, runs=2, threads=1)
    summary = report.summary()
    assert summary["transitions"] == report.transitions > 0
    assert sum(summary["time_share"].values()) == pytest.approx(1.0, abs=0.01)
    assert report.precision["deconv"] == "fp32" and report.precision["head"] == "int8"
    assert report.precision["stem_act"] == "fp32"  # HardSwish, run as HardSigmoid and Mul
    assert dict(report.fp32_ops())  # ConvTranspose, HardSigmoid, Resize ... ran in fp32
    assert "per_node" in report.to_json() and "time_share" not in report.to_json()


def test_one_calibration_serves_every_policy_on_the_same_model_and_samples(monkeypatch):
    from edgec.quantization import qdq

    runs = []
    real_observe = qdq.observe
    monkeypatch.setattr(qdq, "observe", lambda *a, **k: runs.append(1) or real_observe(*a, **k))
    monkeypatch.setattr(qdq, "_CALIBRATIONS", [])
    monkeypatch.setattr(qdq, "_OBSERVATIONS", {})
    model = _model()
    qdq.prepare(model, QuantConfig())
    first = qdq.calibrate(model, CAL, QuantConfig())
    again = qdq.calibrate(model, CAL, QuantConfig(placement="contiguous"))
    assert again is first and len(runs) == 1
    # The ranges are those a calibration for that policy alone finds.
    monkeypatch.setattr(qdq, "_CALIBRATIONS", [])
    monkeypatch.setattr(qdq, "_OBSERVATIONS", {})
    alone = qdq._calibrate(model, export_model(model), CAL, QuantConfig(), qdq._needed_names(
        model, QuantConfig()), 16, None)
    assert all(first.ranges[k] == v for k, v in alone.ranges.items())
    # Other samples are calibrated afresh.
    qdq.calibrate(model, EVAL, QuantConfig())
    assert len(runs) == 3
