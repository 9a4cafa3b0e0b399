"""Quantization: calibration ranges (MinMax, percentile, KL entropy), QDQ insertion for
static int8, what onnxruntime really runs in int8 (`executed`: one-node probes and
per-node profiles), where Q/DQ go so int8 regions are contiguous (`placement`), and
per-layer sensitivity analysis (`sensitivity`) and the latency-aware mixed-precision
fallback (`fallback`).

The passes in ``passes/quantize_*.py`` and ``passes/convert_fp16.py`` are thin option
wrappers around this package; the planner calls `quantize_static`, `layer_sensitivity`
and `mixed_precision` directly.
"""

from edgec.quantization.calibration import (entropy_threshold, minmax_range, percentile_range,
                                            Histogram)
from edgec.quantization.qdq import QuantConfig, quantize_static
from edgec.quantization.fallback import mixed_precision
from edgec.quantization.sensitivity import layer_sensitivity

__all__ = ["Histogram", "QuantConfig", "entropy_threshold", "layer_sensitivity",
           "minmax_range", "mixed_precision", "percentile_range", "quantize_static"]
