"""How much perturbation a model's task metric survives, against what int8 does.

    python benchmarks/int8_fragility.py dbnet --size 320
    python benchmarks/int8_fragility.py mobilenet-v3-small
    python benchmarks/int8_fragility.py resnet18        # the reference models, the yardstick
    python benchmarks/int8_fragility.py mobilenet_v2
    python benchmarks/int8_fragility.py mobilenet-v3-small --growth   # where perturbations grow

The criterion a corpus model must meet (see :mod:`edgec.testing.corpus`) is read from
the first two blocks; the int8 figures below them are diagnostics, never a target:

* **confidence**: the model's outputs against its task's labels on held-out data —
  detector: IoU of the map at 0.5 against the label map, and the share of label-positive
  pixels whose probability is uncertain (between 0.3 and 0.7); classifier: accuracy and
  the median top-1/top-2 logit gap in units of the logits' spread over the classes.
* **robustness**: the metric (IoU at 0.5 / top-1 agreement with fp32) after white noise
  at 40/30/25/20 dB SQNR on the value the task reads (the detector's pre-Sigmoid map, a
  classifier's features before its linear head), and how much the head cancels (median
  of sum |x_i w_i| / |logit| for the winning class). A corpus model must hold its metric
  under 40 dB at least as well as the reference models ResNet-18 and MobileNetV2
  (:mod:`edgec.testing.models` fitted to :class:`edgec.testing.tasks.TextureTask`).
* diagnostics: the value's SQNR and the metric with only the weights rounded to 8 bits
  per output channel (activations fp32), and the five layers whose rounding alone costs
  the most; with ``--growth``, the SQNR of every BatchNormalization / Mul / Add output
  when one early convolution's weights get white noise at 40 dB, which shows how much
  each layer amplifies a perturbation (a trained network loses well under 1 dB a layer).
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
from edgec.quantization.qdq import with_weights_rounded  # noqa: E402
from edgec.testing.corpus import MODELS  # noqa: E402
from edgec.testing.corpus.graph import run_values  # noqa: E402

REFERENCES = ("resnet18", "mobilenet_v2")


def sqnr(a, b) -> float:
    return float(10 * np.log10((a ** 2).sum() / max(float(((a - b) ** 2).sum()), 1e-30)))


def load(name: str, size: int, samples: int):
    """The model, held-out inputs and labels (seed 7, disjoint from every fitting seed)."""
    if name in REFERENCES:
        from edgec.testing import models
        from edgec.testing.tasks import TextureTask, fit_to_task

        task = TextureTask()
        images, labels = task.sample(samples, 7)
        return fit_to_task(getattr(models, name)(), task), {"input": images}, labels
    corpus = MODELS[name](**({"size": size} if size else {}))
    inputs, labels = corpus.data(samples, 7)
    return corpus.model, inputs, next(iter(labels.values()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=("dbnet", "mobilenet-v3-small") + REFERENCES)
    parser.add_argument("--size", type=int, default=0)
    parser.add_argument("--samples", type=int, default=64, help="held-out samples (default 64; dbnet: 16)")
    parser.add_argument("--growth", action="store_true", help="print per-layer perturbation growth")
    parser.add_argument("--no-int8", action="store_true", help="skip the weight-rounding diagnostics")
    args = parser.parse_args()
    samples = min(args.samples, 16) if args.model == "dbnet" and args.samples == 64 else args.samples
    model, inputs, labels = load(args.model, args.size, samples)
    graph = model.graph
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
        last = [n for n in graph.node if n.op_type in ("MatMul", "Gemm")][-1]
        if last.op_type == "MatMul":
            weight = init[last.input[1]]
            bias = init[[n for n in graph.node if n.op_type == "Add"][-1].input[1]]
        else:  # torchvision's Gemm(transB=1)
            weight, bias = init[last.input[1]].T, init[last.input[2]]
        tap, shape = last.input[0], ["N", weight.shape[0]]

        def head(v):
            return v @ weight + bias

        def metric(ref, out):
            return float(np.mean(ref.argmax(-1) == out.argmax(-1)))
    proto = onnx.ModelProto()
    proto.CopyFrom(model)
    proto.graph.output.append(onnx.helper.make_tensor_value_info(tap, onnx.TensorProto.FLOAT, shape))
    reference, value = run(proto, inputs)
    print(f"{args.model}: {len(value)} held-out samples; the task reads '{tap}' {list(value.shape)}")

    if args.model == "dbnet":
        probability, target = head(value), labels > 0.5
        uncertain = (probability > 0.3) & (probability < 0.7)
        print(f"  confidence: IoU vs labels {metric(target.astype(np.float32), probability):.4f}; uncertain "
              f"(0.3-0.7) {uncertain[target].mean():.1%} of positive pixels, {uncertain.mean():.1%} of all")
    else:
        logits = head(value)
        top = np.sort(logits, axis=-1)
        gap = (top[:, -1] - top[:, -2]) / logits.std(-1)
        winner = logits.argmax(-1)
        terms = np.abs(value * weight[:, winner].T).sum(-1)
        cancel = terms / np.maximum(np.abs(logits[np.arange(len(logits)), winner] - bias[winner]), 1e-9)
        print(f"  confidence: accuracy vs labels {np.mean(winner == labels):.4f}; median top-1/top-2 gap "
              f"{np.median(gap):.2f} logit spreads; head cancellation sum|x*w|/|x.w| median {np.median(cancel):.1f}")
    rng = np.random.default_rng(0)
    for db in (40, 30, 25, 20):
        noisy = value + rng.normal(0, np.sqrt((value ** 2).mean()) * 10 ** (-db / 20), value.shape)
        print(f"  white noise at {db} dB on it: metric {metric(reference, head(noisy)):.4f}")

    layers = {n.input[1]: (n.name, 1 if n.op_type in ("MatMul", "ConvTranspose") else 0)
              for n in graph.node if n.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm") and n.input[1] in init}
    if args.growth:
        growth(model, inputs, graph, init)
    if args.no_int8:
        return 0

    def weights_rounded(names) -> tuple[float, float]:
        out, v = run(with_weights_rounded(proto, names), inputs)
        return sqnr(value, v), metric(reference, out)

    db, m = weights_rounded({w: axis for w, (_, axis) in layers.items()})
    print(f"  every weight rounded to 8 bits per channel, activations fp32: {db:.1f} dB, metric {m:.4f}")
    single = sorted((weights_rounded({w: axis})[0], name) for w, (name, axis) in layers.items())
    for db, name in single[:5]:
        print(f"    only {name}'s weights rounded: {db:.1f} dB")
    return 0


def growth(model, inputs, graph, init) -> None:
    """SQNR along the network when the third convolution's weights get 40 dB white noise."""
    convs = [n for n in graph.node if n.op_type == "Conv"]
    start = convs[min(2, len(convs) - 1)]
    taps = [n.output[0] for n in graph.node if n.op_type in ("BatchNormalization", "Mul", "Add", "Relu", "Clip")
            and n.input[0] not in init]
    types = {o: n.op_type for n in graph.node for o in n.output}
    leading = graph.input[0].type.tensor_type.shape.dim[0]
    batch = leading.dim_value or 8  # the reference models have a fixed batch of 1
    clean = run_values(model, inputs, taps, batch=batch)
    keep = [i for i, v in enumerate(clean) if v.dtype == np.float32 and v.ndim >= 2]
    taps, clean = [taps[i] for i in keep], [clean[i] for i in keep]
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    w = init[start.input[1]]
    noisy = w + np.random.default_rng(1).normal(0, np.sqrt((w ** 2).mean()) * 1e-2, w.shape)
    for t in copy.graph.initializer:
        if t.name == start.input[1]:
            t.CopyFrom(numpy_helper.from_array(noisy.astype(np.float32), t.name))
    perturbed = run_values(copy, inputs, taps, batch=batch)
    figures = [sqnr(a, b) for a, b in zip(clean, perturbed)]
    print(f"  growth: {start.name}'s weights at {sqnr(w, noisy):.1f} dB; SQNR after each layer:")
    print("    " + " ".join(f"{types[t][:2]}{f:.0f}" for t, f in zip(taps, figures)))
    first = next((i for i, f in enumerate(figures) if f < 100), 0)
    steps = np.diff(figures[first:])
    for kind in sorted({types[t] for t in taps}):
        lost = [-s for t, s in zip(taps[first + 1:], steps) if types[t] == kind]
        if lost:
            print(f"    {kind}: {len(lost)} outputs, mean {np.mean(lost):+.2f} dB lost, worst {max(lost):+.2f} dB")
    print(f"    from {figures[first]:.1f} dB to {figures[-1]:.1f} dB over {len(figures) - first} values")


if __name__ == "__main__":
    sys.exit(main())
