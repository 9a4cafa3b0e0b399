"""An LSTM voice-activity detector written as the PyTorch exporter writes Silero VAD,
fitted to a noise-versus-voiced-tone task.

Inputs ``input`` [N, 512] audio, ``state`` [2, N, 128] (LSTM h and c), ``sr`` an int64
scalar. An ``If`` on ``sr == 16000`` picks the framing: at 16 kHz the chunk is
decimated by two (``Slice`` with step 2), at 8 kHz it is taken as it is; both give
8 kHz audio. Then reflect ``Pad`` → STFT as a strided ``Conv`` with a windowed cos/sin
basis → magnitude → ``Log`` → Conv/Relu encoder → ``ReduceMean`` over time → one
``LSTM`` step from ``state`` → ``Relu`` → ``MatMul``/``Add`` → ``Sigmoid``. Outputs
``output`` [N, 1] (voice probability) and ``stateN`` [2, N, 128].

Weights as training leaves them (``benchmarks/weight_realism.py`` measures them): the
reparam convs hold BatchNorms folded in with the task audio's statistics, the LSTM sees
the pooled features centred (into its gate biases) and scaled by one factor, and the
head is fitted by cross-entropy with weight decay picked on held-out chunks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgec.testing.corpus.graph import (TORCH, ExporterGraph, batchnorm_params, decayed_head, float_input, run_values,
                                        set_initializer)

OPSET = 16
SAMPLES = 512
HIDDEN = 128
WINDOW, HOP = 64, 32
BINS = WINDOW // 2 + 1


@dataclass(frozen=True)
class VoiceTask:
    """Pairs of consecutive chunks [2, 512] of one stream: noise (label 0) or noise plus a
    voiced tone — a fundamental of 100–400 Hz with decaying harmonics — (label 1)."""

    sample_rate: int = 16000
    seed: int = 0

    def sample(self, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, seed, 0x5AD])
        labels = rng.integers(0, 2, count)
        t = np.arange(2 * SAMPLES) / self.sample_rate
        audio = np.empty((count, 2, SAMPLES), np.float32)
        for index, label in enumerate(labels):
            noise = rng.normal(0.0, 1.0, 2 * SAMPLES)
            smoothing = rng.uniform(0.0, 0.8)  # some noise is coloured (one-pole low-pass)
            for i in range(1, len(noise)):
                noise[i] += smoothing * noise[i - 1]
            noise *= rng.uniform(0.005, 0.1) / noise.std()
            signal = noise
            if label:
                f0 = rng.uniform(100.0, 400.0)
                amplitude = rng.uniform(0.05, 0.4)
                voiced = sum(amplitude / k * np.sin(2 * math.pi * k * f0 * t + rng.uniform(0, 2 * math.pi))
                             for k in range(1, 6) if k * f0 < 3500)
                signal = signal + voiced
            audio[index] = signal.reshape(2, SAMPLES)
        return audio, labels.astype(np.int64)


def _branch(name: str, nodes, output: str) -> object:
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)])


def silero_vad(seed: int = 0, train: int = 800, holdout: int = 200):
    """The fitted VAD and its task (module docstring)."""
    task = VoiceTask(seed=seed)
    g = ExporterGraph("silero_vad", TORCH, OPSET, seed)
    rng = g.rng
    sixteen = g.initializer("/Constant_output_0", np.array(16000, np.int64))
    is_16k = g.node("Equal", ["sr", sixteen], "")

    def const(name, values):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(values, np.int64)))

    then_nodes = [const("/If_then/starts", [0]), const("/If_then/ends", [2 ** 62]), const("/If_then/axes", [1]),
                  const("/If_then/steps", [2]),
                  helper.make_node("Slice", ["input", "/If_then/starts", "/If_then/ends", "/If_then/axes",
                                             "/If_then/steps"], ["/If_then/Slice_output_0"], name="/If_then/Slice")]
    else_nodes = [helper.make_node("Identity", ["input"], ["/If_else/Identity_output_0"], name="/If_else/Identity")]
    audio = g.node("If", [is_16k], "", then_branch=_branch("then_branch", then_nodes, "/If_then/Slice_output_0"),
                   else_branch=_branch("else_branch", else_nodes, "/If_else/Identity_output_0"))
    x = g.unsqueeze(audio, [1], "/stft")
    pads = g.initializer("/stft/Constant_output_0", np.array([0, 0, HOP, 0, 0, HOP], np.int64))
    x = g.node("Pad", [x, pads], "/stft", mode="reflect")
    n = np.arange(WINDOW)
    window = 0.5 - 0.5 * np.cos(2 * math.pi * n / WINDOW)
    k = np.arange(BINS)[:, None]
    basis = np.concatenate([np.cos(2 * math.pi * k * n / WINDOW), -np.sin(2 * math.pi * k * n / WINDOW)]) * window
    x = g.node("Conv", [x, g.initializer("stft.forward_basis_buffer", basis[:, None, :].astype(np.float32))],
               "/stft", dilations=[1], group=1, kernel_shape=[WINDOW], pads=[0, 0], strides=[HOP])
    real = g.node("Slice", [x, g.ints("/stft/Constant_1_output_0", [0]), g.ints("/stft/Constant_2_output_0", [BINS]),
                            g.ints("/stft/Constant_3_output_0", [1])], "/stft")
    imag = g.node("Slice", [x, g.ints("/stft/Constant_4_output_0", [BINS]),
                            g.ints("/stft/Constant_5_output_0", [2 * BINS]),
                            g.ints("/stft/Constant_6_output_0", [1])], "/stft")
    power = g.node("Add", [g.node("Mul", [real, real], "/stft"), g.node("Mul", [imag, imag], "/stft")], "/stft")
    magnitude = g.node("Sqrt", [power], "/stft")
    x = g.node("Log", [g.node("Add", [magnitude, g.scalar("/stft/Constant_7_output_0", 1e-3)], "/stft")], "/stft")
    channels = BINS
    encoder = []  # (conv output, weight, bias, BatchNorm scale and shift) per layer
    for layer, (cout, stride) in enumerate(((64, 1), (64, 2), (64, 1))):
        scope = f"/encoder/encoder.{layer}/reparam_conv"
        weight = rng.normal(0.0, math.sqrt(2.0 / (channels * 3)), (cout, channels, 3))
        weight += rng.normal(0.0, math.sqrt(2.0 / (channels * 3)), (cout, channels, 1))
        gamma, beta, _, _ = batchnorm_params(rng, cout)
        w_name = g.initializer(f"encoder.{layer}.reparam_conv.weight", weight.astype(np.float32))
        b_name = g.initializer(f"encoder.{layer}.reparam_conv.bias", np.zeros(cout, np.float32))
        x = g.node("Conv", [x, w_name, b_name], scope, dilations=[1], group=1, kernel_shape=[3], pads=[1, 1],
                   strides=[stride])
        encoder.append((x, w_name, b_name, gamma, beta))
        x = g.node("Relu", [x], f"/encoder/encoder.{layer}/activation")
        channels = cout
    pooled = g.node("ReduceMean", [x], "/encoder", axes=[2], keepdims=0)
    sequence = g.unsqueeze(pooled, [0], "/decoder/rnn")
    h0 = g.unsqueeze(g.node("Gather", ["state", g.scalar("/decoder/Constant_output_0", 0, np.int64)],
                            "/decoder", axis=0), [0], "/decoder/rnn")
    c0 = g.unsqueeze(g.node("Gather", ["state", g.scalar("/decoder/Constant_1_output_0", 1, np.int64)],
                            "/decoder", axis=0), [0], "/decoder/rnn")
    bound = 1.0 / math.sqrt(HIDDEN)
    w_ih = rng.uniform(-bound, bound, (1, 4 * HIDDEN, channels)).astype(np.float32)
    w_hh = rng.uniform(-bound, bound, (1, 4 * HIDDEN, HIDDEN)).astype(np.float32)
    b = rng.uniform(-bound, bound, (1, 8 * HIDDEN)).astype(np.float32)
    w_name, b_name = g.initializer("onnx::LSTM_190", w_ih), g.initializer("onnx::LSTM_192", b)
    _, y_h, y_c = g.node("LSTM", [sequence, w_name, g.initializer("onnx::LSTM_191", w_hh), b_name, "", h0, c0],
                         "/decoder/rnn", outputs=3, hidden_size=HIDDEN)
    g.node("Concat", [y_h, y_c], "/decoder", axis=0)
    g.nodes[-1].output[0] = "stateN"
    features = g.node("Relu", [g.squeeze(y_h, [0], "/decoder")], "/decoder/decoder/decoder.1")
    fc_w = g.initializer("decoder.decoder.2.weight", np.zeros((HIDDEN, 1), np.float32))
    fc_b = g.initializer("decoder.decoder.2.bias", np.zeros(1, np.float32))
    logits = g.node("Add", [g.node("MatMul", [features, fc_w], "/decoder/decoder/decoder.2"), fc_b],
                    "/decoder/decoder/decoder.2")
    g.node("Sigmoid", [logits], "/decoder/decoder/decoder.3")
    g.nodes[-1].output[0] = "output"
    model = g.model(
        [float_input("input", ["batch", SAMPLES]), float_input("state", [2, "batch", HIDDEN]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [float_input("output", ["batch", 1]), float_input("stateN", [2, "batch", HIDDEN])],
        f"Silero-style LSTM voice-activity detector as the PyTorch exporter writes it; {SAMPLES}-sample chunks at "
        f"16 or 8 kHz, state [2, N, {HIDDEN}]; seed {seed}.")

    # Silero's reparam_conv is a Conv with its BatchNorm folded in: fold BatchNorms whose
    # running statistics are those of the task's audio, layer by layer, so every encoder
    # channel is normalized before its Relu (with zero biases, the log-magnitudes' large
    # negative mean left six of the 64 pooled features dead and others nearly so).
    audio, _ = task.sample(256, 10_000 + seed)
    feed = _feed(audio[:, 0], np.zeros((2, len(audio), HIDDEN), np.float32))
    initial = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for conv, w_conv, b_conv, gamma, beta in encoder:
        (values,) = run_values(model, feed, [conv], batch=None)
        factor = gamma / np.sqrt(values.var((0, 2)) + 1e-5)
        set_initializer(model, w_conv, initial[w_conv] * factor[:, None, None])
        set_initializer(model, b_conv, beta - values.mean((0, 2)) * factor)

    # The LSTM's input weights see the pooled features centred (their mean folded into the
    # gate biases) and scaled as a whole (one factor, as a normalization layer's): a
    # per-feature 1/spread let the features of near-zero spread drive weights to 1.3e5.
    (pooled_values,) = run_values(model, feed, [pooled], batch=None)
    spread = float(np.sqrt(np.mean(pooled_values.var(0))))
    scaled = w_ih * (1.5 / spread)
    bias = b.copy()
    bias[0, :4 * HIDDEN] -= scaled[0] @ pooled_values.mean(0)
    set_initializer(model, w_name, scaled)
    set_initializer(model, b_name, bias)

    # The classifier: logistic regression of the label on Relu(h) of the second chunk,
    # the state carried over from the first, with weight decay picked on held-out chunks.
    fitted = []
    for count, sample_seed in ((train, 20_000 + seed), (holdout, 20_001 + seed)):
        audio, labels = task.sample(count, sample_seed)
        state = carried_state(model, audio[:, 0])
        (feat,) = run_values(model, _feed(audio[:, 1], state), [features], batch=None)
        fitted.append((feat, labels))
    weight, bias, accuracy = decayed_head(fitted[0], fitted[1], 1)
    set_initializer(model, fc_w, weight)
    set_initializer(model, fc_b, bias)
    model.doc_string += f" Held-out accuracy {accuracy:.4f}."
    return model, task


def _feed(audio: np.ndarray, state: np.ndarray, sample_rate: int = 16000) -> dict[str, np.ndarray]:
    return {"input": audio.astype(np.float32), "state": state, "sr": np.array(sample_rate, np.int64)}


def carried_state(model, first_chunks: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """``stateN`` [2, N, 128] after running ``first_chunks`` [N, 512] from a zero state."""
    from edgec.testing.corpus.graph import session
    zero = np.zeros((2, len(first_chunks), HIDDEN), np.float32)
    (state,) = session(model).run(["stateN"], _feed(first_chunks, zero, sample_rate))
    return state
