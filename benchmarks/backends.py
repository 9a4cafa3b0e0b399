"""edgec's artifacts against onnxruntime fp32, measured in the same run.

For ResNet-18 and MobileNetV2 at 1x3x224x224 and a 4-layer transformer encoder
(hidden 256, seq 128), generated with random weights by edgec.testing.models, this
compiles the model for the host with each backend setting — ort; tvm untuned; tvm
tuned at a stated trial budget; auto (tuned budget) — re-measures every artifact
in this process, and prints latency ratios against onnxruntime fp32 (all graph
optimizations, the same thread count) plus compile/tuning times and the time of a
second compile with a warm cache. The exporter-style models (``exporter_cnn``, and
issue 10's corpus ``crnn`` and ``dbnet_128``) import into TVM only after legalize-tvm;
the table ends with what legalize-tvm changed in each graph TVM tunes.

    python benchmarks/backends.py --trials 64            # all three models
    python benchmarks/backends.py --models resnet18 --trials 256 --cache-dir .cache/edgec
    python benchmarks/backends.py --models exporter_cnn,crnn --trials 64   # exporter-style

Tuning on this 2-core machine is slow (docs/tvm-notes.md: 25-35 s fixed cost per task);
tuning records persist under --cache-dir, so reruns reuse them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort

from edgec.artifact import load
from edgec.backends import get_backend
from edgec.backends.base import BuildOptions, time_calls
from edgec.compiler import CompileOptions, compile_model
from edgec.testing import models

def _corpus(name: str, **parameters):
    def build() -> onnx.ModelProto:
        from edgec.testing.corpus import MODELS as CORPUS  # issue 10's exporter-style models
        return CORPUS[name](**parameters).model
    return build


MODELS = {
    "resnet18": lambda: models.resnet18(),
    "mobilenet_v2": lambda: models.mobilenet_v2(),
    "transformer": lambda: models.transformer_encoder(),
    # Exporter-style graphs TVM imports only after legalize-tvm (run-time shapes, LSTM,
    # Paddle2ONNX's Resize inputs): there is no "before" to tune.
    "exporter_cnn": lambda: models.exporter_style_cnn(),
    "crnn": _corpus("crnn"),
    "dbnet_128": _corpus("dbnet", size=128),
}


def legalize_delta(model: onnx.ModelProto) -> str:
    """What legalize-tvm changes in the graph the tvm backend tunes, as op counts
    (``+2 Cast -1 LSTM``), at batch 1; "none" when it hands TVM the same graph."""
    from collections import Counter

    from edgec.frontend import export_model, import_model
    from edgec.passes.legalize_tvm import BindDims, LegalizeTVM
    from edgec.passmgr.base import PassContext

    before = import_model(model, check=False)
    ops_before = Counter(n.op_type for n in export_model(before).graph.node)
    legalized = import_model(model, check=False)
    BindDims(batch=1).run(legalized, PassContext())  # the spec's batch, as compile binds it
    result = LegalizeTVM().run(legalized, PassContext())
    after = export_model(result.model if result.model is not None else legalized)
    ops_after = Counter(n.op_type for n in after.graph.node)
    delta = [(op, ops_after[op] - ops_before[op]) for op in sorted(set(ops_before) | set(ops_after))]
    text = " ".join(f"{n:+d} {op}" for op, n in delta if n)
    return text or "none"


def spec_text(backend: str, trials: int | None, data: str) -> str:
    tuning = f"{trials} trials" if trials else "none"
    return f"""target host
budget {{
  latency < 100 s p50 at batch 1
}}
accuracy {{
  metric max-abs-error
  tolerance 1 %
  data "{data}"
}}
optimize {{
  precision fp32
  backend {backend}
  tuning {tuning}
}}
"""


def inputs_for(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    from edgec.data import example_inputs, model_inputs
    return example_inputs(model_inputs(model), 1, seed)


def ort_session(path: str, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def interleaved_ratio(measure_artifact, measure_baseline, rounds: int) -> tuple[float, float]:
    """(artifact p50, artifact/baseline ratio), timing the two in alternating rounds so
    that the machine's load drifts affect both alike; medians over the rounds."""
    artifact, base = [], []
    for _ in range(rounds):
        artifact.append(measure_artifact())
        base.append(measure_baseline())
    return statistics.median(artifact), statistics.median(a / b for a, b in zip(artifact, base))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,mobilenet_v2,transformer")
    parser.add_argument("--trials", type=int, default=64, help="tuning trial budget")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--cache-dir", default=os.path.join(os.getcwd(), ".cache", "edgec"))
    parser.add_argument("--skip-tuned", action="store_true", help="only ort, untuned tvm")
    parser.add_argument("--workdir", help="where the models and artifacts go (reusing one makes "
                                          "every compile a no-op: only the measurements rerun)")
    parser.add_argument("--rounds", type=int, default=7,
                        help="alternating rounds of artifact and baseline timing")
    args = parser.parse_args()
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))

    configs = [("ort", "ort", None), ("tvm-untuned", "tvm", None)]
    if not args.skip_tuned:
        configs += [(f"tvm-tuned-{args.trials}", "tvm", args.trials), ("auto", "auto", args.trials)]
    rows = []
    work = args.workdir or tempfile.mkdtemp(prefix="edgec-bench-")
    os.makedirs(work, exist_ok=True)
    print(f"work folder: {work}")
    for name in args.models.split(","):
        model = MODELS[name]()
        path = os.path.join(work, f"{name}.onnx")
        if not os.path.exists(path):  # kept as is in a reused work folder: compiles stay no-ops
            onnx.save(model, path)
        feed = inputs_for(model)
        # Four samples are enough to check the numbers; an untuned ResNet-18 takes seconds
        # per sample, and accuracy is not what this benchmark is about.
        data = os.path.join(work, f"{name}-samples.npz")
        if not os.path.exists(data):
            np.savez(data, **{k: np.concatenate([inputs_for(model, seed)[k]
                                                 for seed in range(4)]) for k in feed})
        baseline = ort_session(path, args.threads)
        base = statistics.median(time_calls(lambda: baseline.run(None, feed), repeats=args.repeats,
                                            max_seconds=20))
        row = {"model": name, "ort_ms": base * 1e3, "legalize": legalize_delta(model)}
        for label, backend, trials in configs:
            spec = os.path.join(work, f"{name}-{label}.edge")
            with open(spec, "w") as f:
                f.write(spec_text(backend, trials, data))
            out = os.path.join(work, f"{name}-{label}")
            start = time.perf_counter()
            try:
                result = compile_model(path, spec, out, CompileOptions(
                    cache_dir=args.cache_dir, allow_over_budget=True, threads=args.threads))
            except Exception as e:  # report and go on: one failing config is a finding
                row[label] = f"failed: {str(e).splitlines()[0][:60]}"
                print(f"{name} {label} failed: {e}", file=sys.stderr)
                continue
            compile_s = time.perf_counter() - start
            artifact = load(out)
            chosen = artifact.backend_name
            backend = get_backend(chosen)
            details = artifact.manifest["backend"]["details"]
            options = BuildOptions(cache_dir=args.cache_dir, threads=args.threads)
            rounds = 1 if not artifact.manifest["backend"]["tuned"] else args.rounds
            p50, ratio = interleaved_ratio(
                lambda: backend.measure(out, details, feed, options).p50,
                lambda: statistics.median(time_calls(lambda: baseline.run(None, feed),
                                                     repeats=10, max_seconds=5)),
                rounds)
            # A second compile into a fresh folder: served from the cache, no tuning.
            start = time.perf_counter()
            compile_model(path, spec, out + "-again", CompileOptions(
                cache_dir=args.cache_dir, allow_over_budget=True, threads=args.threads))
            warm_s = time.perf_counter() - start
            row[label] = {"ms": p50 * 1e3, "ratio": ratio, "chosen": chosen,
                          "tuned": artifact.manifest["backend"]["tuned"],
                          "compile_s": compile_s, "warm_s": warm_s,
                          "held": result.budgets_held}
        rows.append(row)
        print_table(rows, [c[0] for c in configs], args)
    return 0


def print_table(rows, labels, args) -> None:
    print(f"\nlatency p50 on this host ({args.threads} threads), ratio = edgec / onnxruntime fp32 "
          "(lower is better), same run")
    header = f"{'model':<14}{'ORT fp32':>10}" + "".join(f"{label:>34}" for label in labels)
    print(header)
    for row in rows:
        line = f"{row['model']:<14}{row['ort_ms']:>8.2f}ms"
        for label in labels:
            cell = row.get(label)
            if isinstance(cell, dict):
                text = (f"{cell['ms']:.2f}ms x{cell['ratio']:.2f} [{cell['chosen']}"
                        f"{'' if cell['tuned'] else ',untuned'}] c{cell['compile_s']:.0f}s "
                        f"w{cell['warm_s']:.1f}s")
            else:
                text = str(cell)[:33]
            line += f"{text:>34}"
        print(line)
    print("c = compile (and tuning) seconds from a cold build cache; w = second compile "
          "with a warm cache")
    print("what legalize-tvm changes in the graph TVM tunes (op counts at batch 1):")
    for row in rows:
        print(f"  {row['model']:<14}{row['legalize']}")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
