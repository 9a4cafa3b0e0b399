"""Clipping calibrations (percentile, entropy) keep the observed range of a value whose
range its op already bounds (Sigmoid, Softmax, ...) and of the model's outputs: a
probability map is mostly near 0, and a clipped top below 0.5 turns every positive pixel
negative. Scored against onnxruntime running the fp32 model."""

import numpy as np
import pytest

from edgec.frontend import export_model
from edgec.metrics import evaluate
from edgec.quantization.observe import run
from edgec.quantization.qdq import QuantConfig, calibrate, quantize_static, unclipped_values
from edgec.testing.passes import load, parse

DETECTOR_HEAD = """
<ir_version: 8, opset_import: ["" : 14]>
head (float[N, 4, 16, 16] x) => (float[N, 1, 16, 16] prob)
    <float[1, 4, 1, 1] w = {2.0, 0.1, -0.1, 0.05}, float[1] b = {-0.5}> {
    logits = Conv <kernel_shape = [1, 1]> (x, w, b)
    prob = Sigmoid (logits)
}
"""

def _maps(count: int, seed: int = 0) -> np.ndarray:
    """Background pixels far below the threshold, a few small boxes far above it."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.3, (count, 4, 16, 16)).astype(np.float32)
    x[:, 0] -= 3.0
    for i in range(count):
        top, left = rng.integers(0, 12, 2)
        x[i, 0, top:top + 3, left:left + 4] = 3.0 + rng.normal(0.0, 0.3, (3, 4))
    return x


@pytest.mark.parametrize("method, percentile", [("entropy", 99.99), ("percentile", 95.0)])
def test_a_probability_map_keeps_its_positives_under_clipping_calibration(method, percentile):
    proto = parse(DETECTOR_HEAD)
    calibration_data, evaluation = {"x": _maps(16, 0)}, {"x": _maps(16, 1)}
    reference = run(proto, evaluation)[0]
    assert 0.01 < float((reference > 0.5).mean()) < 0.2  # a few positives among background

    model = load(proto)
    stats = quantize_static(model, calibration_data,
                            QuantConfig(ops=("all",), calibration=method, percentile=percentile))
    assert stats["nodes-quantized"] == 2  # Conv and Sigmoid, in int8
    quantized = run(export_model(model), evaluation)[0]
    # Tolerance: IoU at 0.5 within 1 % of onnxruntime's fp32 map. Before, the 95th
    # percentile of a map with ~5 % positives put its top below 0.5: IoU 0 (and KL
    # entropy put the corpus detector's at 0.074).
    result = evaluate("iou", "1%", [reference], [quantized])
    assert result.held, result.detail


def test_the_clipped_range_of_an_unbounded_value_and_the_observed_range_of_a_bounded_one():
    model = load(parse(DETECTOR_HEAD))
    assert unclipped_values(model) == {"prob"}
    samples = {"x": _maps(16, 0)}
    clipped = calibrate(model, samples, QuantConfig(ops=("all",), calibration="percentile", percentile=99.0))
    minmax = calibrate(model, samples, QuantConfig(ops=("all",), calibration="minmax"))
    assert clipped.ranges["prob"] == minmax.ranges["prob"]        # bounded by Sigmoid: not clipped
    assert clipped.ranges["logits"][0] > minmax.ranges["logits"][0]  # unbounded: the tail is clipped
