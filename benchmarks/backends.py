"""edgec's artifacts against onnxruntime fp32, measured in the same run.

For ResNet-18 and MobileNetV2 at 1x3x224x224 and a 4-layer transformer encoder
(hidden 256, seq 128), generated with random weights by edgec.testing.models, this
compiles the model for the host with each backend setting — ort; tvm untuned; tvm
tuned at a stated trial budget; auto (tuned budget) — re-measures every artifact
in this process, and prints latency ratios against onnxruntime fp32 (all graph
optimizations, the same thread count) plus compile/tuning times and the time of a
second compile with a warm cache. The exporter-style models (``exporter_cnn``, and
issue 10's corpus ``crnn``, ``dbnet_128`` (DBNet at 128x128, reduced from 736),
``jax2tf_cnn`` and ``mobilenet_v3_small``) follow; the first three import into TVM only
after legalize-tvm. The table ends with what legalize-tvm changed in each graph TVM tunes.

    python benchmarks/backends.py --trials 64            # all three models
    python benchmarks/backends.py --models resnet18 --trials 256 --cache-dir .cache/edgec
    python benchmarks/backends.py --models exporter_cnn,crnn --trials 64   # exporter-style
    python benchmarks/backends.py --compare-legalize --trials 64 --json out.json

``--compare-legalize`` builds each model twice with the tvm backend at the same trial
budget, each into its own cold tuning database: the graph edgec's tvm pipeline hands
TVM without the ``legalize-tvm`` group ("raw", as before the group existed) and with
it ("legalized", what ``edgec compile --backend tvm`` builds). Per variant it reports
the tuning wall time, the tuning tasks (tunable, and those left with symbolic shapes
that MetaSchedule cannot tune), the trials run and the tuned latency against
onnxruntime fp32 on the original model, timed in alternating rounds (medians). A raw
graph TVM does not import is reported with the importer's reason. When both variants
are the same graph (legalize-tvm changed nothing) the raw one is not tuned again: its
tasks are the legalized one's, by construction, and the row says so.

Tuning on this 2-core machine is slow (docs/tvm-notes.md: 25-35 s fixed cost per task);
tuning records persist under --cache-dir, so reruns reuse them.
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
    # Exporter-style graphs: exporter_cnn, crnn and dbnet import into TVM only after
    # legalize-tvm (run-time Resize sizes, LSTM, Paddle2ONNX's Resize inputs), so their
    # raw graph has no "before" to tune; jax2tf_cnn imports either way (measured in
    # benchmarks/data/tvm-backends-host.json), mobilenet_v3_small is unchanged by it.
    "exporter_cnn": lambda: models.exporter_style_cnn(),
    "crnn": _corpus("crnn"),
    "dbnet_128": _corpus("dbnet", size=128),  # reduced from 736 to fit a tuning budget
    "jax2tf_cnn": _corpus("jax2tf-cnn"),
    "mobilenet_v3_small": _corpus("mobilenet-v3-small"),
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


def interleaved_ratio(measure_artifact, measure_baseline, rounds: int,
                      baseline_times: list | None = None) -> tuple[float, float]:
    """(artifact p50, artifact/baseline ratio), timing the two in alternating rounds so
    that the machine's load drifts affect both alike; medians over the rounds. The
    baseline's per-round times go to ``baseline_times`` when given."""
    artifact, base = [], [] if baseline_times is None else baseline_times
    for _ in range(rounds):
        artifact.append(measure_artifact())
        base.append(measure_baseline())
    return statistics.median(artifact), statistics.median(a / b for a, b in zip(artifact, base))


# -- --compare-legalize: the raw graph against the legalized one, each tuned cold ------

def pipeline_variants(model: onnx.ModelProto, spec_path: str, folder: str) -> dict[str, str]:
    """The graph the tvm backend is handed, written as ONNX under ``folder``: "raw" is
    the tvm pipeline without its ``legalize-tvm`` final group, "legalized" the pipeline
    ``edgec compile --backend tvm`` runs. Returns variant -> model path."""
    from edgec.backends import capabilities
    from edgec.diagnostics import DiagnosticSink
    from edgec.dsl import load_spec
    from edgec.frontend.onnx_export import save_model
    from edgec.frontend.onnx_import import import_model
    from edgec.passmgr import PassContext, PassManager, default_pipeline

    spec = load_spec(spec_path)
    needs = capabilities("tvm")
    pipelines = {"raw": default_pipeline(needs.pass_options, ()),
                 "legalized": default_pipeline(needs.pass_options, needs.final_passes)}
    if "legalize-tvm" not in pipelines["legalized"]:
        raise SystemExit("this edgec install has no legalize-tvm pass: nothing to compare")
    paths = {}
    for variant, text in pipelines.items():
        ir = import_model(model, check=False)
        ctx = PassContext(diagnostics=DiagnosticSink(), spec=spec, target=spec.target,
                          seed=spec.optimize.seed)
        run = PassManager(text, context=ctx).run(ir)
        os.makedirs(os.path.join(folder, variant), exist_ok=True)
        paths[variant] = os.path.join(folder, variant, "model.onnx")
        save_model(run.model, paths[variant])
    return paths


def same_graph(a: str, b: str) -> bool:
    """Whether two ONNX files hold the same graph (metadata aside)."""
    return onnx.load(a).graph.SerializeToString() == onnx.load(b).graph.SerializeToString()


def tune_variant(path: str, target, out: str, cache_dir: str, trials: int, threads: int,
                 feed, baseline, rounds: int) -> dict:
    """Builds ``path`` with the tvm backend, tuned at ``trials`` into the database under
    ``cache_dir``; its tuning and tuned latency against onnxruntime (``baseline``)."""
    from edgec.backends.tvm import TVMBackend
    from edgec.diagnostics import EdgecError

    backend = TVMBackend()
    model = onnx.load(path)
    start = time.perf_counter()
    try:
        result = backend.build(model, target, out, BuildOptions(
            cache_dir=cache_dir, tuning_trials=trials, threads=threads), model_path=path)
    except EdgecError as error:  # the raw graph's import failure is the finding
        message = error.diagnostics[0].message if getattr(error, "diagnostics", None) \
            else str(error).splitlines()[0]
        return {"imports": False, "error": message}
    build_s = time.perf_counter() - start
    tuning = result.details.get("tuning") or {}
    options = BuildOptions(cache_dir=cache_dir, threads=threads)
    base: list[float] = []
    p50, ratio = interleaved_ratio(
        lambda: backend.measure(out, result.details, feed, options).p50,
        lambda: statistics.median(time_calls(lambda: baseline.run(None, feed),
                                             repeats=10, max_seconds=5)),
        rounds, base)
    # ort_in_rounds_ms: onnxruntime as timed in the same rounds (the ratio's denominator).
    return {"imports": True, "build_s": round(build_s, 1), "ms": round(p50 * 1e3, 3),
            "ratio": round(ratio, 3), "ort_in_rounds_ms": round(statistics.median(base) * 1e3, 3),
            **{key: tuning.get(key) for key in ("tasks_total", "tasks_dynamic", "tasks_tuned",
                                                "tasks_untuned", "tasks_from_database",
                                                "trials_run", "cost_model")},
            "notes": list(result.notes)}


def compare_legalize(args, names: list[str], work: str) -> list[dict]:
    """Per model: the raw and the legalized graph, each tuned cold at ``args.trials``."""
    rows = []
    for name in names:
        model = MODELS[name]()
        folder = os.path.join(work, name)
        os.makedirs(folder, exist_ok=True)
        spec = os.path.join(folder, "tvm.edge")
        with open(spec, "w") as f:
            f.write(spec_text("tvm", args.trials, "unused.npz").replace(
                '  data "unused.npz"\n', ""))
        source = os.path.join(folder, "original.onnx")
        onnx.save(model, source)
        feed = inputs_for(model)
        baseline = ort_session(source, args.threads)
        ort_ms = statistics.median(time_calls(lambda: baseline.run(None, feed),
                                              repeats=args.repeats, max_seconds=20)) * 1e3
        paths = pipeline_variants(model, spec, folder)
        from edgec.dsl import load_spec
        target = load_spec(spec).target
        row = {"model": name, "ort_ms": round(ort_ms, 3), "legalize": legalize_delta(model)}
        identical = same_graph(paths["raw"], paths["legalized"])
        for variant in ("legalized", "raw"):
            if variant == "raw" and identical:
                row["raw"] = {"same_graph_as_legalized": True}
                continue
            # Each variant tunes into its own database under the cache, cold the first
            # time (a rerun finds its records: trials_run 0, build_s no tuning time).
            cache = os.path.join(args.cache_dir, "compare-legalize", variant)
            print(f"{name}: tuning the {variant} graph ({args.trials} trials)...",
                  file=sys.stderr, flush=True)
            row[variant] = tune_variant(paths[variant], target,
                                        os.path.join(folder, f"{variant}-tvm"), cache,
                                        args.trials, args.threads, feed, baseline,
                                        args.rounds)
            print(f"{name} {variant}: {row[variant]}", file=sys.stderr, flush=True)
        rows.append(row)
        print_compare(rows, args)
        if args.json:
            write_json(args, rows)
    return rows


def write_json(args, rows: list[dict]) -> None:
    import datetime
    import platform

    data = {"what": "benchmarks/backends.py --compare-legalize: each model's graph from "
                    "edgec's tvm pipeline without legalize-tvm (raw) and with it "
                    "(legalized), each tuned into its own cold MetaSchedule database at "
                    "the same trial budget, then timed against onnxruntime fp32 on the "
                    "original model in alternating rounds (medians)",
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "host": f"{platform.machine()}, {os.cpu_count()} cores",
            "trials": args.trials, "threads": args.threads, "rounds": args.rounds,
            "caveat": args.caveat, "rows": rows}
    with open(args.json, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")


def _ms(value: float) -> str:
    """Milliseconds to three significant figures (a 20 us model is not 0.02)."""
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _variant_cells(cell) -> list[str]:
    if cell is None:
        return ["-"] * 5
    if cell.get("same_graph_as_legalized"):
        return ["same graph"] + ["="] * 4
    if not cell.get("imports"):
        return [f"no import: {cell['error'][:60]}"] + ["-"] * 4
    tasks = f"{cell['tasks_total']}+{cell['tasks_dynamic']}dyn"
    if cell.get("tasks_untuned"):
        tasks += f" ({cell['tasks_untuned']} untuned)"
    return [tasks, str(cell["trials_run"]), f"{cell['build_s']:.0f}", _ms(cell["ms"]),
            f"x{cell['ratio']:.2f}"]


def compare_table(rows: list[dict]) -> str:
    lines = ["| model | ORT fp32 ms | variant | tasks (+symbolic) | trials run | "
             "tune+build s | tuned ms | x ORT |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for variant in ("raw", "legalized"):
            cells = [row["model"], _ms(row["ort_ms"]), variant,
                     *_variant_cells(row.get(variant))]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_compare(rows: list[dict], args) -> None:
    print(f"\nraw vs legalized graph, each tuned cold at {args.trials} trials, "
          f"{args.threads} threads; x ORT = TVM / onnxruntime fp32 (median of "
          f"{args.rounds} alternating rounds)")
    print(compare_table(rows))
    print("what legalize-tvm changes (op counts at batch 1):")
    for row in rows:
        print(f"  {row['model']:<20}{row['legalize']}")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
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
    parser.add_argument("--compare-legalize", action="store_true",
                        help="tune each model's raw and legalized graph (see above)")
    parser.add_argument("--json", help="--compare-legalize: also write the rows here")
    parser.add_argument("--caveat", default="",
                        help="--compare-legalize: a note on the machine for the JSON")
    args = parser.parse_args(argv)
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))
    if args.compare_legalize:
        work = args.workdir or tempfile.mkdtemp(prefix="edgec-bench-")
        print(f"work folder: {work}")
        compare_legalize(args, args.models.split(","), work)
        return 0

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
