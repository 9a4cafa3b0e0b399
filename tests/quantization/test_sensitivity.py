"""Sensitivity ranks the outlier layer first; mixed precision keeps it fp32 and
holds the tolerance (SQNR >= 30 dB on held-out samples), through the library and
through quantize-int8{fallback=per-layer}."""

import numpy as np
import pytest

from edgec.frontend import export_model, import_model
from edgec.metrics import evaluate
from edgec.passes.quantize_int8 import QuantizeInt8
from edgec.passmgr.base import PassContext
from edgec.quantization import QuantConfig, layer_sensitivity, mixed_precision, quantize_static
from edgec.quantization.demo import outlier_mlp
from edgec.quantization.observe import run

CAL = {"input": np.random.default_rng(1).standard_normal((32, 64)).astype(np.float32)}
EVAL = {"input": np.random.default_rng(2).standard_normal((300, 64)).astype(np.float32)}


def test_full_int8_breaks_the_outlier_model():
    proto = outlier_mlp()
    model = import_model(proto)
    quantize_static(model, CAL, QuantConfig())
    assert evaluate("sqnr", "30dB", run(proto, EVAL), run(export_model(model), EVAL)).value < 5


def test_sensitivity_ranks_outlier_layer_first():
    ranking = layer_sensitivity(import_model(outlier_mlp()), CAL, "sqnr", eval_samples=EVAL)
    assert [name for name, _ in ranking][0] == "/fc1/MatMul"
    assert ranking[0][1] < 5 and all(score > 25 for _, score in ranking[1:])


def test_mixed_precision_keeps_outlier_layer_fp32_and_holds(monkeypatch):
    from edgec.quantization import qdq

    monkeypatch.setattr(qdq, "_CALIBRATIONS", [])  # calibrated afresh: its stage is shown
    monkeypatch.setattr(qdq, "_OBSERVATIONS", {})
    stages = []
    proto = outlier_mlp()
    config, report = mixed_precision(import_model(proto), CAL, "sqnr", "30dB", eval_samples=EVAL,
                                     progress=lambda *a: stages.append(a[0]))
    assert report.held and report.kept_fp32 == ["/fc1/MatMul"] and config.exclude == ("/fc1/MatMul",)
    assert [s["held"] for s in report.steps] == [False, True]
    assert {"calibrate", "sensitivity", "mixed-precision"} <= set(stages)
    model = import_model(proto)
    quantize_static(model, CAL, config)
    assert evaluate("sqnr", "30dB", run(proto, EVAL), run(export_model(model), EVAL)).held
    assert report.to_json()["kept-fp32"] == ["/fc1/MatMul"]


def test_pass_fallback_option():
    proto = outlier_mlp()
    model = import_model(proto)
    samples = {"input": np.concatenate([CAL["input"], EVAL["input"]])}
    result = QuantizeInt8(fallback="per-layer", metric="sqnr", tolerance="30dB", samples=32).run(
        model, PassContext(calibration_data=samples))
    assert result.stats["fallback-held"] == 1 and result.stats["fp32./fc1/MatMul"] == 1
    fc1 = next(n for n in model.graph if n.name == "/fc1/MatMul")
    assert fc1.inputs[0].producer().op_type != "DequantizeLinear"
    assert evaluate("sqnr", "30dB", run(proto, EVAL), run(export_model(model), EVAL)).held


def test_sensitivity_is_one_batched_run_not_one_run_per_layer(monkeypatch):
    from edgec.quantization import sensitivity

    sessions = []
    real_session = sensitivity.session
    monkeypatch.setattr(sensitivity, "session", lambda *a, **k: sessions.append(1) or real_session(*a, **k))
    monkeypatch.setattr(sensitivity.Trials, "score", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("a whole-model trial per layer")))
    ranking = layer_sensitivity(import_model(outlier_mlp()), CAL, "sqnr", eval_samples=EVAL)
    assert len(sessions) == 1
    assert ranking[0][0] == "/fc1/MatMul"


def test_fallback_units_free_an_activation_with_its_writer_and_readers():
    """An activation's Q/DQ pair goes only when the layer writing it and every layer
    reading it are fp32: that is one unit of the fallback."""
    from onnx import TensorProto, helper, numpy_helper

    from edgec.quantization.fallback import _unit_gains
    from edgec.quantization.sensitivity import VALUE

    w = numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="conv_a"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w"], ["b"], name="conv_b"),
             helper.make_node("Conv", ["r", "w"], ["c"], name="conv_c"),
             helper.make_node("Add", ["b", "c"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w])
    model = import_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    layers = ["conv_a", "conv_b", "conv_c"]
    units = {name: (name,) for name in layers}
    # The quantized model reads conv_a's output (its Relu folded) through one Q/DQ pair.
    noise = {"conv_a": 0.5, VALUE + "a": 0.2, "conv_b": 0.25, VALUE + "x": 0.01}
    gains = _unit_gains(model, layers, noise, units)
    assert units[VALUE + "a"] == ("conv_a", "conv_b", "conv_c")
    assert units[VALUE + "x"] == ("conv_a",)
    assert gains[VALUE + "a"] == 0.2
    # A layer's own gain is the noise it adds beyond its inputs' quantization.
    assert gains["conv_a"] == pytest.approx(0.49) and gains["conv_b"] == pytest.approx(0.05)


def test_latency_aware_fallback_measures_costs_and_still_holds():
    proto = outlier_mlp()
    config, report = mixed_precision(import_model(proto), CAL, "sqnr", "30dB", eval_samples=EVAL,
                                     latency=True)
    assert report.latency["fp32_ms"] > 0 and report.latency["int8_ms"] > 0
    assert all("cost_ms" in step for step in report.steps)
    if report.faster_than_fp32:
        assert report.held and "/fc1/MatMul" in report.kept_fp32


def test_fallback_orders_by_gain_per_cost_and_stops_at_the_latency_budget():
    """Injected costs (seconds): a layer faster in fp32 goes first whatever its gain;
    then noise removed per second added; no prefix that would cost the whole budget."""
    from edgec.quantization.fallback import _Plan

    plan = _Plan({"a": ("a",), "b": ("b",), "c": ("c",)}, latency=True,
                 costs={"a": -1e-4, "b": 3e-4, "c": 5e-4}, budget=6e-4)
    plan.order_units(["a", "b", "c"], [("b", 1.0), ("a", 2.0), ("c", 3.0)],
                     {"a": 1.0, "b": 1.0, "c": 10.0})
    assert plan.order == ["a", "c", "b"] and plan.start == 1
    # a saves 1e-4, so 7e-4 may be spent: c (5e-4) fits, c and b (8e-4) do not.
    assert plan.affordable() == (2, True)
    assert plan.fp32_nodes(2) == ["a", "c"]
    plan.budget = -2e-4  # int8 already slower than fp32, even with a back in fp32
    assert plan.affordable() == (3, False)
    unmeasured = _Plan({"a": ("a",), "b": ("b",)}, latency=False)
    unmeasured.order_units(["a", "b"], [("b", 1.0), ("a", 2.0)], {})
    assert unmeasured.order == ["b", "a"] and unmeasured.affordable() == (2, True)


def test_fallback_search_finds_the_shortest_holding_prefix_in_few_trials():
    from edgec.quantization.fallback import _shortest_holding_prefix

    for first in range(12):
        tried = []
        found = _shortest_holding_prefix(lambda k: tried.append(k) or k >= first, 0, 10)
        assert found == (first if first <= 10 else None)
        assert len(tried) <= 8 and len(set(tried)) == len(tried)
    tried = []
    assert _shortest_holding_prefix(lambda k: tried.append(k) or k >= 5, 2, 10) == 5
    assert tried[:3] == [2, 3, 4]


def test_sensitivity_of_a_node_reading_one_value_twice():
    """A node that reads one quantized value twice (a power spectrum's x * x, as the corpus
    VAD has) is one QDQ group with one copy of that value's Q/DQ pair; two copies gave the
    analysis model two nodes of one name, which onnxruntime refused."""
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 8], rng.standard_normal((8, 8)).astype(np.float32).ravel())
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
         helper.make_node("Mul", ["h", "h"], ["sq"], name="square"),
         helper.make_node("MatMul", ["sq", "w"], ["y"], name="mm2")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    samples = {"x": rng.standard_normal((16, 8)).astype(np.float32)}
    ranking = layer_sensitivity(import_model(model), samples, "sqnr",
                                config=QuantConfig(ops=("MatMul", "Mul")))
    assert {name for name, _ in ranking} >= {"square"}
    assert all(np.isfinite(score) for _, score in ranking)
