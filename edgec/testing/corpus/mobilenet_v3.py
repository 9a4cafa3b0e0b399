"""MobileNetV3 building blocks as Paddle2ONNX exports PaddleOCR's and PaddleClas's
backbones: Conv → BatchNormalization (not folded) → HardSwish / Relu, squeeze-excite as
``GlobalAveragePool → Conv → Relu → Conv → HardSigmoid → Mul``, inverted residuals with
an ``Add`` where the shapes allow."""

from __future__ import annotations

import numpy as np

from edgec.testing.corpus.graph import ExporterGraph, batchnorm_params, he_conv

# (kernel, expanded, out, squeeze-excite, activation, stride)
SMALL = [(3, 16, 16, True, "relu", 2), (3, 72, 24, False, "relu", 2), (3, 88, 24, False, "relu", 1),
         (5, 96, 40, True, "hardswish", 2), (5, 240, 40, True, "hardswish", 1), (5, 240, 40, True, "hardswish", 1),
         (5, 120, 48, True, "hardswish", 1), (5, 144, 48, True, "hardswish", 1), (5, 288, 96, True, "hardswish", 2),
         (5, 576, 96, True, "hardswish", 1), (5, 576, 96, True, "hardswish", 1)]

# PaddleOCR's det_mv3 at scale 0.5 (MobileNetV3-large, halved), trimmed: the outputs of the
# blocks marked True feed the FPN (strides 4, 8, 16, 32).
DETECTOR = [((3, 16, 16, False, "relu", 1), False), ((3, 32, 16, False, "relu", 2), True),
            ((3, 40, 24, False, "relu", 2), False), ((3, 48, 24, False, "relu", 1), True),
            ((5, 72, 40, True, "relu", 2), False), ((5, 120, 40, True, "relu", 1), True),
            ((3, 160, 56, False, "hardswish", 2), False), ((5, 240, 64, True, "hardswish", 1), True)]


def conv_bn(g: ExporterGraph, x: str, cin: int, cout: int, kernel: int, stride: int = 1, group: int = 1,
            activation: str | None = None) -> str:
    weight = he_conv(g.rng, cout, cin // group, kernel, depthwise=group > 1 and group == cin)
    pad = kernel // 2
    h = g.node("Conv", [x, g.initializer("conv2d.w_0", weight)], dilations=[1, 1], group=group,
               kernel_shape=[kernel, kernel], pads=[pad] * 4, strides=[stride, stride])
    scale, bias, mean, var = batchnorm_params(g.rng, cout)
    h = g.node("BatchNormalization", [h, g.initializer("batch_norm.w_0", scale), g.initializer("batch_norm.b_0", bias),
                                      g.initializer("batch_norm.w_1", mean), g.initializer("batch_norm.w_2", var)],
               epsilon=1e-5, momentum=0.9)
    return activate(g, h, activation)


def activate(g: ExporterGraph, x: str, activation: str | None) -> str:
    if activation is None:
        return x
    if activation == "relu":
        return g.node("Relu", [x])
    if activation == "hardswish":
        return g.node("HardSwish", [x])
    raise ValueError(activation)


def squeeze_excite(g: ExporterGraph, x: str, channels: int, reduction: int = 4) -> str:
    """Paddle's SEModule: HardSigmoid(slope 0.2, offset 0.5), as Paddle2ONNX writes it."""
    mid = max(8, channels // reduction)
    # Gating starts near identity (every gate about 0.5, which the next BatchNormalization's
    # measured statistics absorb), as a trained SE block's gates vary gently with the input:
    # full-scale random second weights make each gate a random, input-dependent factor in
    # [0, 1] per channel that scrambles the features (held-out accuracy 0.86 instead of 1.0
    # on the classifier's task) and amplifies perturbations by ~1.2 dB per gate.
    pooled = g.node("GlobalAveragePool", [x])
    w1 = g.rng.normal(0.0, np.sqrt(2.0 / channels), (mid, channels, 1, 1)).astype(np.float32)
    w2 = (0.1 * g.rng.normal(0.0, np.sqrt(1.0 / mid), (channels, mid, 1, 1))).astype(np.float32)
    h = g.node("Conv", [pooled, g.initializer("conv2d.w_0", w1), g.initializer("conv2d.b_0", np.zeros(mid, np.float32))],
               kernel_shape=[1, 1], strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1], group=1)
    h = g.node("Relu", [h])
    h = g.node("Conv", [h, g.initializer("conv2d.w_0", w2), g.initializer("conv2d.b_0", np.zeros(channels, np.float32))],
               kernel_shape=[1, 1], strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1], group=1)
    gate = g.node("HardSigmoid", [h], alpha=0.2, beta=0.5)
    return g.node("Mul", [x, gate])


def residual_unit(g: ExporterGraph, x: str, cin: int, config) -> tuple[str, int]:
    kernel, expanded, cout, se, activation, stride = config
    h = conv_bn(g, x, cin, expanded, 1, activation=activation)  # Paddle keeps it even when expanded == cin
    h = conv_bn(g, h, expanded, expanded, kernel, stride=stride, group=expanded, activation=activation)
    if se:
        h = squeeze_excite(g, h, expanded)
    h = conv_bn(g, h, expanded, cout, 1)
    if stride == 1 and cin == cout:
        h = g.node("Add", [x, h])
    return h, cout
