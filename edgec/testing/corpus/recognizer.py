"""A CRNN/SVTR-style text recognizer as Paddle2ONNX exports PaddleOCR's
``rec_mv3_bilstm_ctc``, fitted to a synthetic glyph-string task.

``x`` [N,3,32,W] → conv stem (Conv/BatchNormalization/HardSwish, strides (2,1) down the
height) → MaxPool → ``Im2Seq`` written as a ``Reshape`` whose shape is computed at run
time (``Shape → Gather → Unsqueeze → Concat``) and a ``Transpose`` → a bidirectional ONNX
``LSTM`` whose initial states are ``ConstantOfShape`` of a run-time shape → the sequence
features concatenated with the LSTM's (SVTR's shortcut) → ``MatMul``/``Add`` to C classes →
``Softmax`` → ``softmax_0.tmp_0`` [N, W/4, C], CTC-style with blank 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, helper

from edgec.testing.corpus.graph import (PADDLE, ExporterGraph, batchnorm_params, float_input, he_conv, run_values,
                                        refine_softmax, set_initializer, softmax_head)

OPSET = 14
HEIGHT = 32
GLYPH_WIDTH = 12  # pixels: three time steps of four


def ctc_decode(classes: np.ndarray, blank: int = 0) -> list[tuple[int, ...]]:
    """Per-step class indices [N, T] → strings: repeats merged, blanks dropped."""
    strings = []
    for row in classes:
        merged = [c for i, c in enumerate(row) if i == 0 or c != row[i - 1]]
        strings.append(tuple(int(c) for c in merged if c != blank))
    return strings


@dataclass(frozen=True)
class GlyphStringTask:
    """Images [3,32,W] of dark glyph strings on a light background; ``classes - 1``
    glyphs (class 0 is the CTC blank), each a fixed 32x12 pattern of 4x4-pixel cells."""

    width: int = 160
    classes: int = 11
    seed: int = 0

    def glyphs(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 0x61F])
        patterns: list[np.ndarray] = []
        columns: set[bytes] = set()
        while len(patterns) < self.classes - 1:
            cells = rng.random((8, 3)) < 0.5
            # Every cell column inked (a time step inside a glyph never looks like the gap)
            # and unlike every other glyph's columns (each step identifies its glyph).
            keys = [cells[:, c].tobytes() for c in range(3)]
            if not cells.any(axis=0).all() or len(set(keys)) < 3 or columns & set(keys):
                continue
            columns.update(keys)
            patterns.append(cells)
        return np.stack([np.kron(p, np.ones((4, 4))) for p in patterns])  # [classes-1, 32, 12]

    def sample(self, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Images [count,3,32,W] float32 and per-step targets [count, W/4] int64."""
        glyphs = self.glyphs()
        rng = np.random.default_rng([self.seed, seed, 0x5E0])
        steps = self.width // 4
        images = np.empty((count, 3, HEIGHT, self.width), np.float32)
        targets = np.zeros((count, steps), np.int64)
        centres = np.arange(steps) * 4 + 2
        for index in range(count):
            image = np.full((HEIGHT, self.width), 1.0) + rng.normal(0.0, 0.15, (HEIGHT, self.width))
            x = 4 * int(rng.integers(1, 4))  # a margin; glyphs and gaps on the 4-pixel step grid
            while True:
                gap = 4 * int(rng.integers(2, 4))
                if x + GLYPH_WIDTH > self.width:
                    break
                label = int(rng.integers(1, self.classes))
                image[:, x:x + GLYPH_WIDTH] -= 2.0 * glyphs[label - 1] * rng.uniform(0.8, 1.2)
                targets[index, (centres >= x) & (centres < x + GLYPH_WIDTH)] = label
                x += GLYPH_WIDTH + gap
                if rng.random() < 0.1:
                    x += 4 * int(rng.integers(2, 6))  # a space
            tint = rng.uniform(0.8, 1.2, (3, 1, 1))
            images[index] = (image[None] * tint + rng.normal(0.0, 0.05, (3, HEIGHT, self.width))).astype(np.float32)
        return images, targets


def _conv_bn(g: ExporterGraph, x: str, cin: int, cout: int, stride: tuple[int, int], activation: str) -> str:
    h = g.node("Conv", [x, g.initializer("conv2d.w_0", he_conv(g.rng, cout, cin, 3))], dilations=[1, 1], group=1,
               kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=list(stride))
    scale, bias, mean, var = batchnorm_params(g.rng, cout)
    h = g.node("BatchNormalization", [h, g.initializer("batch_norm.w_0", scale), g.initializer("batch_norm.b_0", bias),
                                      g.initializer("batch_norm.w_1", mean), g.initializer("batch_norm.w_2", var)],
               epsilon=1e-5, momentum=0.9)
    return g.node("HardSwish" if activation == "hardswish" else "Relu", [h])


def crnn(width: int = 160, classes: int = 11, hidden: int = 64, seed: int = 0, train: int = 1000):
    """The fitted recognizer and its task (module docstring); ``width`` a multiple of 4."""
    if width % 4:
        raise ValueError(f"width must be a multiple of 4, got {width}")
    task = GlyphStringTask(width=width, classes=classes, seed=seed)
    g = ExporterGraph("crnn", PADDLE, OPSET, seed)
    h = _conv_bn(g, "x", 3, 32, (2, 2), "hardswish")
    h = _conv_bn(g, h, 32, 48, (2, 1), "relu")
    h = _conv_bn(g, h, 48, 64, (2, 1), "hardswish")
    channels = 96
    h = _conv_bn(g, h, 64, channels, (2, 1), "hardswish")
    h = g.node("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0])
    # Im2Seq: [N, C, 1, T] → [N, C, T] → [N, T, C].
    h = g.node("Reshape", [h, g.shape_of([g.dim(h, 0), g.dim(h, 1), g.dim(h, 3)])])
    sequence = g.node("Transpose", [h], perm=[0, 2, 1])
    time_major = g.node("Transpose", [sequence], perm=[1, 0, 2])
    state_shape = g.shape_of([2, g.dim(sequence, 0), hidden])
    zero = helper.make_tensor("value", TensorProto.FLOAT, [1], [0.0])
    initial_h = g.node("ConstantOfShape", [state_shape], value=zero)
    initial_c = g.node("ConstantOfShape", [state_shape], value=zero)
    bound = 1.0 / math.sqrt(hidden)
    w = g.rng.uniform(-bound, bound, (2, 4 * hidden, channels)).astype(np.float32) * math.sqrt(hidden / channels)
    r = g.rng.uniform(-bound, bound, (2, 4 * hidden, hidden)).astype(np.float32)
    b = g.rng.uniform(-bound, bound, (2, 8 * hidden)).astype(np.float32)
    y, _, _ = g.node("LSTM", [time_major, g.initializer("lstm.w_ih", w), g.initializer("lstm.w_hh", r),
                              g.initializer("lstm.b", b), "", initial_h, initial_c],
                     outputs=3, direction="bidirectional", hidden_size=hidden)
    y = g.node("Transpose", [y], perm=[0, 2, 1, 3])  # [T, 2, N, H] → [T, N, 2, H]
    y = g.node("Reshape", [y, g.shape_of([g.dim(y, 0), g.dim(y, 1), -1])])
    y = g.node("Transpose", [y], perm=[1, 0, 2])
    features = g.node("Concat", [sequence, y], axis=2)
    width_features = channels + 2 * hidden
    fc_w = g.initializer("linear.w_0", np.zeros((width_features, classes), np.float32))
    fc_b = g.initializer("linear.b_0", np.zeros(classes, np.float32))
    logits = g.node("Add", [g.node("MatMul", [features, fc_w]), fc_b])
    g.node("Softmax", [logits], axis=2)
    g.nodes[-1].output[0] = "softmax_0.tmp_0"
    steps = width // 4
    calibration, _ = task.sample(16, 10_000 + seed)
    model = g.model([float_input("x", ["N", 3, HEIGHT, width])], [float_input("softmax_0.tmp_0", ["N", steps, classes])],
                    f"CRNN-style text recognizer (PaddleOCR rec_mv3_bilstm_ctc as Paddle2ONNX exports it, with "
                    f"SVTR's shortcut), input 32x{width}, {classes} classes (blank 0), BiLSTM hidden {hidden}, "
                    f"seed {seed}.", calibration_feed=calibration)

    # The classifier: ridge regression of one-hot per-step targets on the features, at the
    # ridge strength and temperature that do best on held-out images, then refined by
    # gradient descent on the cross-entropy.
    fitted = []
    for count, sample_seed in ((train, 20_000 + seed), (train // 4, 20_001 + seed)):
        images, targets = task.sample(count, sample_seed)
        (values,) = run_values(model, {"x": images}, [features], batch=32)
        fitted.append((values.reshape(-1, width_features), targets.reshape(-1)))
    weight, bias, _ = softmax_head(fitted[0], fitted[1], classes, strengths=(1e-5, 1e-4, 1e-3, 1e-2))
    weight, bias = refine_softmax(*fitted[0], weight, bias, seed=seed)
    set_initializer(model, fc_w, weight)
    set_initializer(model, fc_b, bias)
    return model, task
