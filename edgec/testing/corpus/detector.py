"""A DBNet-style text detector as Paddle2ONNX exports PaddleOCR's ``det_mv3_db``, fitted
to a synthetic text-box task.

``x`` [N,3,S,S] → MobileNetV3 backbone (HardSwish, squeeze-excite) → DBFPN (1x1
laterals, top-down ``Add`` of nearest-``Resize``d maps whose ``sizes`` are computed from
``Shape`` ops, 3x3 smoothing, ``Resize`` to 1/4 and ``Concat``) → DB head (3x3 Conv, two
``ConvTranspose`` 2x2/2) → ``Sigmoid`` → ``sigmoid_0.tmp_0`` [N,1,S,S], the text
probability map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgec.testing.corpus.graph import (PADDLE, ExporterGraph, batchnorm_params, float_input, he_conv, logistic, ridge,
                                        run_values, set_initializer)
from edgec.testing.corpus.mobilenet_v3 import DETECTOR, conv_bn, residual_unit
from edgec.testing.models import calibrate_batchnorms
from edgec.testing.tasks import TextureTask

OPSET = 14  # HardSwish needs 14; Paddle2ONNX writes it natively from there on


@dataclass(frozen=True)
class TextBoxTask:
    """Images [3,S,S] of bright "text line" rectangles on a coloured texture; the target
    map [1,S,S] is 1 inside the rectangles and 0 elsewhere."""

    size: int = 736
    boxes: tuple[int, int] = (1, 5)
    seed: int = 0

    def sample(self, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        background, _ = TextureTask(classes=6, size=self.size, noise=0.3, seed=self.seed).sample(count, seed)
        images = 0.4 * background
        maps = np.zeros((count, 1, self.size, self.size), np.float32)
        rng = np.random.default_rng([self.seed, seed, 0xB0C5])
        s = self.size
        for index in range(count):
            placed: list[tuple[int, int, int, int]] = []
            for _ in range(rng.integers(self.boxes[0], self.boxes[1] + 1)):
                for _attempt in range(20):
                    h = int(rng.uniform(0.08, 0.14) * s)
                    w = int(rng.uniform(0.15, 0.5) * s)
                    top, left = int(rng.integers(0, s - h)), int(rng.integers(0, s - w))
                    margin = max(2, s // 64)
                    if all(top + h + margin <= t or t + hh + margin <= top or left + w + margin <= l
                           or l + ww + margin <= left for t, l, hh, ww in placed):
                        placed.append((top, left, h, w))
                        break
            for top, left, h, w in placed:
                tint = rng.uniform(2.2, 3.0) + rng.normal(0.0, 0.15, (3, 1, 1))
                images[index, :, top:top + h, left:left + w] = tint + rng.normal(0.0, 0.2, (3, h, w))
                maps[index, 0, top:top + h, left:left + w] = 1.0
        return images.astype(np.float32), maps


def _upsample_to(g: ExporterGraph, x: str, like: str | None, factor: int | None) -> str:
    """Nearest Resize of ``x`` to ``like``'s spatial size, or ``factor`` times its own; the
    ``sizes`` input is computed from ``Shape`` ops as Paddle2ONNX writes ``interpolate``."""
    head = g.node("Slice", [g.node("Shape", [x]), g.ints("slice.starts", [0]), g.ints("slice.ends", [2]),
                            g.ints("slice.axes", [0])])
    if like is not None:
        spatial = g.node("Slice", [g.node("Shape", [like]), g.ints("slice.starts", [2]), g.ints("slice.ends", [4]),
                                   g.ints("slice.axes", [0])])
    else:
        spatial = g.node("Slice", [g.node("Shape", [x]), g.ints("slice.starts", [2]), g.ints("slice.ends", [4]),
                                   g.ints("slice.axes", [0])])
        spatial = g.node("Mul", [spatial, g.ints("scale_factor", [factor])])
    sizes = g.node("Concat", [head, spatial], axis=0)
    roi = g.initializer("resize.roi", np.zeros(0, np.float32))
    scales = g.initializer("resize.scales", np.zeros(0, np.float32))
    return g.node("Resize", [x, roi, scales, sizes], coordinate_transformation_mode="asymmetric",
                  mode="nearest", nearest_mode="floor")


def _conv(g: ExporterGraph, x: str, cin: int, cout: int, kernel: int) -> str:
    pad = kernel // 2
    return g.node("Conv", [x, g.initializer("conv2d.w_0", he_conv(g.rng, cout, cin, kernel))], dilations=[1, 1],
                  group=1, kernel_shape=[kernel, kernel], pads=[pad] * 4, strides=[1, 1])


def _conv_transpose(g: ExporterGraph, x: str, cin: int, cout: int) -> str:
    weight = g.rng.normal(0.0, math.sqrt(2.0 / cin), (cin, cout, 2, 2)).astype(np.float32)
    return g.node("ConvTranspose", [x, g.initializer("conv2d_transpose.w_0", weight),
                                    g.initializer("conv2d_transpose.b_0", np.zeros(cout, np.float32))],
                  dilations=[1, 1], group=1, kernel_shape=[2, 2], pads=[0, 0, 0, 0], strides=[2, 2])


def dbnet(size: int = 736, inner: int = 64, seed: int = 0, fit_pixels: float = 4e6):
    """The fitted detector and its task (see the module docstring); ``size`` must be a
    multiple of 32."""
    if size % 32:
        raise ValueError(f"size must be a multiple of 32, got {size}")
    if inner < 64 or inner % 4:
        raise ValueError(f"inner must be a multiple of 4 and at least 64 (the head needs 16 channels), got {inner}")
    task = TextBoxTask(size=size, seed=seed)
    g = ExporterGraph("dbnet", PADDLE, OPSET, seed)
    h = conv_bn(g, "x", 3, 16, 3, stride=2, activation="hardswish")
    cin, taps = 16, []
    for config, tap in DETECTOR:
        h, cin = residual_unit(g, h, cin, config)
        if tap:
            taps.append((h, cin))
    in2, in3, in4, in5 = (_conv(g, c, n, inner, 1) for c, n in taps)
    out4 = g.node("Add", [in4, _upsample_to(g, in5, in4, None)])
    out3 = g.node("Add", [in3, _upsample_to(g, out4, in3, None)])
    out2 = g.node("Add", [in2, _upsample_to(g, out3, in2, None)])
    quarter = inner // 4
    p5 = _upsample_to(g, _conv(g, in5, inner, quarter, 3), None, 8)
    p4 = _upsample_to(g, _conv(g, out4, inner, quarter, 3), None, 4)
    p3 = _upsample_to(g, _conv(g, out3, inner, quarter, 3), None, 2)
    p2 = _conv(g, out2, inner, quarter, 3)
    smooth2 = g.nodes[-1]
    fuse = g.node("Concat", [p5, p4, p3, p2], axis=1)
    h = conv_bn(g, fuse, inner, quarter, 3, activation="relu")
    head_conv = g.nodes[-3]
    h = _conv_transpose(g, h, quarter, quarter)
    upsample = g.nodes[-1]
    h = _batchnorm_relu(g, h, quarter)
    features = h
    logits = _conv_transpose(g, h, quarter, 1)
    last = g.nodes[-1]
    g.node("Sigmoid", [logits])
    g.nodes[-1].output[0] = "sigmoid_0.tmp_0"  # PaddleOCR's detector output name
    calibration, _ = task.sample(4, 10_000 + seed)
    model = g.model([float_input("x", ["N", 3, size, size])], [float_input("sigmoid_0.tmp_0", ["N", 1, size, size])],
                    f"DBNet-style text detector (PaddleOCR det_mv3_db as Paddle2ONNX exports it), input {size}x{size}, "
                    f"FPN width {inner}, seed {seed}.", calibration_feed=calibration)

    rng = np.random.default_rng(seed)
    count = int(max(4, min(48, fit_pixels // (size * size))))
    images, maps = task.sample(count, 20_000 + seed)

    # Training would make the stride-4 smoothing conv (P2) and the DB head's 3x3 conv carry
    # the text evidence; a random 64 -> 16 projection loses it (a linear probe on the
    # concatenated features then classifies 96 % of sub-pixels, and the map's IoU against
    # the labels is 0.7). So both are fitted, in order, the same way: output channel
    # 4r + s predicts the target at sub-pixel (r, s) of the 4x4 block its position covers
    # (the two ConvTransposes upsample 4x), by ridge regression on the 3x3 neighbourhood.
    quarter_size = size // 4
    smoothing = np.concatenate([_fit_subpixel_conv(model, out2, images, maps, rng, quarter_size, inner),
                                he_conv(rng, quarter - 16, inner, 3)])
    set_initializer(model, smooth2.input[1], smoothing)
    # Jointly trained branches of a Concat reach it at comparable scales; the fitted P2
    # (targets +-1) came out ~80x smaller than the random P3-P5, so the head's weights on
    # it were ~80x the rest of each kernel. Scale P2 to the other branches' RMS.
    branches = run_values(model, {"x": images[:2]}, [p5, p4, p3, p2], batch=None)
    scale = np.sqrt(np.mean([np.mean(b ** 2) for b in branches[:3]]) / np.mean(branches[3] ** 2))
    set_initializer(model, smooth2.input[1], scale * smoothing)
    head_weight = np.concatenate([_fit_subpixel_conv(model, fuse, images, maps, rng, quarter_size, inner),
                                  he_conv(rng, quarter - 16, inner, 3)])
    set_initializer(model, head_conv.input[1], head_weight)
    # The first ConvTranspose routes sub-pixel (2a + u, 2b + v) of the 4x4 block to channel
    # 2u + v at half-resolution position (a, b) — a learned pixel shuffle; the remaining
    # channels keep random weights.
    routing = 0.3 * rng.standard_normal((quarter, quarter, 2, 2)).astype(np.float32) / math.sqrt(quarter)
    routing[:16, :4] = 0.0
    for a in range(2):
        for b in range(2):
            for u in range(2):
                for v in range(2):
                    routing[(2 * a + u) * 4 + (2 * b + v), 2 * u + v, a, b] = 1.0
    set_initializer(model, upsample.input[1], routing)
    calibrate_batchnorms(model, rng, feed=calibration)  # the head's statistics changed

    # The last ConvTranspose (1 output channel, 2x2 stride 2) is a logistic regression per
    # sub-pixel position (a, b) on the features below it, with one shared bias.
    (feat,) = run_values(model, {"x": images}, [features], batch=4)
    half = size // 2
    per_position = 5_000
    rows, labels = [], []
    for a in range(2):
        for b in range(2):
            n = rng.integers(0, count, per_position)
            i, j = rng.integers(0, half, per_position), rng.integers(0, half, per_position)
            block = np.zeros((per_position, 4 * quarter), np.float32)
            block[:, (2 * a + b) * quarter:(2 * a + b + 1) * quarter] = feat[n, :, i, j]
            rows.append(block)
            labels.append(maps[n, 0, 2 * i + a, 2 * j + b])
    weight, bias = logistic(np.concatenate(rows), np.concatenate(labels))
    kernel = weight[:, 0].reshape(2, 2, quarter).transpose(2, 0, 1)[:, None]  # [quarter, 1, 2, 2]
    set_initializer(model, last.input[1], kernel)
    set_initializer(model, last.input[2], bias.reshape(1))
    return model, task


def _fit_subpixel_conv(model, value: str, images: np.ndarray, maps: np.ndarray, rng: np.random.Generator,
                       quarter_size: int, channels: int, pixels: int = 40_000) -> np.ndarray:
    """Weights [16, channels, 3, 3] (no bias: the BatchNormalization downstream absorbs a
    constant) whose output channel 4r + s is the ridge regression of the target at
    sub-pixel (r, s) on ``value``'s 3x3 neighbourhood at quarter resolution. The ridge
    strength is the strongest whose accuracy on held-out pixels (from the last quarter
    of the images, not used for fitting) is within one standard error of the best
    strength's (the one-standard-error rule): the weakest ridge is marginally more
    accurate but leans on the random channels with large weights that cancel."""
    (features,) = run_values(model, {"x": images}, [value], batch=4)
    padded = np.pad(features, ((0, 0), (0, 0), (1, 1), (1, 1)))
    split = max(1, len(images) * 3 // 4)

    def rows(first: int, last: int, count: int):
        n = rng.integers(first, last, count)
        i, j = rng.integers(0, quarter_size, count), rng.integers(0, quarter_size, count)
        patches = np.stack([padded[n, :, i + di, j + dj] for di in range(3) for dj in range(3)], axis=-1)
        targets = np.stack([maps[n, 0, 4 * i + r, 4 * j + s] for r in range(4) for s in range(4)], axis=-1)
        return patches.reshape(count, -1), targets * 2 - 1

    train, held = rows(0, split, pixels), rows(split, len(images), pixels // 4)
    fits = []
    for strength in (1e-4, 1e-3, 1e-2, 1e-1):
        weight, bias = ridge(*train, strength=strength)
        fits.append((float(np.mean((held[0] @ weight + bias > 0) == (held[1] > 0))), weight))
    best = max(accuracy for accuracy, _ in fits)
    error = np.sqrt(best * (1 - best) / held[1].size)
    weight = [w for accuracy, w in fits if accuracy >= best - error][-1]
    # [channels * 9 (c, di, dj), 16] -> [16, channels, 3, 3]
    return weight.T.reshape(16, channels, 3, 3).astype(np.float32)


def _batchnorm_relu(g: ExporterGraph, x: str, channels: int) -> str:
    scale, bias, mean, var = batchnorm_params(g.rng, channels)
    h = g.node("BatchNormalization", [x, g.initializer("batch_norm.w_0", scale), g.initializer("batch_norm.b_0", bias),
                                      g.initializer("batch_norm.w_1", mean), g.initializer("batch_norm.w_2", var)],
               epsilon=1e-5, momentum=0.9)
    return g.node("Relu", [h])
