"""The silero-vad and jax2tf-cnn corpus models have the weights of trained networks (the
criterion of benchmarks/weight_realism.py, on fewer held-out samples): O(1) weights
whose max is within a few RMS, decisions confident against the labels and unchanged by
white noise at 40 dB on the head's input, and the head's logits >= 30 dB when every
fitted weight is rounded to 8 bits per output channel. The constructions before gave an
LSTM input max |w| of 1.3e5 (logits 3.1 dB with 8-bit weights) and a Dense head max of
30.6 at RMS 1.07 (logits 5.7 dB)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper

from edgec.quantization.qdq import with_weights_rounded
from edgec.testing import corpus
from edgec.testing.corpus import vad
from edgec.testing.corpus.graph import run_values

AXIS = {"Conv": 0, "MatMul": 1, "LSTM": 1}  # the output channel (an LSTM's gate rows)


def _sqnr(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(10 * np.log10((a ** 2).sum() / max(float(((a - b) ** 2).sum()), 1e-30)))


def _case(name: str):
    entry = corpus.MODELS[name]()
    model = entry.model
    if name == "silero-vad":
        audio, labels = vad.VoiceTask().sample(100, 7)
        feed = vad._feed(audio[:, 1], vad.carried_state(model, audio[:, 0]))
    else:
        feed, labels = entry.data(100, 7)
        (labels,) = labels.values()
    return model, feed, labels.reshape(-1)


@pytest.mark.parametrize("name", ["silero-vad", "jax2tf-cnn"])
def test_fitted_weights_are_those_of_a_trained_network(name):
    model, feed, labels = _case(name)
    graph = model.graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    weights = {node.input[i]: AXIS[node.op_type] for node in graph.node if node.op_type in AXIS
               for i in ((1, 2) if node.op_type == "LSTM" else (1,)) if init.get(node.input[i]) is not None}
    weights.pop("stft.forward_basis_buffer", None)  # the STFT's fixed DSP basis, not fitted
    for weight_name in weights:
        w = init[weight_name]
        assert np.abs(w).max() < 10, weight_name
        assert np.abs(w).max() < 12 * np.sqrt(np.mean(w ** 2)), weight_name

    matmul = next(node for node in graph.node if node.op_type == "MatMul")
    add = next(node for node in graph.node if node.op_type == "Add" and node.input[0] == matmul.output[0])
    features, logits = run_values(model, feed, [matmul.input[0], add.output[0]], batch=None)

    def decide(z):
        return (z[:, 0] > 0).astype(np.int64) if z.shape[1] == 1 else z.argmax(1)

    assert np.mean(decide(logits) == labels) >= 0.9
    rms = np.sqrt(np.mean(features ** 2))
    noisy = features + np.random.default_rng(0).normal(0, rms * 10 ** (-40 / 20), features.shape)
    assert np.mean(decide(noisy @ init[matmul.input[1]] + init[add.input[1]]) == decide(logits)) >= 0.99

    rounded = with_weights_rounded(model, weights)
    (logits8,) = run_values(rounded, feed, [add.output[0]], batch=None)
    assert _sqnr(logits, logits8) >= 30
