"""quantize-int8{calibration=auto}: the calibration method whose fully quantized model
scores best on the metric against onnxruntime's fp32 outputs, chosen from one
calibration run each; with fallback=per-layer the fallback starts from that method."""

import numpy as np

from edgec.frontend import export_model
from edgec.metrics import evaluate
from edgec.passes.quantize_int8 import QuantizeInt8
from edgec.passmgr.base import PassContext
from edgec.quantization.observe import run
from edgec.testing.models import mlp
from edgec.testing.passes import load


def _data(rng, count: int, outliers: bool) -> dict[str, np.ndarray]:
    x = rng.normal(0.0, 1.0, (count, 64)).astype(np.float32)
    if outliers:  # a few huge values stretch MinMax's range: its step outgrows the bulk
        x[rng.integers(0, count, 4), rng.integers(0, 64, 4)] = 400.0
    return {"x": x}


def _sqnr(proto, model, evaluation) -> float:
    return float(evaluate("sqnr", "30dB", run(proto, evaluation), run(export_model(model), evaluation)).value)


def test_auto_picks_the_method_whose_quantized_model_scores_best():
    proto = mlp()
    name = proto.graph.input[0].name
    rng = np.random.default_rng(0)
    calibration = {name: _data(rng, 32, outliers=True)["x"]}
    evaluation = {name: _data(rng, 64, outliers=False)["x"]}
    # The first 32 rows calibrate, the rest score the methods (as the pass splits them).
    given = {name: np.concatenate([calibration[name], _data(rng, 32, outliers=False)["x"]])}
    scores = {}
    for method in ("minmax", "percentile", "entropy"):
        model = load(proto)
        QuantizeInt8(ops=("all",), calibration=method, samples=32, reduce_range=False).run(
            model, PassContext(calibration_data=calibration))
        scores[method] = _sqnr(proto, model, evaluation)
    model = load(proto)
    result = QuantizeInt8(ops=("all",), calibration="auto", metric="sqnr", tolerance="30dB", samples=32,
                          reduce_range=False).run(model, PassContext(calibration_data=given))
    chosen = [k.split(".", 1)[1] for k in result.stats if k.startswith("calibration-chosen.")]
    assert len(chosen) == 1 and chosen[0] != "minmax", scores  # the outliers wreck MinMax
    # Tolerance: the chosen model is the one that method makes (same SQNR against
    # onnxruntime's fp32 within 0.01 dB), and within 1 dB of the best method on held-out data.
    assert abs(_sqnr(proto, model, evaluation) - scores[chosen[0]]) < 0.01
    assert scores[chosen[0]] >= max(scores.values()) - 1.0
    assert scores[chosen[0]] > scores["minmax"] + 3.0


def test_auto_with_the_per_layer_fallback_reports_every_method_score():
    proto = mlp()
    name = proto.graph.input[0].name
    rng = np.random.default_rng(1)
    calibration = {name: _data(rng, 64, outliers=True)["x"]}
    model = load(proto)
    result = QuantizeInt8(calibration="auto", fallback="per-layer", metric="sqnr", tolerance="25dB",
                          reduce_range=False).run(model, PassContext(calibration_data=calibration))
    assert {k for k in result.stats if k.startswith("calibration.")} == {
        "calibration.minmax", "calibration.percentile", "calibration.entropy"}
    best = max(("minmax", "percentile", "entropy"), key=lambda m: result.stats[f"calibration.{m}"])
    assert result.stats[f"calibration-chosen.{best}"] == 1
    assert result.stats["fallback-held"] == 1
    assert _sqnr(proto, model, calibration) >= 25.0


def test_every_method_derives_its_ranges_from_one_observation(monkeypatch):
    """The extremes (one run) and the histograms (one more) serve all three methods:
    ``auto`` runs the model twice to calibrate, not five times."""
    from edgec.quantization import qdq

    runs = []
    real_observe = qdq.observe
    monkeypatch.setattr(qdq, "observe", lambda *a, **k: runs.append(1) or real_observe(*a, **k))
    monkeypatch.setattr(qdq, "_CALIBRATIONS", [])
    monkeypatch.setattr(qdq, "_OBSERVATIONS", {})
    proto = mlp()
    data = {proto.graph.input[0].name: _data(np.random.default_rng(2), 32, outliers=True)["x"]}
    model = load(proto)
    ranges = {m: qdq.calibrate(model, data, qdq.QuantConfig(ops=("all",), calibration=m)).ranges
              for m in ("minmax", "percentile", "entropy")}
    assert len(runs) == 2
    # ... and are the ranges each method finds alone, from a fresh observation.
    for method, found in ranges.items():
        monkeypatch.setattr(qdq, "_CALIBRATIONS", [])
        monkeypatch.setattr(qdq, "_OBSERVATIONS", {})
        assert qdq.calibrate(model, data, qdq.QuantConfig(ops=("all",), calibration=method)).ranges == found
