"""Real-exporter-style models: edgec's chosen artifact against onnxruntime, side by side.

    python benchmarks/real_models.py [--models resnet18,mobilenet_v2,transformer,dbnet,...]
        [--size 320] [--threads 2] [--rounds 7] [--samples 32] [--keep DIR]

For each model (the corpus of ``edgec.testing.corpus`` plus ResNet-18, MobileNetV2 and
the transformer encoder of ``edgec.testing.models``): ``edgec compile`` for the host
with ``search fastest`` at the spec's tolerance (1 % on the task metric; 30 dB SQNR
where there is no task), then, in one process at ``--threads`` threads, onnxruntime
fp32, onnxruntime's ``quantize_static`` (QDQ, per-channel, MinMax, the same
calibration half of the data edgec calibrates on) and the chosen artifact are timed in
turn, round after round (so machine noise hits them alike; the median of the rounds
is kept; each loaded alone, with onnxruntime's default spinning, see `latencies`), and scored with the same metric against the fp32 model on the other half.
Printed: latency ratios to onnxruntime fp32, accuracy, compile time per phase, and,
where the chosen artifact is above 0.6x fp32, what bounds it: the share of its time in
kernels onnxruntime ran in fp32 (ops with no int8 kernel) and in Q/DQ transitions,
from onnxruntime's profiler.

ResNet-18 and MobileNetV2 are fitted to the synthetic texture task
(``edgec.testing.tasks``) so that their top-1 is confident; the transformer takes
standard-normal inputs (no task: SQNR). ``--size`` builds the detector at a smaller
resolution for quick runs (the corpus default is 736x736).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from edgec.metrics import BUILTIN_METRICS, evaluate  # noqa: E402

REFERENCE = ("resnet18", "mobilenet_v2", "transformer")
DETECTOR = "dbnet"  # the corpus model --size applies to
TASK_TOLERANCE = "1 %"
NO_TASK = ("sqnr", "30 dB")


class Case:
    """One model: its proto, samples (leading axis = sample), the metric and how the
    samples are laid out (batch: the model's batch axis; per-sample: one feed each)."""

    def __init__(self, name, proto, samples, metric, tolerance, layout="batch"):
        self.name, self.proto, self.samples = name, proto, samples
        self.metric, self.tolerance, self.layout = metric, tolerance, layout

    def halves(self):
        # edgec compile calibrates on the even samples and scores on the odd ones.
        return ({k: v[0::2] for k, v in self.samples.items()},
                {k: v[1::2] for k, v in self.samples.items()})


def load_case(name: str, args) -> Case:
    if name in ("resnet18", "mobilenet_v2"):
        from edgec.testing import models
        from edgec.testing.tasks import TextureTask, fit_to_task

        task = TextureTask()
        proto = fit_to_task(getattr(models, name)(), task)
        images, _ = task.sample(args.samples, 7)
        return Case(name, proto, {"input": images}, "top1-agreement", TASK_TOLERANCE)
    if name == "transformer":
        from edgec.testing import models

        proto = models.transformer_encoder()
        vi = proto.graph.input[0]
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim][1:]
        x = np.random.default_rng(7).standard_normal((args.samples, *shape)).astype(np.float32)
        return Case(name, proto, {vi.name: x}, *NO_TASK)
    from edgec.testing.corpus import MODELS

    builder = MODELS[name]
    parameters = {"size": args.size} if args.size and name == DETECTOR else {}
    corpus = builder(**parameters)
    inputs, _ = corpus.data(args.samples, 7)
    metric, tolerance = ((corpus.metric, TASK_TOLERANCE) if corpus.metric in BUILTIN_METRICS
                         and corpus.metric != "sqnr" else NO_TASK)
    return Case(name, corpus.model, inputs, metric, tolerance, corpus.layout)


# --------------------------------------------------------------------------- running


def session(path_or_proto, threads: int, spinning: bool = False) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Sessions kept for scoring stay alive while others are timed: their pool threads
    # must not spin (measured on MobileNetV3-small, the same fp32 graph timed second ran
    # 1.23x slower). Timing (`latencies`) opens its own, with onnxruntime's default
    # spinning on as deployed, one at a time.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    source = path_or_proto if isinstance(path_or_proto, str) else path_or_proto.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def feeds(case: Case, samples: dict[str, np.ndarray], sess) -> list[dict[str, np.ndarray]]:
    names = {i.name for i in sess.get_inputs()}
    count = min(len(v) for v in samples.values())
    if case.layout == "per-sample":
        # np.asarray: a scalar input's entry is a 0-d array, not a numpy scalar.
        return [{k: np.asarray(v[i]) for k, v in samples.items() if k in names} for i in range(count)]
    return [{k: v[i:i + 1] for k, v in samples.items() if k in names} for i in range(count)]


def outputs(case: Case, sess, samples) -> list[np.ndarray]:
    parts = [sess.run(None, feed) for feed in feeds(case, samples, sess)]
    return [np.concatenate([np.asarray(p[i]).reshape(1, *np.shape(p[i])) if case.layout == "per-sample"
                            else np.asarray(p[i]) for p in parts]) for i in range(len(parts[0]))]


def latencies(case: Case, sources: dict, threads: int, rounds: int, runs: int) -> dict[str, float]:
    """Median over rounds of each variant's median run, variants timed in turn, each with
    onnxruntime's default settings (pool threads spinning, as an artifact is deployed)
    and alone: loaded, warmed, timed for a block of at least ``runs`` runs and 20 ms,
    and released before the next is loaded, so no other session's spinning threads
    compete with it (spinning off instead taxes a 50 µs model with thread wake-ups)."""
    per_round: dict[str, list[float]] = {k: [] for k in sources}
    for _ in range(rounds):
        for name, source in sources.items():
            s = session(source, threads, spinning=True)
            feed = feeds(case, case.samples, s)[0]
            for _ in range(3):
                s.run(None, feed)
            times: list[float] = []
            while len(times) < runs or (sum(times) < 0.02 and len(times) < 2000):
                start = time.perf_counter()
                s.run(None, feed)
                times.append(time.perf_counter() - start)
            per_round[name].append(statistics.median(times))
            del s
    return {k: statistics.median(v) * 1e3 for k, v in per_round.items()}


def ort_quantize_static(case: Case, calibration, folder: str) -> onnx.ModelProto:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    src, dst = os.path.join(folder, "fp32.onnx"), os.path.join(folder, "ort-int8.onnx")
    onnx.save(case.proto, src)
    probe = session(src, 1)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(feeds(case, calibration, probe))

        def get_next(self):
            return next(self.items, None)

    quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    return onnx.load(dst)


# --------------------------------------------------------------------------- edgec


def compile_with_edgec(case: Case, folder: str, threads: int) -> dict:
    from edgec.compiler import CompileOptions, compile_model
    from edgec.diagnostics import EdgecError
    from edgec.progress import ProgressPrinter

    model_path = os.path.join(folder, "model.onnx")
    onnx.save(case.proto, model_path)
    np.savez(os.path.join(folder, "data.npz"), **case.samples)
    spec = os.path.join(folder, "host.edge")
    with open(spec, "w") as f:
        f.write(f"""target host
budget {{
  latency < 60 s p50 at batch 1
}}
accuracy {{
  metric {case.metric}
  tolerance {case.tolerance}
  data "data.npz"
}}
optimize {{
  precision fp32, int8
  backend ort
  search fastest
}}
""")
    out = os.path.join(folder, "artifact")
    start = time.perf_counter()
    try:
        result = compile_model(model_path, spec, out, CompileOptions(
            threads=threads, cache_dir=os.path.join(folder, "cache"), allow_over_budget=True,
            progress=ProgressPrinter(quiet=not os.environ.get("EDGEC_BENCH_PROGRESS"))))
    except EdgecError as e:
        return {"error": e.diagnostics[0].message, "seconds": time.perf_counter() - start}
    seconds = time.perf_counter() - start
    with open(os.path.join(out, "measurements.json")) as f:
        measurements = json.load(f)
    manifest = result.manifest
    return {"seconds": seconds, "out": out, "label": manifest["configuration"]["label"],
            "phases": measurements.get("phases", {}), "executed": (manifest.get("int8") or {}).get("executed"),
            "held": manifest["budgets_held"],
            "candidates": [(c["label"], c["status"], c.get("accuracy")) for c in manifest["candidates"]]}


def bound_note(artifact_model: str, case: Case, threads: int) -> str:
    """Where the chosen artifact's time goes, from onnxruntime's profiler."""
    from edgec.quantization.executed import profile

    proto = onnx.load(artifact_model)
    probe = session(artifact_model, 1)
    report = profile(proto, feeds(case, case.samples, probe)[0], runs=3, threads=threads)
    ops = ", ".join(f"{op} {share:.0%}" for op, share in report.fp32_ops()[:4])
    return (f"{report.share('fp32'):.0%} of its time in fp32 kernels ({ops}), "
            f"{report.share('transition'):.0%} in {report.transitions} Q/DQ transitions, "
            f"{report.share('int8'):.0%} in int8 kernels")


def bench(name: str, args) -> dict:
    start = time.perf_counter()
    case = load_case(name, args)
    print(f"\n=== {name}: built in {time.perf_counter() - start:.0f} s; metric {case.metric} "
          f"{case.tolerance}; {len(next(iter(case.samples.values())))} samples ({case.layout})",
          flush=True)
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
    folder = tempfile.mkdtemp(prefix=f"real-{name}-", dir=args.keep)
    compiled = compile_with_edgec(case, folder, args.threads)
    if "error" in compiled:
        print(f"edgec compile failed after {compiled['seconds']:.0f} s: {compiled['error']}")
    calibration, evaluation = case.halves()
    variants = {"ort fp32": case.proto}
    try:
        variants["ort quantize_static"] = ort_quantize_static(case, calibration, folder)
    except Exception as e:  # noqa: BLE001 - report and go on with the others
        print(f"onnxruntime quantize_static failed: {str(e).splitlines()[0]}")
    if "out" in compiled:
        variants["edgec"] = os.path.join(compiled["out"], "model.onnx")
    lat = latencies(case, variants, args.threads, args.rounds, args.runs)
    sessions = {k: session(p, args.threads) for k, p in variants.items()}
    reference = outputs(case, sessions["ort fp32"], evaluation)
    row = {"model": name, "metric": case.metric, "fp32_ms": lat["ort fp32"]}
    for key in ("ort quantize_static", "edgec"):
        if key not in sessions:
            continue
        result = evaluate(case.metric, case.tolerance, reference, outputs(case, sessions[key], evaluation))
        row[key] = {"ms": lat[key], "ratio": lat[key] / lat["ort fp32"], "accuracy": result.detail,
                    "value": result.value, "held": bool(result.held)}
    row["compile"] = compiled
    if "out" in compiled and row["edgec"]["ratio"] > 0.6:
        row["bound"] = bound_note(os.path.join(compiled["out"], "model.onnx"), case, args.threads)
    print_row(row)
    return row


def print_row(row: dict) -> None:
    print(f"ort fp32            {row['fp32_ms']:9.2f} ms  1.00x")
    for key in ("ort quantize_static", "edgec"):
        if key in row:
            r = row[key]
            print(f"{key:<19} {r['ms']:9.2f} ms  {r['ratio']:.2f}x  {r['accuracy']}"
                  f"{'' if r['held'] else '  (misses the tolerance)'}")
    c = row["compile"]
    if "label" in c:
        print(f"edgec chose: {c['label']} (compile {c['seconds']:.0f} s: "
              + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(c["phases"].items(), key=lambda kv: -kv[1]))
              + ")")
        for label, status, accuracy in c["candidates"]:
            print(f"  {label:<44} {status:<9} {'' if accuracy is None else f'{accuracy:.4g}'}")
    if row.get("bound"):
        print(f"above 0.6x: {row['bound']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="comma-separated; default: the corpus and "
                                         + ", ".join(REFERENCE))
    parser.add_argument("--size", type=int, default=0,
                        help=f"{DETECTOR} (detector) resolution, smaller for quick runs (default: the corpus's 736)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per variant per round")
    parser.add_argument("--samples", type=int, default=32, help="data samples (half calibrate, half score)")
    parser.add_argument("--keep", help="folder for the models, data and artifacts (default: a temporary one)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    if args.models:
        names = args.models.split(",")
    else:
        try:
            from edgec.testing.corpus import MODELS
            names = [*MODELS, *REFERENCE]
        except ImportError:
            names = list(REFERENCE)
    rows = []
    for name in names:
        try:
            rows.append(bench(name, args))
        except Exception as e:  # noqa: BLE001 - one model's failure is a row, not the end
            print(f"{name}: failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            rows.append({"model": name, "error": str(e)})
    print(f"\n{'model':<14} {'metric':<18} {'fp32 ms':>9} {'ort-q x':>8} {'ort-q acc':>10} "
          f"{'edgec x':>8} {'edgec acc':>10} {'compile s':>9}  chosen")
    for row in rows:
        if "error" in row:
            print(f"{row['model']:<14} failed: {row['error'][:80]}")
            continue
        q, e, c = row.get("ort quantize_static", {}), row.get("edgec", {}), row["compile"]
        print(f"{row['model']:<14} {row['metric']:<18} {row['fp32_ms']:9.2f} "
              f"{q.get('ratio', float('nan')):8.2f} {_value(q):>10} {e.get('ratio', float('nan')):8.2f} "
              f"{_value(e):>10} {c.get('seconds', float('nan')):9.0f}  {c.get('label', c.get('error', ''))}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2, default=str)
    return 0


def _value(r: dict) -> str:
    if "value" not in r:
        return "-"
    return f"{r['value']:.4g}" + ("" if r["held"] else "!")


if __name__ == "__main__":
    sys.exit(main())
