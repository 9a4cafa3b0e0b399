"""8-bit against 7-bit int8 weights, scored where nothing saturates: what the
``reduce-range`` bit costs on targets whose int8 kernels accumulate in int32 (x86
with VNNI, Arm).

    python benchmarks/weight_range.py [--models digits,resnet18,mobilenet_v2,transformer_encoder]
        [--calibration 32] [--eval 500]

Every model is quantized by edgec's static int8 (Conv/MatMul/Gemm, per-channel
weights, MinMax calibration) twice, with 7-bit and with 8-bit weights; the
transformer also by ``quantize-dynamic``. Each is scored against the fp32 model on
two non-saturating paths, side by side: onnxruntime as deployed on this host (whose
int8 kernels are measured not to saturate: the probe of ``edgec.machine``), and the
exact path (``edgec.quantization.arithmetic.exact_session``: Q/DQ fusion off, the
compute in float on the exactly dequantized operands). ``weight SQNR`` is that of
the quantized weights against the fp32 weights, over every quantized weight. The
models and data are those of ``benchmarks/quantization.py``: the digits example with
its labels; ResNet-18 and MobileNetV2 fitted to the synthetic texture task
(``edgec.testing.tasks``), calibrated on seed 1 and scored on seed 2 with the task's
labels; the transformer on standard-normal inputs.

Measured here (2-vCPU AMD EPYC with AVX-512 VNNI, onnxruntime 1.32.0, defaults:
32 calibration and 500 evaluation samples; SQNR of the outputs against fp32 in dB,
on this host / on the exact path):

    model          weights   weight SQNR   output SQNR     top-1 agreement   task accuracy (fp32)
    digits         7 -> 8 bit  38.5 -> 44.5  37.5 -> 43.3    100 -> 100 %     97.49 -> 97.49 % (97.49)
    resnet18       7 -> 8 bit  35.6 -> 41.7  16.5 -> 19.6    100 -> 99.8 %    99.6 -> 99.8 % (99.6)
    mobilenet_v2   7 -> 8 bit  39.3 -> 45.4  12.8 -> 18.6    99.8 -> 99.4 %   99.4 -> 99.8 % (99.6)
    transformer    7 -> 8 bit  42.1 -> 48.1  42.0 -> 43.3    98.8 -> 98.6 %   -
    (dynamic)      7 -> 8 bit  -             43.0 -> 44.7    99.0 -> 99.2 %   -

The eighth bit buys 6 dB of weight SQNR everywhere; at the outputs, 3-6 dB on the
CNNs and the digits model, 1.3-1.7 dB on the transformer (whose noise is dominated by
its activations). Host and exact path agree within 0.1 dB (the host does not
saturate); top-1 agreement moves by a sample or two of 500 either way.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import onnx

from edgec import machine
from edgec.frontend import export_model, import_model
from edgec.metrics import evaluate
from edgec.passmgr.base import PassContext
from edgec.passes.quantize_dynamic import QuantizeDynamic
from edgec.quantization import QuantConfig, quantize_static
from edgec.quantization.arithmetic import exact_session
from edgec.quantization.observe import feed_batches, run
from edgec.testing import models as M
from edgec.testing.tasks import TextureTask, fit_to_task

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "spec_examples", "data")


def load(name: str, calibration: int, evaluation: int):
    if name == "digits":
        proto = onnx.load(os.path.join(HERE, "..", "spec_examples", "digits.onnx"))
        cal = dict(np.load(os.path.join(DATA, "digits-calibration.npz")))
        ev = dict(np.load(os.path.join(DATA, "digits.npz")))
        labels = np.load(os.path.join(DATA, "digits-labels.npz"))["labels"]
        return proto, cal, ev, labels
    if name in ("resnet18", "mobilenet_v2"):
        task = TextureTask()
        proto = fit_to_task(getattr(M, name)(), task)
        (cal, _), (ev, labels) = task.sample(calibration, 1), task.sample(evaluation, 2)
        return proto, {"input": cal}, {"input": ev}, labels
    proto = getattr(M, name)()
    vi = proto.graph.input[0]
    shape = [d.dim_value for d in vi.type.tensor_type.shape.dim][1:]
    cal = {vi.name: np.random.default_rng(1).standard_normal((calibration, *shape)).astype(np.float32)}
    ev = {vi.name: np.random.default_rng(2).standard_normal((evaluation, *shape)).astype(np.float32)}
    return proto, cal, ev, None


def run_exact(proto: onnx.ModelProto, samples: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = exact_session(proto)
    names = [o.name for o in session.get_outputs()]
    parts: list[list[np.ndarray]] = [[] for _ in names]
    for feed in feed_batches(list(proto.graph.input), samples):
        for i, out in enumerate(session.run(names, feed)):
            parts[i].append(out)
    return [np.concatenate(p, axis=0) for p in parts]


def weight_sqnr(proto: onnx.ModelProto, quantized: onnx.ModelProto) -> float:
    """SQNR of the dequantized int8 weights against the fp32 weights they replace (after
    BatchNormalization folding, which quantization does first), pooled over all."""
    from onnx import numpy_helper

    from edgec.quantization.qdq import fold_batchnorms
    folded = import_model(proto)
    fold_batchnorms(folded)
    originals = {t.name: numpy_helper.to_array(t) for t in export_model(folded).graph.initializer}
    inits = {t.name: numpy_helper.to_array(t) for t in quantized.graph.initializer}
    signal = noise = 0.0
    for node in quantized.graph.node:
        name = node.input[0]
        if node.op_type != "DequantizeLinear" or name not in inits or inits[name].dtype != np.int8:
            continue
        original = originals.get(name[:-len("_quantized")] if name.endswith("_quantized") else name)
        if original is None:
            continue
        scale = inits[node.input[1]].astype(np.float64)
        if scale.ndim == 1:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * original.ndim
            shape[axis] = -1
            scale = scale.reshape(shape)
        w = inits[name].astype(np.float64) * scale
        signal += float(np.sum(original.astype(np.float64) ** 2))
        noise += float(np.sum((original.astype(np.float64) - w) ** 2))
    return 10 * np.log10(signal / noise) if noise > 0 else float("nan")


def scores(reference, candidate, labels):
    out = {"sqnr": evaluate("sqnr", 0, reference, candidate).value,
           "agree": evaluate("top1-agreement", 0, reference, candidate).value,
           "maxerr": evaluate("max-abs-error", 0, reference, candidate).value}
    if labels is not None:
        result = evaluate("accuracy", 0, reference, candidate, labels)
        out["acc"], out["acc_ref"] = result.value, result.reference_value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,resnet18,mobilenet_v2,transformer_encoder")
    parser.add_argument("--calibration", type=int, default=32)
    parser.add_argument("--eval", type=int, default=500)
    args = parser.parse_args()
    import onnxruntime as ort
    saturates = machine.onnxruntime_saturates()
    print(f"onnxruntime {ort.__version__}; this host's int8 kernels "
          f"{'SATURATE' if saturates else 'do not saturate' if saturates is False else 'unmeasured'} "
          f"with 8-bit weights (probe); CPU flags {', '.join(host.features())}; python "
          f"{sys.version.split()[0]}")
    header = (f"{'model':20s} {'variant':24s} {'w SQNR':>7s} | {'host SQNR':>9s} {'agree':>7s} "
              f"{'max|err|':>9s} {'acc':>7s} | {'exact SQNR':>10s} {'agree':>7s} {'max|err|':>9s} {'acc':>7s}")
    print(header)
    for name in args.models.split(","):
        start = time.perf_counter()
        proto, cal, ev, labels = load(name, args.calibration, args.eval)
        reference = run(proto, ev)
        variants = {}
        for bits in (7, 8):
            model = import_model(proto)
            quantize_static(model, cal, QuantConfig(reduce_range=bits == 7))
            variants[f"static int8, {bits}-bit w"] = export_model(model)
        if name == "transformer_encoder":
            for bits in (7, 8):
                model = import_model(proto)
                QuantizeDynamic(reduce_range=bits == 7).run(model, PassContext())
                variants[f"dynamic int8, {bits}-bit w"] = export_model(model)
        for label, q in variants.items():
            h = scores(reference, run(q, ev), labels)
            e = scores(reference, run_exact(q, ev), labels)
            wq = f"{weight_sqnr(proto, q):7.2f}" if label.startswith("static") else f"{'-':>7s}"

            def acc(s):
                return f"{100 * s['acc']:6.2f}%" if "acc" in s else f"{'-':>7s}"
            print(f"{name:20s} {label:24s} {wq} | {h['sqnr']:9.2f} {100 * h['agree']:6.2f}% "
                  f"{h['maxerr']:9.4g} {acc(h)} | {e['sqnr']:10.2f} {100 * e['agree']:6.2f}% "
                  f"{e['maxerr']:9.4g} {acc(e)}", flush=True)
        if labels is not None:
            print(f"{name:20s} {'fp32 accuracy':24s} {100 * scores(reference, reference, labels)['acc_ref']:.2f}%"
                  f"  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
