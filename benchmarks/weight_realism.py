"""Whether the silero-vad and jax2tf-cnn corpus models have the weights and the robustness
of trained networks, measured against the reference models.

    python benchmarks/weight_realism.py [--models silero-vad,jax2tf-cnn,resnet18,mobilenet_v2]
        [--samples 200]

The criterion (stated before any int8 result, never tuned against one; see
:mod:`edgec.testing.corpus`):

* **weights**: every Conv/MatMul/Gemm/LSTM weight's max |w| and RMS (a trained
  network's weights are O(1), its max within a few tens of RMS);
* **confidence**: held-out accuracy against the task's labels (seed 7, disjoint from every
  fitting seed) and the share of uncertain decisions (top probability under 0.7);
* **robustness**: the decision's agreement with fp32 after white noise at 40 and 30 dB
  SQNR on the value the task reads (the features before the linear head), which must be
  at least the reference models' (ResNet-18, MobileNetV2 fitted to the texture task);
* **8-bit weights**: every weight rounded to 8 bits per output channel (LSTM: per gate
  row), activations fp32: the outputs' SQNR against fp32 must be >= 30 dB, and the
  decision's agreement; the three weights whose rounding alone costs the most, and all
  weights but the costliest rounded.

Measured here (200 held-out samples; before -> after the corrected construction of
2026-11-30; the references as they are):

    model        max |w| (worst max/RMS)   accuracy   noise 40/30 dB   8-bit weights: head logits (outputs)
    silero-vad   1.3e5 -> 7.97 (5.7 -> 5.8) 0.99 -> 0.98  1/1 -> 1/1   3.1 -> 31.9 dB (output 6.1 -> 42.5, stateN -1.6 -> 27.6)
    jax2tf-cnn   30.6 -> 0.037 (28.5 -> 7.1) 1.0 -> 1.0   1/0.97 -> 1/1 5.7 -> 42.6 dB
    resnet18     0.67 (5.4)                 1.0          1/1            22.3 dB
    mobilenet_v2 2.58 (10.4)                1.0          1/1            19.4 dB (agreement 0.995)

The VAD's stateN stays under 30 dB because of its STFT basis, a fixed DSP constant (not
fitted): rounding it alone leaves the Log of the magnitudes at 30.5 dB (the leakage of
the strong bins into weak ones, which the Log reads) and stateN at 28.5 dB; every other
weight rounded leaves stateN at 34.6 dB and the logits at 39.1 dB.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import onnx
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from edgec.quantization.qdq import with_weights_rounded  # noqa: E402
from edgec.testing.corpus.graph import run_values  # noqa: E402

REFERENCES = ("resnet18", "mobilenet_v2")


def sqnr(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(10 * np.log10((a ** 2).sum() / max(float(((a - b) ** 2).sum()), 1e-30)))


def load(name: str, samples: int):
    """model, feed (batched), labels, sigmoid head? (a VAD's one probability)."""
    if name in REFERENCES:
        from edgec.testing import models
        from edgec.testing.tasks import TextureTask, fit_to_task

        task = TextureTask()
        images, labels = task.sample(samples, 7)
        return fit_to_task(getattr(models, name)(), task), {"input": images}, labels, False
    if name == "silero-vad":
        from edgec.testing.corpus import MODELS, vad

        model = MODELS[name]().model
        audio, labels = vad.VoiceTask().sample(samples, 7)
        return model, vad._feed(audio[:, 1], vad.carried_state(model, audio[:, 0])), labels, True
    from edgec.testing.corpus import MODELS

    corpus = MODELS[name]()
    inputs, labels = corpus.data(samples, 7)
    return corpus.model, inputs, next(iter(labels.values())), False


def quantized_axis(node: onnx.NodeProto) -> int | None:
    return {"Conv": 0, "Gemm": 0, "MatMul": 1, "LSTM": 1}.get(node.op_type)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="silero-vad,jax2tf-cnn,resnet18,mobilenet_v2")
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    for name in args.models.split(","):
        model, feed, labels, sigmoid = load(name, args.samples)
        graph = model.graph
        init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        weights = {}  # initializer -> rounding axis
        for node in graph.node:
            if node.op_type in ("Conv", "Gemm", "MatMul", "LSTM"):
                for position in ((1, 2) if node.op_type == "LSTM" else (1,)):
                    if node.input[position] in init and init[node.input[position]].ndim >= 2:
                        weights[node.input[position]] = quantized_axis(node)
        worst = max(weights, key=lambda n: np.abs(init[n]).max() / np.sqrt(np.mean(init[n] ** 2)))
        largest = max(weights, key=lambda n: np.abs(init[n]).max())
        print(f"{name}: {len(labels)} held-out samples; weights: largest max|w| {np.abs(init[largest]).max():.4g} "
              f"({largest}); worst max/RMS {np.abs(init[worst]).max() / np.sqrt(np.mean(init[worst] ** 2)):.1f} "
              f"({worst}, max {np.abs(init[worst]).max():.4g}, RMS {np.sqrt(np.mean(init[worst] ** 2)):.4g})")

        last = [n for n in graph.node if n.op_type in ("MatMul", "Gemm")][-1]
        if last.op_type == "MatMul":
            weight = init[last.input[1]]
            add = next(n for n in graph.node if n.op_type == "Add" and n.input[0] == last.output[0])
            bias, logits_name = init[add.input[1]], add.output[0]
        else:  # torchvision's Gemm(transB=1)
            weight, bias, logits_name = init[last.input[1]].T, init[last.input[2]], last.output[0]
        tap = last.input[0]
        outputs = [o.name for o in graph.output]
        batch = 1 if name in REFERENCES else None  # the reference models' batch is fixed at 1
        value, logits_fp32, *reference = run_values(model, feed, [tap, logits_name, *outputs], batch=batch)

        def decide(features):
            logits = features @ weight + bias
            return (logits[:, 0] > 0).astype(np.int64) if sigmoid else logits.argmax(-1)

        logits = value @ weight + bias
        probability = 1 / (1 + np.exp(-logits[:, 0])) if sigmoid else np.exp(logits - logits.max(-1, keepdims=True))
        top = np.maximum(probability, 1 - probability) if sigmoid else (probability / probability.sum(-1, keepdims=True)).max(-1)
        decision = decide(value)
        # The reference models' heads are ridge regressions onto one-hot targets (logits near
        # 0 and 1, not softmax logits): their uncertainty is not measured this way.
        uncertain = "-" if name in REFERENCES else f"{np.mean(top < 0.7):.1%}"
        print(f"  confidence: accuracy vs labels {np.mean(decision == labels.reshape(-1)):.4f}; "
              f"uncertain (top probability < 0.7) {uncertain}")
        rng = np.random.default_rng(0)
        for db in (40, 30):
            noisy = value + rng.normal(0, np.sqrt((value ** 2).mean()) * 10 ** (-db / 20), value.shape)
            print(f"  white noise at {db} dB on '{tap}': decision agreement {np.mean(decide(noisy) == decision):.4f}")

        def rounded_run(names):
            rounded = with_weights_rounded(model, {n: weights[n] for n in names})
            value8, logits8, *out8 = run_values(rounded, feed, [tap, logits_name, *outputs], batch=batch)
            worst = min(sqnr(r, q) for r, q in zip(reference, out8))
            figures = ", ".join(f"{o} {sqnr(r, q):.1f} dB" for o, r, q in zip(outputs, reference, out8))
            head = sqnr(logits_fp32, logits8)
            decision8 = (logits8[:, 0] > 0).astype(np.int64) if sigmoid else logits8.argmax(-1)
            return worst, (f"output SQNR {figures}; the head's logits {head:.1f} dB; decision agreement "
                           f"{np.mean(decision8 == decision):.4f}")

        print(f"  8-bit per-channel weights alone: {rounded_run(set(weights))[1]}")
        alone = sorted((rounded_run({w})[0], w) for w in weights)[:3]
        print("  costliest alone: " + ", ".join(f"{w} {db:.1f} dB" for db, w in alone))
        print(f"  all but {alone[0][1]}: {rounded_run(set(weights) - {alone[0][1]})[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
