"""How good is the latency cost model? Predict this host's latency from the host's own
target description, measure onnxruntime on the same models in the same run, print the
error. The issue's bar: under 50 % on each of the three benchmark models.

    python benchmarks/costmodel.py [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

import onnx
import onnxruntime as ort

from edgec.backends.base import time_calls
from edgec.data import model_inputs, synthetic_samples
from edgec.dsl import check_text
from edgec.frontend import import_model
from edgec.passmgr import run_pipeline
from edgec.planner.costmodel import estimate
from edgec.testing import models

MODELS = {"resnet18": models.resnet18, "mobilenet_v2": models.mobilenet_v2,
          "transformer": models.transformer_encoder, "digits": None}


def measure(proto: onnx.ModelProto, threads: int) -> float:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    session = ort.InferenceSession(proto.SerializeToString(), so,
                                   providers=["CPUExecutionProvider"])
    feed = synthetic_samples(model_inputs(proto), 1, 0)
    return statistics.median(time_calls(lambda: session.run(None, feed), repeats=40,
                                        max_seconds=15))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    spec, diagnostics = check_text("target host\n", os.path.join(tempfile.gettempdir(), "h.edge"))
    if spec is None:
        print("\n".join(d.render() for d in diagnostics))
        return 1
    target = spec.target
    print(f"host target: {target.cpu}, {target.cores} cores, peak fp32 {target.peak_for('fp32')}, "
          f"bandwidth {target.bandwidth or 'not detected (default 20 GB/s)'}")
    print(f"{'model':<14}{'estimated':>12}{'measured':>12}{'error':>10}")
    worst = 0.0
    for name, build in MODELS.items():
        proto = onnx.load("spec_examples/digits.onnx") if build is None else build()
        model = import_model(proto)
        run_pipeline(model)  # the default pipeline, as edgec compile runs it
        from edgec.frontend import export_model
        optimized = export_model(model)
        est = estimate(model, target, batch=1).seconds
        real = measure(optimized, args.threads)
        error = (est - real) / real
        worst = max(worst, abs(error)) if name != "digits" else worst
        print(f"{name:<14}{est * 1e3:>10.3f}ms{real * 1e3:>10.3f}ms{error * 100:>+9.0f}%")
    print(f"worst error on the three benchmark models: {worst * 100:.0f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
