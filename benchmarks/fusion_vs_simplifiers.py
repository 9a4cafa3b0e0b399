"""Node counts and output differences: the original model, onnxsim, onnxslim and edgec's
default pipeline, on resnet18, mobilenet_v2, transformer_encoder and spec_examples/digits.

    pip install onnxsim onnxslim      # dev-only comparison tools, not edgec dependencies
    python benchmarks/fusion_vs_simplifiers.py

Differences are against the original model run by onnxruntime with its graph
optimizations off, on seeded standard-normal inputs (symbolic dims set to 2): max abs
is max|y - y₀|; max rel is max|y - y₀| / max|y₀| (relative to the output's scale, since
element-wise ratios blow up near zero). The target: edgec's node count is at most
both tools' on every model, and both differences are within 1e-4. For the
transformer the script also times the primitive attention against edgec's fused
``com.microsoft::Attention`` (onnxruntime, all graph optimizations, 2 threads).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort

from edgec.frontend import export_model, import_model
from edgec.passmgr import DEFAULT_PIPELINE, run_pipeline
from edgec.testing import models

HERE = os.path.dirname(os.path.abspath(__file__))
TOLERANCE = 1e-4


def load_models() -> dict[str, onnx.ModelProto]:
    return {
        "resnet18": models.resnet18(),
        "mobilenet_v2": models.mobilenet_v2(),
        "transformer_encoder": models.transformer_encoder(),
        "digits": onnx.load(os.path.join(HERE, "..", "spec_examples", "digits.onnx")),
    }


def session(proto: onnx.ModelProto, optimize: bool = False, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.intra_op_num_threads = threads
    options.log_severity_level = 4
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def inputs_for(proto: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in proto.graph.initializer}
    feed = {}
    for vi in proto.graph.input:
        if vi.name in initializers:
            continue
        shape = [d.dim_value if d.HasField("dim_value") else 2 for d in vi.type.tensor_type.shape.dim]
        feed[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return feed


def differences(reference: list[np.ndarray], outputs: list[np.ndarray]) -> tuple[float, float]:
    abs_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(reference, outputs))
    rel_diff = max(float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a))), 1e-30))
                   for a, b in zip(reference, outputs))
    return abs_diff, rel_diff


def edgec_default(proto: onnx.ModelProto) -> onnx.ModelProto:
    model = import_model(proto)
    run_pipeline(model)
    return export_model(model)


def simplifiers() -> dict[str, object]:
    tools = {}
    try:
        import onnxsim
        tools["onnxsim"] = lambda m: onnxsim.simplify(m)[0]
    except ImportError:
        print("onnxsim is not installed (pip install onnxsim): its column is empty", file=sys.stderr)
    try:
        import onnxslim
        tools["onnxslim"] = lambda m: onnxslim.slim(m)
    except ImportError:
        print("onnxslim is not installed (pip install onnxslim): its column is empty", file=sys.stderr)
    return tools


def latency_ms(proto: onnx.ModelProto, feed: dict, rounds: int = 30, runs: int = 5) -> float:
    s = session(proto, optimize=True, threads=2)
    for _ in range(5):
        s.run(None, feed)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(runs):
            s.run(None, feed)
        times.append((time.perf_counter() - start) / runs)
    return 1e3 * float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-timing", action="store_true", help="skip the attention timing")
    args = parser.parse_args(argv)
    tools = simplifiers()
    names = ["onnxsim", "onnxslim", "edgec"]
    print(f"edgec default pipeline: {DEFAULT_PIPELINE}")
    header = f"{'model':<20} {'original':>8} " + " ".join(f"{n:>9}" for n in names)
    header += "   " + "  ".join(f"{n + ' abs/rel':>21}" for n in names) + "   holds"
    print(header)
    failures = []
    for name, proto in load_models().items():
        feed = inputs_for(proto)
        reference = session(proto).run(None, feed)
        results = {}
        for tool, simplify in [*tools.items(), ("edgec", edgec_default)]:
            out = simplify(proto)  # type: ignore[operator]
            results[tool] = (len(out.graph.node), differences(reference, session(out).run(None, feed)), out)
        counts = " ".join(f"{results[n][0]:>9}" if n in results else f"{'-':>9}" for n in names)
        diffs = "  ".join(f"{results[n][1][0]:>10.2e}/{results[n][1][1]:<10.2e}" if n in results else f"{'-':>21}"
                          for n in names)
        ours, (abs_diff, rel_diff), fused = results["edgec"]
        holds = (all(ours <= results[t][0] for t in tools) and abs_diff <= TOLERANCE
                 and rel_diff <= TOLERANCE)
        if not holds:
            failures.append(name)
        print(f"{name:<20} {len(proto.graph.node):>8} {counts}   {diffs}   {'yes' if holds else 'NO'}")
        if name == "transformer_encoder" and not args.no_timing:
            primitive = export_model(_without_attention(proto))
            timing = {"primitive attention": latency_ms(primitive, feed), "edgec (Attention)": latency_ms(fused, feed)}
            timing["primitive attention, again"] = latency_ms(primitive, feed)
            print("    onnxruntime latency, all optimizations, 2 threads (median): "
                  + ", ".join(f"{k} {v:.2f} ms" for k, v in timing.items()))
    if failures:
        print(f"does not hold on: {', '.join(failures)}")
    return 1 if failures else 0


def _without_attention(proto: onnx.ModelProto):
    from edgec.passes.fuse import DEFAULT_PATTERNS

    patterns = ",".join(p for p in DEFAULT_PATTERNS if p != "attention")
    model = import_model(proto)
    run_pipeline(model, DEFAULT_PIPELINE.replace(",fuse,", f",fuse{{patterns={patterns}}},"))
    return model


if __name__ == "__main__":
    sys.exit(main())
