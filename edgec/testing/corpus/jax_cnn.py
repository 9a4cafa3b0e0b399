"""A small CNN as jax2tf + tf2onnx export a Flax model with a polymorphic batch, fitted to
a :class:`~edgec.testing.tasks.TextureTask`.

``x`` [b,S,S,3] (NHWC, as JAX holds images) → ``Transpose`` to NCHW (tf2onnx's layout
rewrite of ``conv_general_dilated``) → three Conv → Add(bias) → Relu, stride 2 →
``Transpose`` back to NHWC → ``Reshape`` to [b, -1] whose shape is computed at run time
(``Shape → Gather → Unsqueeze → Concat``, jax2tf's polymorphic-shape arithmetic) →
``MatMul``/``Add`` → ``jax.nn.softmax`` as jax2tf writes it (``ReduceMax``, ``Sub``,
``Exp``, ``ReduceSum``, ``Div``) → ``Identity`` → ``output_0`` [b, classes]. Node names are
``jax2tf_infer_fn_/pjit_infer_fn_/…``, values ``…:0``. The Dense head is fitted by
cross-entropy with weight decay picked on held-out images
(:func:`~edgec.testing.corpus.graph.decayed_head`).
"""

from __future__ import annotations

import numpy as np

from edgec.testing.corpus.graph import (JAX2TF, ExporterGraph, decayed_head, float_input, he_conv, run_values,
                                        set_initializer)
from edgec.testing.tasks import TextureTask

OPSET = 13


def jax2tf_cnn(size: int = 32, classes: int = 10, seed: int = 0, train: int = 800, holdout: int = 200):
    """The fitted CNN, its task (images transposed to NHWC by the data generator) and its
    held-out accuracy; ``size`` a multiple of 8."""
    if size % 8:
        raise ValueError(f"size must be a multiple of 8, got {size}")
    task = TextureTask(classes=classes, size=size, seed=seed)
    g = ExporterGraph("tf2onnx", JAX2TF, OPSET, seed)
    h = g.node("Transpose", ["x"], "Conv2D__6", perm=[0, 3, 1, 2])
    cin = 3
    for layer, cout in enumerate((16, 32, 32)):
        scope = f"Conv/conv_general_dilated{'' if layer == 0 else f'_{layer}'}"
        h = g.node("Conv", [h, g.initializer(f"jax2tf_infer_fn_/pjit_infer_fn_/{scope}/ReadVariableOp:0",
                                             he_conv(g.rng, cout, cin, 3))],
                   scope, dilations=[1, 1], group=1, kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])
        bias = g.initializer(f"jax2tf_infer_fn_/pjit_infer_fn_/Conv/add{'' if layer == 0 else f'_{layer}'}/y:0",
                             np.zeros((1, cout, 1, 1), np.float32))
        h = g.node("Add", [h, bias], f"Conv/add{'' if layer == 0 else f'_{layer}'}")
        h = g.node("Relu", [h], f"Conv/Relu{'' if layer == 0 else f'_{layer}'}")
        cin = cout
    h = g.node("Transpose", [h], "Conv/conv_general_dilated_2__20", perm=[0, 2, 3, 1])
    shape = g.shape_of([g.dim(h, 0, "Reshape/shape"), -1], "Reshape/shape/concat")
    features = g.node("Reshape", [h, shape], "Reshape")
    fc_w = g.initializer("jax2tf_infer_fn_/pjit_infer_fn_/Dense/dot_general/ReadVariableOp:0",
                         np.zeros((cin * (size // 8) ** 2, classes), np.float32))
    fc_b = g.initializer("jax2tf_infer_fn_/pjit_infer_fn_/Dense/add/y:0", np.zeros(classes, np.float32))
    logits = g.node("Add", [g.node("MatMul", [features, fc_w], "Dense/dot_general"), fc_b], "Dense/add")
    # jax.nn.softmax: exp(x - stop_gradient(max x)) / sum(...)
    top = g.node("ReduceMax", [logits], "softmax/reduce_max", axes=[1], keepdims=1)
    top = g.node("Identity", [top], "softmax/StopGradient")
    exp = g.node("Exp", [g.node("Sub", [logits, top], "softmax/sub")], "softmax/exp")
    total = g.node("ReduceSum", [exp, g.ints("jax2tf_infer_fn_/pjit_infer_fn_/softmax/reduce_sum/axes:0", [1])],
                   "softmax/reduce_sum", keepdims=1)
    g.node("Identity", [g.node("Div", [exp, total], "softmax/div")], "Identity")
    g.nodes[-1].output[0] = "output_0"
    model = g.model([float_input("x", ["b", size, size, 3])], [float_input("output_0", ["b", classes])],
                    f"CNN as jax2tf + tf2onnx export a Flax model with polymorphic batch, input {size}x{size}x3 "
                    f"(NHWC), {classes} texture classes, seed {seed}.")

    def nhwc(count: int, sample_seed: int):
        images, labels = task.sample(count, sample_seed)
        return np.ascontiguousarray(images.transpose(0, 2, 3, 1)), labels

    fitted = []
    for count, sample_seed in ((train, 20_000 + seed), (holdout, 20_001 + seed)):
        images, labels = nhwc(count, sample_seed)
        (values,) = run_values(model, {"x": images}, [features], batch=64)
        fitted.append((values, labels))
    # The Dense head as training leaves it: cross-entropy with weight decay (picked on the
    # held-out images). A ridge fit on per-feature standardized features, scaled by a
    # temperature, put weights of 30 (RMS 1.07) on features of tiny spread.
    weight, bias, accuracy = decayed_head(fitted[0], fitted[1], classes)
    set_initializer(model, fc_w, weight)
    set_initializer(model, fc_b, bias)
    model.doc_string += f" Held-out accuracy {accuracy:.4f}."
    return model, nhwc, accuracy
