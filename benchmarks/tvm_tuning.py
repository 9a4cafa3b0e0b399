"""TVM untuned vs MetaSchedule-tuned latency against onnxruntime fp32, measured in one run.

For each model: onnxruntime (CPU EP, all graph optimizations, the same thread count),
an untuned TVM build, a tuned TVM build at each trial budget (tuning wall time), and a
rebuild with the warm database (wall time, trials run: must be 0). Tuning databases
live under --cache-dir (default .cache/edgec), per target, so later runs reuse them;
each budget after the first gets its own sub-folder so it starts cold.

    python benchmarks/tvm_tuning.py --models resnet18,mobilenet_v2,transformer_encoder --trials 64
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

from edgec.backends.base import BuildOptions, LatencyStats, time_calls
from edgec.backends.tvm import TVMBackend
from edgec.dsl import load_spec
from edgec.testing import models

MODELS = {
    "resnet18": models.resnet18,
    "mobilenet_v2": models.mobilenet_v2,
    "transformer_encoder": models.transformer_encoder,
}
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def random_inputs(model, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    initializers = {init.name for init in model.graph.initializer}
    inputs = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        shape = [dim.dim_value or 1 for dim in value.type.tensor_type.shape.dim]
        inputs[value.name] = rng.standard_normal(shape).astype(np.float32)
    return inputs


def onnxruntime_latency(model, inputs, threads: int) -> LatencyStats:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return LatencyStats.from_times(time_calls(lambda: session.run(None, inputs)), "host")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def bench_model(name: str, budgets: list[int], cache_dir: str, threads: int) -> dict:
    model = MODELS[name]()
    target = load_spec(os.path.join(HERE, "spec_examples", "host.edge")).target
    inputs = random_inputs(model)
    row: dict = {"model": name, "threads": threads}
    row["ort_ms"] = onnxruntime_latency(model, inputs, threads).p50 * 1e3
    log(f"{name}: onnxruntime {row['ort_ms']:.2f} ms")

    backend = TVMBackend()
    measure_options = BuildOptions(cache_dir=cache_dir, threads=threads)
    with tempfile.TemporaryDirectory() as scratch:
        untuned = os.path.join(scratch, "untuned")
        result = backend.build(model, target, untuned, BuildOptions(cache_dir=cache_dir))
        row["untuned_ms"] = backend.measure(untuned, result.details, inputs,
                                            measure_options).p50 * 1e3
        log(f"{name}: TVM untuned {row['untuned_ms']:.1f} ms")
        row["tuned"] = []
        for index, trials in enumerate(budgets):
            # The first budget tunes into the shared database; the others start cold.
            db_root = cache_dir if index == 0 else os.path.join(cache_dir, f"trials-{trials}")
            progress = lambda stage, done, total, message: log(  # noqa: E731
                f"  {name} [{stage} {done}/{total}] {message}")
            tuned_dir = os.path.join(scratch, f"tuned-{trials}")
            start = time.perf_counter()
            result = backend.build(model, target, tuned_dir, BuildOptions(
                cache_dir=db_root, tuning_trials=trials, progress=progress))
            first_seconds = time.perf_counter() - start
            tuning = result.details["tuning"]
            latency = backend.measure(tuned_dir, result.details, inputs, measure_options)
            start = time.perf_counter()
            again = TVMBackend().build(model, target, os.path.join(scratch, "again"),
                                       BuildOptions(cache_dir=db_root, tuning_trials=trials))
            warm_seconds = time.perf_counter() - start
            entry = {"trials": trials, "trials_run": tuning["trials_run"],
                     "tasks": tuning["tasks_total"], "tasks_untuned": tuning["tasks_untuned"],
                     "build_s": first_seconds, "tuned_ms": latency.p50 * 1e3,
                     "warm_build_s": warm_seconds,
                     "warm_trials_run": again.details["tuning"]["trials_run"],
                     "cost_model": tuning["cost_model"]}
            row["tuned"].append(entry)
            log(f"{name}: {trials} trials: {entry}")
    return row


def table(rows: list[dict]) -> str:
    lines = ["| model | ort fp32 ms | TVM untuned ms (x ort) | trials (run) | tasks (untuned) "
             "| tuning build s | TVM tuned ms (x ort) | warm rebuild s (trials) |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        ort_ms = row["ort_ms"]
        for entry in row["tuned"] or [None]:
            cells = [row["model"], f"{ort_ms:.2f}",
                     f"{row['untuned_ms']:.1f} ({row['untuned_ms'] / ort_ms:.1f}x)"]
            if entry is None:
                cells += ["-"] * 5
            else:
                cells += [f"{entry['trials']} ({entry['trials_run']})",
                          f"{entry['tasks']} ({entry['tasks_untuned']})",
                          f"{entry['build_s']:.0f}",
                          f"{entry['tuned_ms']:.2f} ({entry['tuned_ms'] / ort_ms:.1f}x)",
                          f"{entry['warm_build_s']:.1f} ({entry['warm_trials_run']})"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--trials", default="64", help="comma-separated trial budgets")
    parser.add_argument("--cache-dir", default=os.path.join(HERE, ".cache", "edgec"))
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    budgets = [int(value) for value in args.trials.split(",") if value]
    rows = []
    for name in args.models.split(","):
        rows.append(bench_model(name, budgets, args.cache_dir, args.threads))
        if args.json:
            with open(args.json, "w") as out:
                json.dump(rows, out, indent=2)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
