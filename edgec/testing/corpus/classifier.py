"""A MobileNetV3-small classifier as Paddle2ONNX exports PaddleClas's
``MobileNetV3_small_x1_0``, fitted to a :class:`~edgec.testing.tasks.TextureTask`.

``x`` [N,3,S,S] → Conv/BN/HardSwish stem → eleven inverted residuals (HardSwish or
Relu, squeeze-excite) → 1x1 Conv/BN/HardSwish to 576 → ``GlobalAveragePool`` → 1x1
``Conv`` to 1280 → ``HardSwish`` → ``Flatten`` → ``MatMul``/``Add`` → ``Softmax`` →
``softmax_0.tmp_0`` [N, classes].
"""

from __future__ import annotations

import numpy as np

from edgec.testing.corpus.graph import PADDLE, ExporterGraph, float_input, run_values, set_initializer, softmax_head
from edgec.testing.corpus.mobilenet_v3 import SMALL, conv_bn, residual_unit
from edgec.testing.tasks import TextureTask

OPSET = 14


def mobilenet_v3_small(size: int = 224, classes: int = 10, seed: int = 0, train: int = 1500, holdout: int = 300):
    """The fitted classifier, its task and its held-out accuracy."""
    task = TextureTask(classes=classes, size=size, seed=seed)
    g = ExporterGraph("mobilenet_v3_small", PADDLE, OPSET, seed)
    h = conv_bn(g, "x", 3, 16, 3, stride=2, activation="hardswish")
    cin = 16
    for config in SMALL:
        h, cin = residual_unit(g, h, cin, config)
    h = conv_bn(g, h, cin, 576, 1, activation="hardswish")
    h = g.node("GlobalAveragePool", [h])
    weight = g.rng.normal(0.0, np.sqrt(2.0 / 576), (1280, 576, 1, 1)).astype(np.float32)
    h = g.node("Conv", [h, g.initializer("conv2d.w_0", weight)], dilations=[1, 1], group=1, kernel_shape=[1, 1],
               pads=[0, 0, 0, 0], strides=[1, 1])
    h = g.node("HardSwish", [h])
    features = g.node("Flatten", [h], axis=1)
    fc_w = g.initializer("linear.w_0", np.zeros((1280, classes), np.float32))
    fc_b = g.initializer("linear.b_0", np.zeros(classes, np.float32))
    g.node("Softmax", [g.node("Add", [g.node("MatMul", [features, fc_w]), fc_b])], axis=1)
    g.nodes[-1].output[0] = "softmax_0.tmp_0"
    calibration, _ = task.sample(64, 10_000 + seed)
    model = g.model([float_input("x", ["N", 3, size, size])], [float_input("softmax_0.tmp_0", ["N", classes])],
                    f"MobileNetV3-small classifier (PaddleClas MobileNetV3_small_x1_0 as Paddle2ONNX exports it), "
                    f"input {size}x{size}, {classes} texture classes, seed {seed}.", calibration_feed=calibration)
    fitted = []
    for count, sample_seed in ((train, 20_000 + seed), (holdout, 20_001 + seed)):
        images, labels = task.sample(count, sample_seed)
        (values,) = run_values(model, {"x": images}, [features], batch=16)
        fitted.append((values, labels))
    weight, bias, accuracy = softmax_head(fitted[0], fitted[1], classes)
    set_initializer(model, fc_w, weight)
    set_initializer(model, fc_b, bias)
    model.doc_string += f" Held-out accuracy {accuracy:.4f}."
    return model, task, accuracy
