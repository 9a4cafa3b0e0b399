"""Sensitivity ranks the outlier layer first; mixed precision keeps it fp32 and
holds the tolerance (SQNR >= 30 dB on held-out samples), through the library and
through quantize-int8{fallback=per-layer}."""

import numpy as np

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


def test_mixed_precision_keeps_outlier_layer_fp32_and_holds():
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
