"""ONNX models with seeded random weights, for edgec's tests and benchmarks.

Each function returns an ``onnx.ModelProto`` at opset 17, ir_version 8, that passes
``onnx.checker.check_model(full_check=True)`` and runs in onnxruntime. The graphs are
written as ``torch.onnx.export`` writes eval-mode models (BatchNormalization not folded
into Conv, ReLU6 as Clip with min/max inputs, GELU as its Erf formula, attention in
primitive ops), so the passes meet the patterns they will meet in real models.
Weights come from ``numpy.random.default_rng(seed)``: the same seed gives the same model.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8

__all__ = [
    "OPSET",
    "IR_VERSION",
    "resnet18",
    "mobilenet_v2",
    "transformer_encoder",
    "scaling_model",
    "conv_bn_relu",
    "mlp",
    "exporter_style_cnn",
]


class _GraphBuilder:
    """Accumulates nodes and initializers; hands out exporter-style unique value names."""

    def __init__(self, name: str, rng: np.random.Generator):
        self.name = name
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._counts: dict[str, int] = {}

    def unique(self, name: str) -> str:
        count = self._counts.get(name, 0)
        self._counts[name] = count + 1
        return name if count == 0 else f"{name}_{count}"

    def initializer(self, name: str, array: np.ndarray) -> str:
        name = self.unique(name)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op_type: str, inputs: list[str], scope: str, **attributes) -> str:
        """Adds a one-output node named ``{scope}/{op_type}``; returns its output's name."""
        node_name = self.unique(f"{scope}/{op_type}")
        output = f"{node_name}_output_0"
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=node_name, **attributes))
        return output

    def model(self, inputs, outputs, doc_string: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, inputs, outputs, self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="edgec.testing.models",
            doc_string=doc_string,
        )
        model.ir_version = IR_VERSION
        calibrate_batchnorms(model, self.rng)
        return model


def _rename_output(builder: _GraphBuilder, value: str, name: str) -> None:
    """Makes the node that produces ``value`` write the graph output ``name`` instead."""
    for node in reversed(builder.nodes):
        if value in node.output:
            node.output[list(node.output).index(value)] = name
            return
    raise ValueError(f"no node produces {value!r}")


# ---------------------------------------------------------------------------------
# Convolutional building blocks
# ---------------------------------------------------------------------------------


def _conv(
    b: _GraphBuilder,
    x: str,
    scope: str,
    cin: int,
    cout: int,
    kernel: int,
    stride: int = 1,
    group: int = 1,
    bias: bool = False,
) -> str:
    """Conv with He-normal weights (std sqrt(2 / fan_in)), padding kernel // 2.

    Depthwise kernels (one input channel per group) get a mean equal to their spread.
    A zero-mean random 3x3 kernel is a high-pass filter; seventeen of them in a row,
    each followed by a BatchNormalization that restores unit variance, leave little
    but amplified pixel noise, and the network's output stops depending on what the
    image shows. Trained MobileNets' depthwise filters are mostly smooth, low-pass ones.
    """
    fan_in = cin // group * kernel * kernel
    std = math.sqrt(2.0 / fan_in)
    mean = std if group > 1 and cin // group == 1 else 0.0
    weight = b.rng.normal(mean, std, (cout, cin // group, kernel, kernel)).astype(np.float32)
    inputs = [x, b.initializer(f"{scope}.weight", weight)]
    if bias:
        bound = 1.0 / math.sqrt(fan_in)
        inputs.append(b.initializer(f"{scope}.bias", b.rng.uniform(-bound, bound, cout).astype(np.float32)))
    pad = kernel // 2
    return b.node(
        "Conv",
        inputs,
        f"/{scope}",
        dilations=[1, 1],
        group=group,
        kernel_shape=[kernel, kernel],
        pads=[pad, pad, pad, pad],
        strides=[stride, stride],
    )


def _batchnorm(b: _GraphBuilder, x: str, scope: str, channels: int) -> str:
    """Eval-mode BatchNormalization with random scale and shift.

    The running mean and variance are placeholders until ``calibrate_batchnorms``
    replaces them with the statistics the network really produces.
    """
    gamma = b.rng.uniform(0.8, 1.2, channels).astype(np.float32)
    beta = b.rng.normal(0.0, 0.1, channels).astype(np.float32)
    return b.node(
        "BatchNormalization",
        [
            x,
            b.initializer(f"{scope}.weight", gamma),
            b.initializer(f"{scope}.bias", beta),
            b.initializer(f"{scope}.running_mean", np.zeros(channels, dtype=np.float32)),
            b.initializer(f"{scope}.running_var", np.ones(channels, dtype=np.float32)),
        ],
        f"/{scope}",
        epsilon=1e-5,
        momentum=0.9,
    )


def calibrate_batchnorms(model: onnx.ModelProto, rng: np.random.Generator, batch: int = 2,
                          feed: np.ndarray | None = None) -> None:
    """Sets every BatchNormalization's running statistics to those of its real input.

    A trained network's running statistics describe the activations that reach each
    BN; random ones would let activations drift layer by layer until they explode or
    vanish. So: run a copy of the model once in which each BN normalizes with its
    batch's own mean and variance (training-mode BN, spelled in primitive ops), on
    standard-normal inputs (or on ``feed``, a batch of the data the model is meant
    for), and read those statistics back. The eval-mode model then computes exactly
    what the copy computed, on that batch.
    """
    weights = {tensor.name: tensor for tensor in model.graph.initializer}
    calibration = onnx.ModelProto()
    calibration.CopyFrom(model)
    graph = calibration.graph
    del graph.node[:]
    statistics = []  # (running_mean name, running_var name, batch mean output, batch var output)
    for node in model.graph.node:
        if node.op_type != "BatchNormalization":
            graph.node.append(node)
            continue
        x, scale, bias, running_mean, running_var = node.input
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        prefix = f"{node.name}/calibration"
        for name in (scale, bias):
            array = numpy_helper.to_array(weights[name]).reshape(-1, 1, 1)
            graph.initializer.append(numpy_helper.from_array(array, f"{prefix}/{name}"))
        graph.initializer.append(numpy_helper.from_array(np.array(epsilon, dtype=np.float32), f"{prefix}/epsilon"))
        mean, centered, var = f"{prefix}/mean", f"{prefix}/centered", f"{prefix}/var"
        graph.node.extend(
            [
                helper.make_node("ReduceMean", [x], [mean], axes=[0, 2, 3], keepdims=1),
                helper.make_node("Sub", [x, mean], [centered]),
                helper.make_node("Mul", [centered, centered], [f"{prefix}/squared"]),
                helper.make_node("ReduceMean", [f"{prefix}/squared"], [var], axes=[0, 2, 3], keepdims=1),
                helper.make_node("Add", [var, f"{prefix}/epsilon"], [f"{prefix}/var_eps"]),
                helper.make_node("Sqrt", [f"{prefix}/var_eps"], [f"{prefix}/std"]),
                helper.make_node("Div", [centered, f"{prefix}/std"], [f"{prefix}/normalized"]),
                helper.make_node("Mul", [f"{prefix}/normalized", f"{prefix}/{scale}"], [f"{prefix}/scaled"]),
                helper.make_node("Add", [f"{prefix}/scaled", f"{prefix}/{bias}"], [node.output[0]]),
            ]
        )
        graph.output.extend([onnx.ValueInfoProto(name=mean), onnx.ValueInfoProto(name=var)])
        statistics.append((running_mean, running_var, mean, var))
    if not statistics:
        return
    import onnxruntime  # only models with BatchNormalization need it to build
    (graph_input,) = graph.input
    dims = [d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    if feed is None:
        feed = rng.standard_normal([batch, *dims[1:]]).astype(np.float32)
    graph_input.type.tensor_type.shape.dim[0].dim_value = len(feed)
    del graph.output[: len(model.graph.output)]  # the batch dim changed; keep only the statistics
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # the calibration graph leaves eval-only initializers unused
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(calibration.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [name for _, _, mean, var in statistics for name in (mean, var)]
    measured = dict(zip(names, session.run(names, {graph_input.name: feed})))
    for running_mean, running_var, mean, var in statistics:
        weights[running_mean].CopyFrom(numpy_helper.from_array(measured[mean].reshape(-1), running_mean))
        weights[running_var].CopyFrom(numpy_helper.from_array(measured[var].reshape(-1), running_var))


def _relu(b: _GraphBuilder, x: str, scope: str) -> str:
    return b.node("Relu", [x], f"/{scope}")


def _relu6(b: _GraphBuilder, x: str, scope: str, bounds: tuple[str, str]) -> str:
    # Since opset 11, Clip takes min and max as inputs; the exporter writes them as
    # scalar constants.
    return b.node("Clip", [x, *bounds], f"/{scope}")


def _classifier(b: _GraphBuilder, x: str, features: int, classes: int) -> str:
    """GlobalAveragePool -> Flatten -> Gemm, as torchvision's heads export."""
    pooled = b.node("GlobalAveragePool", [x], "/avgpool")
    flat = b.node("Flatten", [pooled], "", axis=1)
    bound = 1.0 / math.sqrt(features)
    weight = b.rng.uniform(-bound, bound, (classes, features)).astype(np.float32)
    bias = b.rng.uniform(-bound, bound, classes).astype(np.float32)
    return b.node(
        "Gemm",
        [flat, b.initializer("fc.weight", weight), b.initializer("fc.bias", bias)],
        "/fc",
        alpha=1.0,
        beta=1.0,
        transB=1,
    )


def resnet18(batch: int = 1, seed: int = 0) -> onnx.ModelProto:
    """torchvision's ResNet-18: ``input`` [batch,3,224,224] -> ``logits`` [batch,1000].

    Conv / BatchNormalization / Relu / MaxPool / Add / GlobalAveragePool / Flatten /
    Gemm; convolutions have no bias (as in torchvision), BN is separate; He-initialized.
    """
    b = _GraphBuilder("resnet18", np.random.default_rng(seed))
    x = _conv(b, "input", "conv1", 3, 64, 7, stride=2)
    x = _relu(b, _batchnorm(b, x, "bn1", 64), "relu")
    x = b.node("MaxPool", [x], "/maxpool", kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            scope = f"layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            identity = x
            h = _conv(b, x, f"{scope}.conv1", cin, cout, 3, stride=stride)
            h = _relu(b, _batchnorm(b, h, f"{scope}.bn1", cout), f"{scope}.relu")
            h = _conv(b, h, f"{scope}.conv2", cout, cout, 3)
            h = _batchnorm(b, h, f"{scope}.bn2", cout)
            if stride != 1 or cin != cout:
                identity = _conv(b, x, f"{scope}.downsample.0", cin, cout, 1, stride=stride)
                identity = _batchnorm(b, identity, f"{scope}.downsample.1", cout)
            x = _relu(b, b.node("Add", [h, identity], f"/{scope}"), f"{scope}.relu_1")
            cin = cout
    logits = _classifier(b, x, 512, 1000)
    _rename_output(b, logits, "logits")
    return b.model(
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 1000])],
        f"torchvision ResNet-18 topology, random He-initialized weights (seed {seed}).",
    )


def mobilenet_v2(batch: int = 1, seed: int = 0) -> onnx.ModelProto:
    """torchvision's MobileNetV2 (width 1.0): ``input`` [batch,3,224,224] -> ``logits`` [batch,1000].

    Inverted residuals (1x1 expand, 3x3 depthwise with group=channels, 1x1 linear
    projection, Add when the shapes allow), ReLU6 as Clip(x, 0, 6).
    """
    b = _GraphBuilder("mobilenet_v2", np.random.default_rng(seed))
    bounds = (
        b.initializer("relu6.min", np.array(0.0, dtype=np.float32)),
        b.initializer("relu6.max", np.array(6.0, dtype=np.float32)),
    )

    def conv_bn(x, scope, cin, cout, kernel, stride=1, group=1, activation=True):
        h = _conv(b, x, f"{scope}.0", cin, cout, kernel, stride=stride, group=group)
        h = _batchnorm(b, h, f"{scope}.1", cout)
        return _relu6(b, h, f"{scope}.2", bounds) if activation else h

    x = conv_bn("input", "features.0", 3, 32, 3, stride=2)
    cin, index = 32, 1
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    for expand, cout, repeats, first_stride in settings:
        for repeat in range(repeats):
            stride = first_stride if repeat == 0 else 1
            scope = f"features.{index}.conv"
            hidden = cin * expand
            h, layer = x, 0
            if expand != 1:
                h = conv_bn(h, f"{scope}.{layer}", cin, hidden, 1)
                layer += 1
            h = conv_bn(h, f"{scope}.{layer}", hidden, hidden, 3, stride=stride, group=hidden)
            h = _conv(b, h, f"{scope}.{layer + 1}", hidden, cout, 1)
            h = _batchnorm(b, h, f"{scope}.{layer + 2}", cout)
            if stride == 1 and cin == cout:
                h = b.node("Add", [x, h], f"/features.{index}")
            x, cin, index = h, cout, index + 1
    x = conv_bn(x, f"features.{index}", cin, 1280, 1)
    logits = _classifier(b, x, 1280, 1000)
    _rename_output(b, logits, "logits")
    return b.model(
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 1000])],
        f"torchvision MobileNetV2 topology, random He-initialized weights (seed {seed}).",
    )


# ---------------------------------------------------------------------------------
# Transformer encoder
# ---------------------------------------------------------------------------------


def transformer_encoder(
    batch: int = 1,
    seq: int = 128,
    hidden: int = 256,
    heads: int = 4,
    layers: int = 4,
    ffn: int = 1024,
    seed: int = 0,
) -> onnx.ModelProto:
    """A BERT-style (post-LayerNorm) encoder: ``hidden_states`` [batch,seq,hidden] -> ``last_hidden_state`` [batch,seq,hidden].

    The input is already-embedded hidden states (no token ids, no embedding Gather, no
    attention mask). Each layer is written in primitive ops as the PyTorch exporter
    writes it at opset 17: MatMul + Add projections, Reshape + Transpose into heads,
    MatMul, Div by sqrt(head_dim), Softmax, MatMul, Transpose + Reshape back, MatMul +
    Add, residual Add, LayerNormalization; then an FFN with GELU in its Erf form
    ``x * 0.5 * (1 + erf(x / sqrt(2)))`` (Div, Erf, Add, Mul, Mul), residual Add,
    LayerNormalization.
    """
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    head_dim = hidden // heads
    b = _GraphBuilder("transformer_encoder", np.random.default_rng(seed))
    rng = b.rng

    def scalar(name, value):
        return b.initializer(name, np.array(value, dtype=np.float32))

    def linear(x, scope, fan_in, fan_out):
        # nn.Linear's default init; the weight is stored [in, out], as the exporter
        # stores the transposed nn.Linear weight that feeds a MatMul.
        bound = 1.0 / math.sqrt(fan_in)
        weight = rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32)
        bias = rng.uniform(-bound, bound, fan_out).astype(np.float32)
        h = b.node("MatMul", [x, b.initializer(f"{scope}.weight", weight)], f"/{scope}")
        return b.node("Add", [h, b.initializer(f"{scope}.bias", bias)], f"/{scope}")

    def layer_norm(x, scope):
        gamma = rng.uniform(0.9, 1.1, hidden).astype(np.float32)
        beta = rng.normal(0.0, 0.02, hidden).astype(np.float32)
        return b.node(
            "LayerNormalization",
            [x, b.initializer(f"{scope}.weight", gamma), b.initializer(f"{scope}.bias", beta)],
            f"/{scope}",
            axis=-1,
            epsilon=1e-12,
        )

    split_shape = b.initializer("split_heads.shape", np.array([batch, seq, heads, head_dim], dtype=np.int64))
    merge_shape = b.initializer("merge_heads.shape", np.array([batch, seq, hidden], dtype=np.int64))
    sqrt_head_dim = scalar("attention.scale", math.sqrt(head_dim))
    sqrt_two, one, half = scalar("gelu.sqrt2", math.sqrt(2.0)), scalar("gelu.one", 1.0), scalar("gelu.half", 0.5)

    x = "hidden_states"
    for layer in range(layers):
        scope = f"encoder.layer.{layer}"
        att = f"{scope}.attention.self"
        q = linear(x, f"{att}.query", hidden, hidden)
        k = linear(x, f"{att}.key", hidden, hidden)
        v = linear(x, f"{att}.value", hidden, hidden)
        q = b.node("Transpose", [b.node("Reshape", [q, split_shape], f"/{att}")], f"/{att}", perm=[0, 2, 1, 3])
        k = b.node("Transpose", [b.node("Reshape", [k, split_shape], f"/{att}")], f"/{att}", perm=[0, 2, 3, 1])
        v = b.node("Transpose", [b.node("Reshape", [v, split_shape], f"/{att}")], f"/{att}", perm=[0, 2, 1, 3])
        scores = b.node("Div", [b.node("MatMul", [q, k], f"/{att}"), sqrt_head_dim], f"/{att}")
        probs = b.node("Softmax", [scores], f"/{att}", axis=-1)
        context = b.node("MatMul", [probs, v], f"/{att}")
        context = b.node("Transpose", [context], f"/{att}", perm=[0, 2, 1, 3])
        context = b.node("Reshape", [context, merge_shape], f"/{att}")
        attended = linear(context, f"{scope}.attention.output.dense", hidden, hidden)
        x = layer_norm(b.node("Add", [attended, x], f"/{scope}.attention.output"), f"{scope}.attention.output.LayerNorm")

        up = linear(x, f"{scope}.intermediate.dense", hidden, ffn)
        gelu_scope = f"/{scope}.intermediate.intermediate_act_fn"
        erf = b.node("Erf", [b.node("Div", [up, sqrt_two], gelu_scope)], gelu_scope)
        gelu = b.node("Mul", [b.node("Mul", [up, b.node("Add", [erf, one], gelu_scope)], gelu_scope), half], gelu_scope)
        down = linear(gelu, f"{scope}.output.dense", ffn, hidden)
        x = layer_norm(b.node("Add", [down, x], f"/{scope}.output"), f"{scope}.output.LayerNorm")
    _rename_output(b, x, "last_hidden_state")
    return b.model(
        [helper.make_tensor_value_info("hidden_states", TensorProto.FLOAT, [batch, seq, hidden])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [batch, seq, hidden])],
        f"BERT-style encoder, {layers} layers, hidden {hidden}, {heads} heads, ffn {ffn}, "
        f"seq {seq}; random weights (seed {seed}).",
    )


# ---------------------------------------------------------------------------------
# Scaling model
# ---------------------------------------------------------------------------------

_WIDTH = 16


def _scaling_block(b: _GraphBuilder, x: str, block: int, weight: str, dense: bool) -> str:
    """One repeating unit of ``scaling_model``: 16 nodes, or 17 with the MatMul.

    Holds a foldable constant subgraph, a duplicated subexpression, a dead branch and
    an elementwise chain; it ends in Tanh so values stay in [-1, 1] for any depth.
    """
    scope = f"/block{block}"
    rng = b.rng
    # Foldable: Add(Constant, Constant) feeds the chain.
    a = b.node("Constant", [], scope, value=numpy_helper.from_array(rng.normal(0, 0.5, (1, _WIDTH)).astype(np.float32)))
    c = b.node("Constant", [], scope, value=numpy_helper.from_array(rng.normal(0, 0.5, (1, _WIDTH)).astype(np.float32)))
    offset = b.node("Add", [a, c], scope)
    h = b.node("Add", [x, offset], scope)
    if dense:
        h = b.node("MatMul", [h, weight], scope)
    h = b.node("Mul", [h, offset], scope)
    h = b.node("Relu", [h], scope)
    # Duplicated subexpressions: the same op on the same inputs, twice (for CSE).
    s1 = b.node("Sigmoid", [h], scope)
    s2 = b.node("Sigmoid", [h], scope)
    h = b.node("Add", [s1, s2], scope)
    m1 = b.node("Mul", [h, x], scope)
    m2 = b.node("Mul", [h, x], scope)
    h = b.node("Sub", [m1, m2], scope)  # exactly zero, but only an algebraic pass knows
    h = b.node("Add", [h, s1], scope)
    # Dead branch: nobody reads its output (for DCE).
    dead = b.node("Mul", [h, offset], scope)
    b.node("Tanh", [dead], scope)
    return b.node("Tanh", [h], scope)


def scaling_model(num_nodes: int, seed: int = 0) -> onnx.ModelProto:
    """A generated chain of about ``num_nodes`` nodes (exactly, for ``num_nodes`` >= 20).

    ``input`` [1,16] -> ``output`` [1,16]. Built from repeating blocks of elementwise
    ops (Add, Mul, Sub, Relu, Sigmoid, Tanh) with a MatMul by a small constant [16,16]
    weight in every fourth block, each block carrying a foldable ``Add(Constant,
    Constant)``, duplicated subexpressions and a dead branch; a Tanh chain pads the end
    to the exact count. Meant for measuring how import -> passes -> export time grows
    with model size; building 10k nodes takes a fraction of a second.
    """
    if num_nodes < 1:
        raise ValueError(f"num_nodes must be positive, got {num_nodes}")
    b = _GraphBuilder("scaling_model", np.random.default_rng(seed))
    # Eight weights shared round-robin: a weight per block would make the model's
    # bytes, not its node count, dominate the measurement.
    weights: list[str] = []
    x, block = "input", 0
    while True:
        dense = block % 4 == 3
        size = 17 if dense else 16
        if len(b.nodes) + size > num_nodes:
            break
        weight = ""
        if dense:
            if len(weights) < 8:
                matrix = b.rng.normal(0.0, 1.0 / math.sqrt(_WIDTH), (_WIDTH, _WIDTH)).astype(np.float32)
                weights.append(b.initializer(f"dense.{len(weights)}.weight", matrix))
            weight = weights[(block // 4) % len(weights)]
        x = _scaling_block(b, x, block, weight, dense)
        block += 1
    while len(b.nodes) < num_nodes:
        x = b.node("Tanh", [x], "/tail")
    if x == "input":  # fewer nodes than the chain needs: still one op
        x = b.node("Tanh", [x], "/tail")
    _rename_output(b, x, "output")
    return b.model(
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, _WIDTH])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, _WIDTH])],
        f"Generated scaling model with {len(b.nodes)} nodes (seed {seed}).",
    )


# ---------------------------------------------------------------------------------
# Tiny models for unit tests
# ---------------------------------------------------------------------------------


def conv_bn_relu(seed: int = 0) -> onnx.ModelProto:
    """``input`` [1,3,16,16] -> Conv(3->8, 3x3, pad 1, with bias) -> BatchNormalization -> Relu -> ``output`` [1,8,16,16].

    The smallest Conv+BN fusion case; the Conv has a bias so the fused bias must
    combine both.
    """
    b = _GraphBuilder("conv_bn_relu", np.random.default_rng(seed))
    h = _conv(b, "input", "conv", 3, 8, 3, bias=True)
    h = _relu(b, _batchnorm(b, h, "bn", 8), "relu")
    _rename_output(b, h, "output")
    return b.model(
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8, 16, 16])],
        f"Conv -> BatchNormalization -> Relu, random weights (seed {seed}).",
    )


def conv_stack(channels: int = 32, size: int = 56, layers: int = 6, seed: int = 0) -> onnx.ModelProto:
    """``x`` [1,C,S,S] -> (Conv 3x3 pad 1, no bias -> Relu) x layers -> [1,C,S,S]: a
    few milliseconds of compute-bound convolutions (32x56x56, 6 layers: ~5 ms on 2 cores),
    for timing tests where one model must be slow enough to time and the same twice."""
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((channels, channels, 3, 3)) * 0.05).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        x = f"r{i}"
    shape = [1, channels, size, size]
    graph = helper.make_graph(nodes, "convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def mlp(batch: int = 1, sizes: tuple[int, ...] = (64, 128, 10), seed: int = 0) -> onnx.ModelProto:
    """``input`` [batch,sizes[0]] -> (MatMul -> Add -> Relu)* -> MatMul -> Add -> ``output`` [batch,sizes[-1]].

    A small fully connected network for quantization and fusion unit tests.
    """
    if len(sizes) < 2:
        raise ValueError(f"sizes needs at least an input and an output size, got {sizes}")
    b = _GraphBuilder("mlp", np.random.default_rng(seed))
    h = "input"
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        weight = b.rng.normal(0.0, math.sqrt(2.0 / fan_in), (fan_in, fan_out)).astype(np.float32)
        bias = b.rng.normal(0.0, 0.1, fan_out).astype(np.float32)
        h = b.node("MatMul", [h, b.initializer(f"fc{index}.weight", weight)], f"/fc{index}")
        h = b.node("Add", [h, b.initializer(f"fc{index}.bias", bias)], f"/fc{index}")
        if index < len(sizes) - 2:
            h = _relu(b, h, f"relu{index}")
    _rename_output(b, h, "output")
    return b.model(
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, sizes[0]])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, sizes[-1]])],
        f"MLP {list(sizes)}, random weights (seed {seed}).",
    )


def exporter_style_cnn(seed: int = 0) -> onnx.ModelProto:
    """``image`` [N,3,16,16] (N symbolic) -> Conv -> Relu -> Resize to twice the size ->
    GlobalAveragePool -> Reshape -> MatMul -> Softmax -> ``probs`` [N,10].

    Written as jax2tf and Paddle2ONNX write graphs: the Reshape's new shape is computed at
    run time (``Shape → Gather → Concat``), the Resize's ``sizes`` too
    (``Shape → Slice`` of the batch and channels, concatenated with twice the spatial
    size, computed with ``Mul``), the output types are left unpopulated, and a CastLike
    casts the scale. TVM 0.27's importer refuses it as written ("Reshape requires the
    input new shape to be Shape"); ``legalize-tvm`` with a bound batch makes it importable.
    """
    b = _GraphBuilder("exporter_style_cnn", np.random.default_rng(seed))
    w = b.rng.normal(0.0, 0.3, (8, 3, 3, 3)).astype(np.float32)
    h = b.node("Conv", ["image", b.initializer("conv.weight", w)], "/conv", pads=[1, 1, 1, 1])
    h = b.node("Relu", [h], "/relu")
    shape = b.node("Shape", [h], "/resize/shape")
    head = b.node("Slice", [shape, b.initializer("c0", np.array([0], np.int64)),
                            b.initializer("c2", np.array([2], np.int64))], "/resize/head")
    spatial = b.node("Slice", [shape, b.initializer("c2b", np.array([2], np.int64)),
                               b.initializer("c4", np.array([4], np.int64))], "/resize/spatial")
    doubled = b.node("Mul", [spatial, b.initializer("two", np.array([2], np.int64))], "/resize/mul")
    sizes = b.node("Concat", [head, doubled], "/resize/sizes", axis=0)
    h = b.node("Resize", [h, "", "", sizes], "/resize", mode="linear")
    h = b.node("GlobalAveragePool", [h], "/pool")
    batch = b.node("Gather", [b.node("Shape", [h], "/flat/shape"),
                              b.initializer("zero", np.array([0], np.int64))], "/flat/gather", axis=0)
    new_shape = b.node("Concat", [batch, b.initializer("minus_one", np.array([-1], np.int64))],
                       "/flat/concat", axis=0)
    h = b.node("Reshape", [h, new_shape], "/flat")
    fc = b.rng.normal(0.0, 0.3, (8, 10)).astype(np.float32)
    h = b.node("MatMul", [h, b.initializer("fc.weight", fc)], "/fc")
    scale = b.node("CastLike", [b.initializer("scale", np.array(0.5, np.float64)), h], "/scale/cast")
    h = b.node("Mul", [h, scale], "/scale")
    h = b.node("Softmax", [h], "/softmax", axis=-1)
    _rename_output(b, h, "probs")
    return b.model(
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])],
        f"exporter-style CNN with run-time shape computations, random weights (seed {seed}).",
    )
