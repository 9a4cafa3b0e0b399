"""Quantization benchmark: size, onnxruntime latency and accuracy of edgec's int8
(Conv/MatMul/Gemm policy and all-ops policy) against fp32 and against onnxruntime's
own ``quantize_static`` (QDQ, per-channel, same calibration data), in the same run;
dynamic int8 for the transformer; weight-only int8/int4 and fp16 sizes; the digits
model's labelled accuracy; and the sensitivity / mixed-precision demonstration.

    python benchmarks/quantization.py [--models resnet18,mobilenet_v2,transformer_encoder,digits]
        [--calibration 32] [--eval 100] [--rounds 7]

The CNNs (``--inputs task``, the default) are ResNet-18 and MobileNetV2 with random He
backbones whose BatchNorm statistics come from the images of a synthetic 10-class
texture task and whose classifier is fitted to it by ridge regression
(``edgec.testing.tasks``): like trained networks, they are confident on their data,
so top-1 agreement and accuracy measure what quantization did. Calibration samples
(seed 1) and evaluation samples (seed 2) are drawn the same way from that task, and
the task's labels give an accuracy column. ``--inputs noise`` instead feeds the
unfitted 1000-class models seeded standard-normal inputs (seed 1 to calibrate, seed 2
to evaluate), where the logits are nearly flat and top-1 flips under any perturbation.
The transformer is always fed standard-normal inputs. Sizes are also printed for the
unfitted 1000-class CNNs, the shape torchvision exports. Latency: onnxruntime CPU EP, all
graph optimizations, one intra-op thread (``--threads``); the median over ``--rounds`` rounds, each round
timing every variant in turn (so machine noise hits them alike).
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

from edgec.frontend import export_model, import_model
from edgec.metrics import evaluate
from edgec.passmgr.base import PassContext
from edgec.passes.convert_fp16 import ConvertFp16
from edgec.passes.quantize_dynamic import QuantizeDynamic
from edgec.passes.quantize_weights import QuantizeWeights
from edgec.quantization import QuantConfig, layer_sensitivity, mixed_precision, quantize_static
from edgec.quantization.demo import outlier_mlp
from edgec.quantization.observe import run
from edgec.testing import models as M
from edgec.testing.tasks import TextureTask, fit_to_task

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "spec_examples", "data")


def load_model(name: str):
    if name == "digits":
        proto = onnx.load(os.path.join(HERE, "..", "spec_examples", "digits.onnx"))
        cal = dict(np.load(os.path.join(DATA, "digits-calibration.npz")))
        ev = dict(np.load(os.path.join(DATA, "digits.npz")))
        labels = np.load(os.path.join(DATA, "digits-labels.npz"))["labels"]
        return proto, cal, ev, labels
    if name in ("resnet18", "mobilenet_v2") and ARGS.inputs == "task":
        task = TextureTask()
        start = time.perf_counter()
        proto = fit_to_task(getattr(M, name)(), task)
        print(f"{name}: fitted to {task} in {time.perf_counter() - start:.1f} s; "
              f"held-out accuracy {dict((p.key, p.value) for p in proto.metadata_props)['edgec.testing.task_accuracy']}",
              flush=True)
        (cal, _), (ev, labels) = task.sample(ARGS.calibration, 1), task.sample(ARGS.eval, 2)
        return proto, {"input": cal}, {"input": ev}, labels
    proto = getattr(M, name)()
    vi = proto.graph.input[0]
    shape = [d.dim_value for d in vi.type.tensor_type.shape.dim][1:]
    cal = {vi.name: np.random.default_rng(1).standard_normal((ARGS.calibration, *shape)).astype(np.float32)}
    ev = {vi.name: np.random.default_rng(2).standard_normal((ARGS.eval, *shape)).astype(np.float32)}
    return proto, cal, ev, None


def size(proto: onnx.ModelProto) -> int:
    return len(proto.SerializeToString())


def edgec_int8(proto, cal, config: QuantConfig):
    model = import_model(proto)
    start = time.perf_counter()
    quantize_static(model, cal, config)
    return export_model(model), time.perf_counter() - start


def ort_int8(proto, cal, reduce_range: bool):
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static as ort_quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            count = len(next(iter(cal.values())))
            self.feeds = iter([{k: v[i:i + 1] for k, v in cal.items()} for i in range(count)])

        def get_next(self):
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        onnx.save(proto, src)
        start = time.perf_counter()
        ort_quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
        elapsed = time.perf_counter() - start
        return onnx.load(dst), elapsed


def ort_dynamic(proto):
    from onnxruntime.quantization import QuantType, quantize_dynamic
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        onnx.save(proto, src)
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
        return onnx.load(dst)


def latencies(variants: dict[str, onnx.ModelProto], feed: dict[str, np.ndarray]) -> dict[str, float]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if ARGS.threads:
        options.intra_op_num_threads = ARGS.threads
        options.inter_op_num_threads = 1
    sessions = {k: ort.InferenceSession(p.SerializeToString(), options, providers=["CPUExecutionProvider"])
                for k, p in variants.items()}
    for s in sessions.values():
        for _ in range(3):
            s.run(None, feed)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(ARGS.rounds):
        for k, s in sessions.items():
            runs = []
            for _ in range(ARGS.runs):
                t = time.perf_counter()
                s.run(None, feed)
                runs.append(time.perf_counter() - t)
            times[k].append(statistics.median(runs))
    return {k: statistics.median(v) * 1000 for k, v in times.items()}


def scores(reference, candidate, labels):
    agree = evaluate("top1-agreement", 0, reference, candidate)
    err = evaluate("max-abs-error", 0, reference, candidate)
    sqnr = evaluate("sqnr", 0, reference, candidate)
    cos = evaluate("cosine-similarity", 0, reference, candidate)
    out = {"agree": agree.value, "maxerr": err.value, "sqnr": sqnr.value, "cos": cos.value}
    if labels is not None:
        out["acc"] = evaluate("accuracy", 0, reference, candidate, labels).value
        out["acc_ref"] = evaluate("accuracy", 0, reference, candidate, labels).reference_value
    return out


def bench_model(name: str) -> None:
    proto, cal, ev, labels = load_model(name)
    print(f"\n=== {name}: calibration {len(next(iter(cal.values())))} samples, evaluation "
          f"{len(next(iter(ev.values())))} samples ===", flush=True)
    variants: dict[str, onnx.ModelProto] = {"fp32": proto}
    seconds: dict[str, float] = {}
    variants["edgec int8 (Conv/MatMul/Gemm)"], seconds["edgec int8 (Conv/MatMul/Gemm)"] = edgec_int8(proto, cal, QuantConfig())
    variants["edgec int8 (all ops)"], seconds["edgec int8 (all ops)"] = edgec_int8(proto, cal, QuantConfig(ops=("all",)))
    variants["ort quantize_static"], seconds["ort quantize_static"] = ort_int8(proto, cal, reduce_range=False)
    variants["ort quantize_static reduce_range"], seconds["ort quantize_static reduce_range"] = ort_int8(proto, cal, reduce_range=True)
    if name == "transformer_encoder":
        for fmt in ("contrib", "standard"):
            m = import_model(proto)
            QuantizeDynamic(format=fmt).run(m, PassContext())
            variants[f"edgec dynamic int8 ({fmt})"] = export_model(m)
        variants["ort quantize_dynamic"] = ort_dynamic(proto)
    reference = run(proto, ev)
    feed = {k: v[:1] for k, v in ev.items()}
    lat = latencies(variants, feed)
    fp32_size = size(proto)
    print(f"{'variant':36s} {'size KB':>9s} {'% fp32':>7s} {'lat ms':>8s} {'x fp32':>7s} {'top1 agr':>8s} "
          f"{'max|err|':>9s} {'SQNR dB':>8s} {'cosine':>8s} {'quant s':>8s}" + ("  accuracy" if labels is not None else ""))
    for key, p in variants.items():
        s = scores(reference, run(p, ev), labels)
        line = (f"{key:36s} {size(p) / 1024:9.1f} {100 * size(p) / fp32_size:6.1f}% {lat[key]:8.3f} "
                f"{lat['fp32'] / lat[key]:6.2f}x {100 * s['agree']:7.2f}% {s['maxerr']:9.4g} "
                f"{s['sqnr']:8.1f} {s['cos']:8.5f} {seconds.get(key, 0):8.2f}")
        if labels is not None:
            line += f"  {100 * s['acc']:.2f}% (fp32 {100 * s['acc_ref']:.2f}%)"
        print(line, flush=True)
    ratio = lat["edgec int8 (Conv/MatMul/Gemm)"] / lat["ort quantize_static"]
    ratio_all = lat["edgec int8 (all ops)"] / lat["ort quantize_static"]
    print(f"latency edgec int8 / ort quantize_static: Conv/MatMul/Gemm {ratio:.3f}, all ops {ratio_all:.3f} "
          f"(<= 1 means edgec is as fast or faster)")
    for label, p in [("weight-only int8", QuantizeWeights(bits=8)), ("weight-only int4 (Conv int8 <op21)", QuantizeWeights(bits=4)),
                     ("fp16 (fp32 islands)", ConvertFp16())]:
        m = import_model(proto)
        p.run(m, PassContext())
        q = export_model(m)
        s = scores(reference, run(q, ev), labels)
        print(f"{label:36s} {size(q) / 1024:9.1f} {100 * size(q) / fp32_size:6.1f}%   max|err| {s['maxerr']:.4g}  "
              f"SQNR {s['sqnr']:.1f} dB  top1 {100 * s['agree']:.2f}%", flush=True)


def bench_sizes(names: list[str]) -> None:
    """int8 size of the unfitted 1000-class CNNs (the shape torchvision exports)."""
    if not names:
        return
    print("\n=== int8 size of the 1000-class CNNs (random weights; 8 standard-normal calibration samples) ===")
    for name in names:
        proto = getattr(M, name)()
        vi = proto.graph.input[0]
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim][1:]
        cal = {vi.name: np.random.default_rng(1).standard_normal((8, *shape)).astype(np.float32)}
        line = f"{name:14s} fp32 {size(proto) / 1024:9.1f} KB"
        for label, config in (("Conv/MatMul/Gemm", QuantConfig()), ("all ops", QuantConfig(ops=("all",)))):
            q, _ = edgec_int8(proto, cal, config)
            line += f" | edgec int8 ({label}) {size(q) / 1024:9.1f} KB = {100 * size(q) / size(proto):5.2f}%"
        q, _ = ort_int8(proto, cal, reduce_range=True)
        line += f" | ort quantize_static {100 * size(q) / size(proto):5.2f}%"
        print(line, flush=True)


def bench_sensitivity() -> None:
    print("\n=== sensitivity + mixed precision: outlier_mlp (one hidden channel 1000x), "
          "tolerance SQNR >= 30 dB, then top-1 agreement within 1 % ===")
    proto = outlier_mlp()
    cal = {"input": np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)}
    ev = {"input": np.random.default_rng(2).standard_normal((1000, 64)).astype(np.float32)}
    model = import_model(proto)
    for name, score in layer_sensitivity(model, cal, "sqnr", eval_samples=ev):
        print(f"  only {name:16s} quantized: SQNR {score:6.1f} dB")
    for metric, tolerance in (("sqnr", "30dB"), ("top1-agreement", "1%")):
        config, report = mixed_precision(model, cal, metric, tolerance, eval_samples=ev)
        for step in report.steps:
            print(f"  [{metric} {tolerance}] fp32 layers {step['fp32'] or '(none)'}: {step['detail']} -> "
                  f"{'held' if step['held'] else 'missed'}")
        print(f"  [{metric} {tolerance}] kept fp32: {report.kept_fp32}; tolerance held: {report.held}")


def main() -> None:
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,mobilenet_v2,transformer_encoder,digits")
    parser.add_argument("--calibration", type=int, default=32)
    parser.add_argument("--eval", type=int, default=500)
    parser.add_argument("--inputs", choices=("task", "noise"), default="task",
                        help="what the CNNs are fitted to and fed (see the module docstring)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="onnxruntime intra-op threads for the latency column (0: its default); "
                             "one thread is the least disturbed by other work on a shared machine")
    parser.add_argument("--no-sensitivity", action="store_true")
    ARGS = parser.parse_args()
    print(f"onnxruntime {ort.__version__}, {os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    for name in ARGS.models.split(","):
        bench_model(name)
    if ARGS.inputs == "task":
        bench_sizes([m for m in ARGS.models.split(",") if m in ("resnet18", "mobilenet_v2")])
    if not ARGS.no_sensitivity:
        bench_sensitivity()


ARGS: argparse.Namespace
if __name__ == "__main__":
    main()
