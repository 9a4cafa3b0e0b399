"""HardSwish/HardSigmoid written in ops onnxruntime runs in int8, and multiplies by a
positive scalar folded into the DequantizeLinear's scale (edgec.quantization.decompose):
exact in fp32 against onnxruntime (1e-5), and with the contiguous placement the
MobileNetV3-style islands run in int8 at SQNR >= 30 dB against onnxruntime fp32."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgec.frontend import export_model, import_model
from edgec.metrics import evaluate
from edgec.passes.infer_shapes import InferShapes
from edgec.passmgr.base import PassContext
from edgec.quantization.decompose import decompose_hard_activations
from edgec.quantization.executed import profile
from edgec.quantization.observe import run
from edgec.quantization.qdq import QuantConfig, quantize_static

from tests.quantization.test_executed_and_placement import CAL, EVAL, detector_like


def _import(proto):
    model = import_model(proto)
    InferShapes().run(model, PassContext())
    return model


def hard_ops_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8, 8])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4, 8, 8]) for n in ("hs", "hsig")]
    nodes = [helper.make_node("HardSwish", ["x"], ["hs"], name="hswish"),
             helper.make_node("HardSigmoid", ["x"], ["hsig"], alpha=0.2, beta=0.5, name="hsig")]
    return helper.make_model(helper.make_graph(nodes, "hard", [x], outs),
                             opset_imports=[helper.make_opsetid("", 17)])


def test_decomposition_is_exact_against_onnxruntime():
    proto = hard_ops_model()
    model = _import(proto)
    assert decompose_hard_activations(model) == 2
    ops = [n.op_type for n in model.graph]
    assert "HardSwish" not in ops and "HardSigmoid" not in ops
    feed = {"x": np.random.default_rng(0).uniform(-6, 6, (3, 4, 8, 8)).astype(np.float32)}
    want, got = run(proto, feed), run(export_model(model), feed)
    assert len(got) == len(want) == 2
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5)


def test_contiguous_int8_runs_hardswish_and_se_gate_in_int8():
    proto = detector_like()
    transitions, fp32 = {}, {}
    for decompose in (False, True):
        model = _import(proto)
        stats = quantize_static(model, CAL, QuantConfig(placement="contiguous", decompose_hard=decompose))
        quantized = export_model(model)
        report = profile(quantized, {"x": EVAL["x"][:1]}, runs=1)
        transitions[decompose] = report.transitions
        fp32[decompose] = {n for n, p in report.precision.items() if p == "fp32"}
        sqnr = evaluate("sqnr", "30dB", run(proto, EVAL), run(quantized, EVAL))
        assert sqnr.held, (decompose, sqnr.detail)
    # HardSwish (stem_act) and HardSigmoid (se_gate) were fp32 islands; now only the ops
    # with no int8 kernel at all are left in fp32, with fewer Q/DQ transitions.
    assert {"stem_act", "se_gate"} <= fp32[False]
    assert fp32[True] <= {"up_linear", "deconv"}, fp32[True]
    assert transitions[True] < transitions[False], transitions
    assert stats["scalar-muls-folded"] == 2  # x/6 of the HardSwish, 0.2x of the HardSigmoid


def scaled_model(c: float) -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) / 5).astype(np.float32), "w0"),
             numpy_helper.from_array((rng.standard_normal((8, 8, 1, 1)) / 3).astype(np.float32), "w1"),
             numpy_helper.from_array(np.array(c, np.float32), "c")]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"], pads=[1, 1, 1, 1], name="conv0"),
             helper.make_node("Mul", ["a", "c"], ["m"], name="scale"),
             helper.make_node("Conv", ["m", "w1"], ["y"], name="conv1")]
    graph = helper.make_graph(nodes, "scaled",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 64, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 64, 64])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_positive_scalar_multiply_becomes_a_dequantize_scale():
    for c, folded in ((0.37, 1), (-0.37, 0)):  # a negative scale would flip the order
        proto = scaled_model(c)
        model = _import(proto)
        stats = quantize_static(model, CAL, QuantConfig(placement="contiguous"))
        assert stats["scalar-muls-folded"] == folded
        quantized = export_model(model)
        assert ("Mul" in [n.op_type for n in quantized.graph.node]) == (not folded)
        sqnr = evaluate("sqnr", "30dB", run(proto, EVAL), run(quantized, EVAL))
        assert sqnr.held, (c, sqnr.detail)
