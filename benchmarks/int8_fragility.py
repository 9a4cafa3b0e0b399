"""How much perturbation a corpus model's task metric survives, against what int8 does.

    python benchmarks/int8_fragility.py dbnet --size 320
    python benchmarks/int8_fragility.py mobilenet-v3-small

For the value the task reads (the detector's pre-Sigmoid map, the classifier's 1280-d
features before its MatMul head) it prints: the metric (IoU at 0.5 / top-1 agreement
with fp32) after white noise at 40/30/25/20 dB SQNR on that value; the value's SQNR and
the metric with only the weights rounded to 8 bits per output channel (no activation
quantization at all); and the five layers whose weight rounding alone costs the most.
A metric that misses 1 % at 40 dB is not holdable by any int8 configuration.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import onnx
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from edgec.quantization.observe import run  # noqa: E402
from edgec.quantization.qdq import quantize_weight  # noqa: E402
from edgec.testing.corpus import MODELS  # noqa: E402


def sqnr(a, b) -> float:
    return float(10 * np.log10((a ** 2).sum() / max(float(((a - b) ** 2).sum()), 1e-30)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=("dbnet", "mobilenet-v3-small"))
    parser.add_argument("--size", type=int, default=0)
    parser.add_argument("--samples", type=int, default=16)
    args = parser.parse_args()
    corpus = MODELS[args.model](**({"size": args.size} if args.size else {}))
    inputs, _ = corpus.data(args.samples, 7)
    graph = corpus.model.graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    if args.model == "dbnet":
        tap = [n for n in graph.node if n.op_type == "Sigmoid"][-1].input[0]
        size = inputs["x"].shape[-1]
        shape = ["N", 1, size, size]

        def head(v):
            return 1 / (1 + np.exp(-v))

        def metric(ref, out):
            a, b = ref > 0.5, out > 0.5
            return float(np.mean([(x & y).sum() / max(1, (x | y).sum()) for x, y in zip(a, b)]))
    else:
        matmul = [n for n in graph.node if n.op_type == "MatMul"][0]
        add = [n for n in graph.node if n.op_type == "Add"][-1]
        tap, shape = matmul.input[0], ["N", init[matmul.input[1]].shape[0]]

        def head(v):
            return v @ init[matmul.input[1]] + init[add.input[1]]

        def metric(ref, out):
            return float(np.mean(ref.argmax(-1) == out.argmax(-1)))
    proto = onnx.ModelProto()
    proto.CopyFrom(corpus.model)
    proto.graph.output.append(onnx.helper.make_tensor_value_info(tap, onnx.TensorProto.FLOAT, shape))
    reference, value = run(proto, inputs)
    print(f"{args.model}: the task reads '{tap}' {list(value.shape)}")
    rng = np.random.default_rng(0)
    for db in (40, 30, 25, 20):
        noisy = value + rng.normal(0, np.sqrt((value ** 2).mean()) * 10 ** (-db / 20), value.shape)
        print(f"  white noise at {db} dB on it: metric {metric(reference, head(noisy)):.4f}")

    def weights_rounded(names) -> tuple[float, float]:
        copy = onnx.ModelProto()
        copy.CopyFrom(proto)
        for t in copy.graph.initializer:
            if t.name in names:
                w = numpy_helper.to_array(t)
                axis = names[t.name]
                q, scale = quantize_weight(w, axis, 8)
                shape = [1] * w.ndim
                shape[axis] = -1
                t.CopyFrom(numpy_helper.from_array((q * scale.reshape(shape)).astype(np.float32), t.name))
        out, v = run(copy, inputs)
        return sqnr(value, v), metric(reference, out)

    layers = {n.input[1]: (n.name, 1 if n.op_type in ("MatMul", "ConvTranspose") else 0)
              for n in graph.node if n.op_type in ("Conv", "ConvTranspose", "MatMul") and n.input[1] in init}
    db, m = weights_rounded({w: axis for w, (_, axis) in layers.items()})
    print(f"  every weight rounded to 8 bits per channel, activations fp32: {db:.1f} dB, metric {m:.4f}")
    single = sorted((weights_rounded({w: axis})[0], name) for w, (name, axis) in layers.items())
    for db, name in single[:5]:
        print(f"    only {name}'s weights rounded: {db:.1f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
