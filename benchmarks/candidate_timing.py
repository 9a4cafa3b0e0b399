"""Two identical candidates timed side by side, the way the planner confirms an int8
winner against fp32 (`edgec.planner.plan._interleaved`): do they time alike?

    python benchmarks/candidate_timing.py [--models convs,mobilenet-v3-small,crnn,jax2tf-cnn]
        [--repeats 5] [--threads 2]

``convs`` is six 3x3 convolutions, 32 channels at 56x56 (about 5 ms on 2 cores); the
others are ``edgec.testing.corpus`` models. Each model is written as an ort artifact with the deployment settings the ort backend
ships (onnxruntime's pool threads spin after each run), and the same folder is given
as both candidates. "both alive" is the planner's former way: two sessions loaded and
run in turn, call by call; "one at a time" is `_interleaved` now: alternating rounds,
each candidate loaded, warmed, timed for a block of runs and released. Printed: the
median over repeats of second/first, and the spread; identical candidates should give
1.00 within noise. "first/alone" compares the first candidate's time with the same
artifact measured alone (`OrtBackend.measure`, as each candidate is measured first).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from types import SimpleNamespace

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402
import onnx  # noqa: E402

from edgec.backends import get_backend  # noqa: E402
from edgec.backends.base import BuildOptions  # noqa: E402
from edgec.planner import plan  # noqa: E402
from edgec.planner.evaluate import Attempt  # noqa: E402
from edgec.planner.search import Configuration, Evaluation  # noqa: E402
from edgec.testing.models import conv_stack  # noqa: E402

# The former confirmation: both sessions alive, run in turn call by call.
FORMER_RUNS = plan.CONFIRM_ROUNDS * plan.CONFIRM_RUNS


def both_alive(ctx, a: Attempt, b: Attempt) -> tuple[float, float]:
    runners = [get_backend("ort").load(t.folder, t.result.details) for t in (a, b)]
    feeds = [{k: ctx.bench_inputs[k] for k in r.input_names} for r in runners]
    for runner, feed in zip(runners, feeds):
        runner.run(feed)
    times: list[list[float]] = [[], []]
    for _ in range(FORMER_RUNS):
        for i, (runner, feed) in enumerate(zip(runners, feeds)):
            start = time.perf_counter()
            runner.run(feed)
            times[i].append(time.perf_counter() - start)
    return statistics.median(times[0]) * 1e3, statistics.median(times[1]) * 1e3


def artifact(name: str, folder: str, threads: int):
    if name == "convs":
        model = conv_stack()
        feed = {"x": np.random.default_rng(1).standard_normal((1, 32, 56, 56)).astype(np.float32)}
    else:
        from edgec.testing.corpus import MODELS

        corpus = MODELS[name]()
        model = corpus.model
        inputs, _ = corpus.data(2, 7)
        feed = {k: np.asarray(v[0]) if corpus.layout == "per-sample" else v[0:1]
                for k, v in inputs.items()}
    onnx.save(model, os.path.join(folder, "model.onnx"))
    settings = get_backend("ort").settings(BuildOptions(cache_dir=folder, threads=threads))
    config = Configuration(f"{name} fp32", "fp32", "", "", "ort")
    result = SimpleNamespace(details={"model": "model.onnx", "settings": settings})
    attempt = Attempt(Evaluation(config), folder, result=result)
    return attempt, SimpleNamespace(bench_inputs=feed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="convs,mobilenet-v3-small,crnn,jax2tf-cnn")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"{'model':<20} {'way':<14} {'first ms':>9} {'first/alone':>12} {'second/first':>13} "
          f"{'range':>12}")
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory() as folder:
            attempt, ctx = artifact(name, folder, args.threads)
            results = {"both alive": [], "one at a time": []}
            alone = []
            options = BuildOptions(cache_dir=folder, threads=args.threads)
            for _ in range(args.repeats):  # the ways alternate, so load hits them alike
                alone.append(get_backend("ort").measure(
                    folder, attempt.result.details, ctx.bench_inputs, options).percentile(50) * 1e3)
                results["both alive"].append(both_alive(ctx, attempt, attempt))
                results["one at a time"].append(plan._interleaved(ctx, attempt, attempt))
            for way, pairs in results.items():
                ratios = sorted(b / a for a, b in pairs)
                first = statistics.median(a for a, _ in pairs)
                print(f"{name:<20} {way:<14} {first:9.3f} {first / statistics.median(alone):12.2f} "
                      f"{statistics.median(ratios):13.2f} {ratios[0]:5.2f}-{ratios[-1]:.2f}",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
