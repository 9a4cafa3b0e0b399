"""Pruning benchmark: structured prune-channels at 30 % on resnet18, mobilenet_v2 and
the trained digits model; unstructured prune-unstructured at 50 % (zipped size).

Reports FLOPs (multiply-add = 2, from edgec.ir.cost), parameters, onnxruntime
latency before/after (CPU EP, all graph optimizations, 1 intra-op thread, batch 1,
and for digits also the whole held-out set as one batch;
before and after sessions alternate in rounds on the same machine and the medians
are taken, because the host is shared and noisy), and the accuracy change measured,
not assumed: top-1 agreement with the unpruned model and labelled accuracy, for the
data-free pass and for the pass with 32 calibration samples, where it re-matches each
layer's channel statistics to the unpruned model's (the default under `edgec compile`). The CNNs
are ResNet-18 and MobileNetV2 fitted to the synthetic texture task of
``edgec.testing.tasks`` (random He backbones, BN statistics and a ridge-fitted
10-class head from task images), scored on task samples of another seed; digits is
scored on its held-out set. ``--inputs noise`` instead uses the unfitted 1000-class
models on seeded standard-normal inputs (top-1 agreement only).

    python benchmarks/pruning.py [--rounds 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
import zipfile

import numpy as np
import onnx
import onnxruntime as ort

from edgec.frontend import export_model, import_model
from edgec.ir.cost import model_cost, parameter_count
from edgec.passes.prune_channels import PruneChannels
from edgec.passes.prune_unstructured import PruneUnstructured
from edgec.passmgr.base import PassContext
from edgec.testing import models
from edgec.testing.tasks import TextureTask, fit_to_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def session(proto: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def outputs(sess: ort.InferenceSession, x: np.ndarray, batch: int) -> np.ndarray:
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def latencies(sessions: list[ort.InferenceSession], x: np.ndarray, rounds: int, per_round: int) -> list[float]:
    """Median seconds per run of each session; sessions alternate within every round."""
    name = sessions[0].get_inputs()[0].name
    times: list[list[float]] = [[] for _ in sessions]
    for s in sessions:  # warm up
        s.run(None, {name: x})
    for _ in range(rounds):
        for k, s in enumerate(sessions):
            for _ in range(per_round):
                t = time.perf_counter()
                s.run(None, {name: x})
                times[k].append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def zipped_size(proto: onnx.ModelProto) -> int:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("model.onnx", proto.SerializeToString())
    return len(buffer.getvalue())


def structured(name: str, proto: onnx.ModelProto, data: np.ndarray, labels: np.ndarray | None,
               sparsity: float, rounds: int, whole_batch: bool = False,
               calibration: dict[str, np.ndarray] | None = None) -> dict:
    model = import_model(proto)
    before = model_cost(model, dim_values={"N": 1})
    params_before = parameter_count(model)
    result = PruneChannels(sparsity=sparsity).run(model, PassContext())
    after = model_cost(model, dim_values={"N": 1})
    pruned = export_model(model)
    onnx.checker.check_model(pruned)
    s0, s1 = session(proto), session(pruned)
    batch = len(data) if whole_batch else 1
    ref, out = outputs(s0, data, batch), outputs(s1, data, batch)
    row = {
        "model": name, "sparsity": sparsity,
        "flops_before": before.flops, "flops_after": after.flops,
        "flops_reduction": 1 - after.flops / before.flops,
        "params_before": params_before, "params_after": parameter_count(model),
        "channels_removed": result.stats["channels-removed"],
        "groups_pruned": result.stats["groups-pruned"], "groups_kept": result.stats["groups-kept"],
        "top1_agreement": float(np.mean(ref.argmax(-1) == out.argmax(-1))),
        "samples": len(data),
    }
    if labels is not None:
        row["accuracy_before"] = float(np.mean(ref.argmax(-1) == labels))
        row["accuracy_after"] = float(np.mean(out.argmax(-1) == labels))
    if calibration is not None:
        # The same pruning, then the statistics recalibration the pass does when it
        # has data (what `edgec compile` gives it): same structure, same latency.
        recalibrated = import_model(proto)
        start = time.perf_counter()
        PruneChannels(sparsity=sparsity).run(recalibrated, PassContext(calibration_data=calibration))
        row["recalibration_s"] = time.perf_counter() - start
        out_r = outputs(session(export_model(recalibrated)), data, batch)
        row["top1_agreement_recalibrated"] = float(np.mean(ref.argmax(-1) == out_r.argmax(-1)))
        if labels is not None:
            row["accuracy_recalibrated"] = float(np.mean(out_r.argmax(-1) == labels))
    per_round = 20 if before.flops < 1e8 else 3
    lat0, lat1 = latencies([s0, s1], data[:1], rounds, per_round)
    row.update(latency_batch1_before_ms=lat0 * 1e3, latency_batch1_after_ms=lat1 * 1e3)
    if whole_batch:
        # At batch 1 the digits model runs in ~30 us, mostly session overhead; the
        # whole held-out set in one batch shows the compute.
        lat0, lat1 = latencies([s0, s1], data, rounds, per_round)
    row.update(latency_batch=len(data) if whole_batch else 1, latency_before_ms=lat0 * 1e3, latency_after_ms=lat1 * 1e3, latency_reduction=1 - lat1 / lat0)
    return row


def unstructured(name: str, proto: onnx.ModelProto, sparsity: float) -> dict:
    model = import_model(proto)
    result = PruneUnstructured(sparsity=sparsity).run(model, PassContext())
    dense, sparse = zipped_size(proto), zipped_size(export_model(model))
    return {"model": name, "sparsity": result.stats["sparsity"], "zipped_before": dense,
            "zipped_after": sparse, "zipped_ratio": sparse / dense}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--samples", type=int, default=200, help="evaluation samples for the CNNs")
    parser.add_argument("--inputs", choices=("task", "noise"), default="task")
    parser.add_argument("--sparsity", type=float, default=0.3)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    cnns = []
    for name in ("resnet18", "mobilenet_v2"):
        if args.inputs == "task":
            task = TextureTask()
            images, labels = task.sample(args.samples, 2)
            cnns.append((name, fit_to_task(getattr(models, name)(), task), images, labels,
                         {"input": task.sample(32, 1)[0]}))
        else:
            images = np.random.default_rng(0).standard_normal((args.samples, 3, 224, 224)).astype(np.float32)
            cnns.append((name, getattr(models, name)(), images, None,
                         {"input": np.random.default_rng(1).standard_normal((32, 3, 224, 224)).astype(np.float32)}))
    digits = onnx.load(os.path.join(ROOT, "spec_examples", "digits.onnx"))
    digits_x = np.load(os.path.join(ROOT, "spec_examples", "data", "digits.npz"))["input"]
    digits_y = np.load(os.path.join(ROOT, "spec_examples", "data", "digits-labels.npz"))["labels"]
    digits_cal = dict(np.load(os.path.join(ROOT, "spec_examples", "data", "digits-calibration.npz")))
    cases = [*cnns, ("digits", digits, digits_x, digits_y, digits_cal)]
    rows, zips = [], []
    for name, proto, x, y, cal in cases:
        rows.append(structured(name, proto, x, y, args.sparsity, args.rounds, whole_batch=name == "digits",
                               calibration=cal))
        zips.append(unstructured(name, proto, 0.5))
        print(f"done {name}", file=sys.stderr)
    print(f"prune-channels{{sparsity={args.sparsity}}}: sparsity = fraction of output channels removed "
          "from each prunable channel group; onnxruntime CPU, 1 thread, batch 1, medians")
    print(f"{'model':<13} {'GFLOPs':>15} {'FLOPs':>6} {'params (M)':>13} {'latency ms':>15} {'lat':>6} "
          f"{'top1 agree':>10} {'accuracy':>13} {'recalibrated: agree':>20} {'accuracy':>9} {'(s)':>6}")
    for r in rows:
        if r["latency_batch"] != 1:
            print(f"({r['model']}: latency of a batch of {r['latency_batch']}; at batch 1 "
                  f"{r['latency_batch1_before_ms']:.3f} -> {r['latency_batch1_after_ms']:.3f} ms)")
    for r in rows:
        acc = (f"{r['accuracy_before'] * 100:.1f}->{r['accuracy_after'] * 100:.1f}"
               if "accuracy_before" in r else "-")
        print(f"{r['model']:<13} {r['flops_before'] / 1e9:6.3f}->{r['flops_after'] / 1e9:6.3f} "
              f"{-r['flops_reduction'] * 100:5.1f}% {r['params_before'] / 1e6:5.2f}->{r['params_after'] / 1e6:5.2f} "
              f"{r['latency_before_ms']:6.2f}->{r['latency_after_ms']:6.2f} {-r['latency_reduction'] * 100:5.1f}% "
              f"{r['top1_agreement'] * 100:9.1f}% {acc:>13} {r['top1_agreement_recalibrated'] * 100:19.1f}% "
              f"{r['accuracy_recalibrated'] * 100 if 'accuracy_recalibrated' in r else float('nan'):8.1f}% "
              f"{r['recalibration_s']:6.1f}")
    print("\nprune-unstructured{sparsity=0.5}: zipped model size (deflate)")
    for z in zips:
        print(f"{z['model']:<13} {z['zipped_before'] / 1e6:7.2f} MB -> {z['zipped_after'] / 1e6:7.2f} MB "
              f"(ratio {z['zipped_ratio']:.2f}, achieved sparsity {z['sparsity']:.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"structured": rows, "unstructured": zips}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
