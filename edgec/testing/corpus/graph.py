"""A graph builder that writes node and value names, shape chains and opsets the way
real exporters do (Paddle2ONNX, the PyTorch exporter, jax2tf through tf2onnx), and the
onnxruntime helpers the corpus fits its heads with.

The corpus models must meet edgec's passes (and TVM's importer) with the patterns those
exporters produce: a symbolic batch dimension, shapes computed at run time
(``Shape → Gather → Unsqueeze → Concat`` feeding ``Reshape``, ``Resize`` or
``ConstantOfShape``), exporter-specific names.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

from edgec.testing.models import calibrate_batchnorms

IR_VERSION = 8

# How each exporter names nodes and the values they write.
PADDLE, TORCH, JAX2TF = "paddle2onnx", "pytorch", "jax2tf"
_PRODUCERS = {PADDLE: ("paddle2onnx", "1.0.6"), TORCH: ("pytorch", "2.1.0"), JAX2TF: ("tf2onnx", "1.16.1 15c810")}


class ExporterGraph:
    """Accumulates nodes and initializers for one exporter ``style`` at ``opset``.

    * ``paddle2onnx``: nodes ``p2o.{Op}.{k}`` (a counter per op type), values
      ``p2o.{Op}.{k}.tmp_0``;
    * ``pytorch``: nodes ``/{scope}/{Op}`` (``_1``, ``_2`` … on repeats), values
      ``/{scope}/{Op}_output_0``;
    * ``jax2tf``: nodes ``jax2tf_{fn}_/pjit_{fn}_/{scope}{op}`` (tf2onnx keeps the TF
      op names), values ``{node}:0``.
    """

    def __init__(self, name: str, style: str, opset: int, seed: int, *, function: str = "infer_fn"):
        if style not in _PRODUCERS:
            raise ValueError(f"unknown exporter style {style!r}")
        self.name, self.style, self.opset = name, style, opset
        self.rng = np.random.default_rng(seed)
        self.function = function
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._counts: dict[str, int] = {}

    # -- names ------------------------------------------------------------------

    def _unique(self, name: str) -> str:
        count = self._counts.get(name, 0)
        self._counts[name] = count + 1
        return name if count == 0 else f"{name}_{count}"

    def _node_name(self, op_type: str, scope: str) -> str:
        if self.style == PADDLE:
            count = self._counts.get(f"p2o.{op_type}", 0)
            self._counts[f"p2o.{op_type}"] = count + 1
            return f"p2o.{op_type}.{count}"
        if self.style == TORCH:
            return self._unique(f"{scope.rstrip('/')}/{op_type}")
        tf_name = scope if scope else op_type
        return self._unique(f"jax2tf_{self.function}_/pjit_{self.function}_/{tf_name}")

    def _value_name(self, node_name: str, index: int) -> str:
        if self.style == PADDLE:
            return f"{node_name}.tmp_{index}"
        if self.style == TORCH:
            return f"{node_name}_output_{index}"
        return f"{node_name}:{index}"

    # -- building ---------------------------------------------------------------

    def initializer(self, name: str, array: np.ndarray) -> str:
        name = self._unique(name)
        self.initializers.append(numpy_helper.from_array(np.array(array, order="C"), name))  # keeps 0-d arrays 0-d
        return name

    def ints(self, name: str, values) -> str:
        """A 1-D int64 constant (shape operands, axes, indices)."""
        return self.initializer(name, np.asarray(values, dtype=np.int64).reshape(-1))

    def scalar(self, name: str, value, dtype=np.float32) -> str:
        return self.initializer(name, np.array(value, dtype=dtype))

    def node(self, op_type: str, inputs: list[str], scope: str = "", *, outputs: int = 1, **attributes):
        """Adds a node; returns its output's name (a list when ``outputs`` > 1)."""
        node_name = self._node_name(op_type, scope)
        names = [self._value_name(node_name, i) for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=node_name, **attributes))
        return names[0] if outputs == 1 else names

    def unsqueeze(self, x: str, axes: list[int], scope: str = "") -> str:
        if self.opset >= 13:
            return self.node("Unsqueeze", [x, self.ints("unsqueeze.axes", axes)], scope)
        return self.node("Unsqueeze", [x], scope, axes=axes)

    def squeeze(self, x: str, axes: list[int], scope: str = "") -> str:
        if self.opset >= 13:
            return self.node("Squeeze", [x, self.ints("squeeze.axes", axes)], scope)
        return self.node("Squeeze", [x], scope, axes=axes)

    def dim(self, x: str, axis: int, scope: str = "") -> str:
        """``x``'s dimension ``axis`` as a 1-D int64 [1], computed at run time:
        ``Shape → Gather(scalar index) → Unsqueeze``, as the exporters write ``x.shape[i]``."""
        shape = self.node("Shape", [x], scope)
        index = self.initializer("gather.index", np.array(axis, dtype=np.int64))
        return self.unsqueeze(self.node("Gather", [shape, index], scope, axis=0), [0], scope)

    def shape_of(self, parts: list, scope: str = "") -> str:
        """A run-time shape: ``Concat`` of parts that are either value names (1-D int64
        from :meth:`dim`) or ints (written as constants)."""
        operands = [p if isinstance(p, str) else self.ints("shape.part", [p]) for p in parts]
        return self.node("Concat", operands, scope, axis=0)

    def model(self, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
              doc_string: str, *, calibration_feed: np.ndarray | None = None) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, inputs, outputs, self.initializers)
        producer, version = _PRODUCERS[self.style]
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                  producer_name=producer, producer_version=version, doc_string=doc_string)
        model.ir_version = IR_VERSION
        if calibration_feed is not None:
            # Running statistics of the task's images (see models.calibrate_batchnorms).
            calibrate_batchnorms(model, self.rng, feed=calibration_feed)
        return model


# ---------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------


def he_conv(rng: np.random.Generator, cout: int, cin_per_group: int, kernel, depthwise: bool = False) -> np.ndarray:
    """He-normal conv weight; depthwise kernels are low-pass (mean = spread), as in
    :func:`edgec.testing.models._conv`, and full kernels keep a low-pass part."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    std = math.sqrt(2.0 / (cin_per_group * kh * kw))
    if depthwise:
        return rng.normal(std, std, (cout, cin_per_group, kh, kw)).astype(np.float32)
    weight = rng.normal(0.0, std, (cout, cin_per_group, kh, kw))
    if kh * kw > 1:
        # A spatially constant part per (out, in) pair: zero-mean random kernels are
        # high-pass filters that drop the flat regions (a text box's inside) that trained
        # filters keep.
        weight += rng.normal(0.0, std, (cout, cin_per_group, 1, 1))
    return weight.astype(np.float32)


def batchnorm_params(rng: np.random.Generator, channels: int) -> list[np.ndarray]:
    """scale, bias, running mean, running var (the last two replaced by calibration)."""
    return [rng.uniform(0.8, 1.2, channels).astype(np.float32), rng.normal(0.0, 0.1, channels).astype(np.float32),
            np.zeros(channels, np.float32), np.ones(channels, np.float32)]


# ---------------------------------------------------------------------------------
# Running and fitting
# ---------------------------------------------------------------------------------


def session(model: onnx.ModelProto, threads: int = 0) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run_values(model: onnx.ModelProto, feed: dict[str, np.ndarray], names: list[str],
               batch: int | None = 8) -> list[np.ndarray]:
    """The values ``names`` (graph outputs or intermediate values) on ``feed``, run in
    batches of ``batch`` along axis 0 of every input (``None``: one run, as given)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    sess = session(probe)
    if batch is None:
        return sess.run(names, feed)
    count = len(next(iter(feed.values())))
    parts: list[list[np.ndarray]] = [[] for _ in names]
    for start in range(0, count, batch):
        piece = {k: v[start:start + batch] for k, v in feed.items()}
        for i, out in enumerate(sess.run(names, piece)):
            parts[i].append(out)
    return [np.concatenate(p, axis=0) for p in parts]


def ridge(features: np.ndarray, targets: np.ndarray, strength: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """Weight [features, outputs] and bias [outputs] of a ridge regression (on
    standardized features, ridge ``strength`` times the sample count)."""
    features = features.astype(np.float64)
    mean, std = features.mean(0), features.std(0) + 1e-6
    standard = (features - mean) / std
    gram = standard.T @ standard + strength * len(standard) * np.eye(standard.shape[1])
    target_mean = targets.mean(0)
    weight = np.linalg.solve(gram, standard.T @ (targets - target_mean)) / std[:, None]
    bias = target_mean - mean @ weight
    return weight, bias


def logistic(features: np.ndarray, labels: np.ndarray, *, l2: float = 1e-4,
             iterations: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Weight [features, 1] and bias [1] of an L2-regularized logistic regression of 0/1
    ``labels``, fitted by Newton's method (iteratively reweighted least squares) on the
    standardized features."""
    features = features.astype(np.float64)
    mean, std = features.mean(0), features.std(0) + 1e-6
    x = np.concatenate([(features - mean) / std, np.ones((len(features), 1))], axis=1)
    y = labels.reshape(-1).astype(np.float64)
    w = np.zeros(x.shape[1])
    penalty = l2 * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-np.clip(x @ w, -30, 30)))
        gradient = x.T @ (p - y) / len(x) + penalty @ w
        hessian = (x * (p * (1 - p))[:, None]).T @ x / len(x) + penalty + 1e-9 * np.eye(x.shape[1])
        w -= np.linalg.solve(hessian, gradient)
    weight = w[:-1] / std
    return weight[:, None], np.array([w[-1] - mean @ weight])


def set_initializer(model: onnx.ModelProto, name: str, array: np.ndarray) -> None:
    for tensor in model.graph.initializer:
        if tensor.name == name:
            tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array.astype(np.float32)), name))
            return
    raise KeyError(name)


def float_input(name: str, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def softmax_head(train: tuple[np.ndarray, np.ndarray], held: tuple[np.ndarray, np.ndarray], classes: int,
                 strengths: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)) -> tuple[np.ndarray, np.ndarray, float]:
    """A linear classifier [features, classes] + bias for a Softmax: ridge regression of
    one-hot targets (strength picked by held-out accuracy), scaled by the temperature that
    maximizes the held-out likelihood. Returns weight, bias and held-out accuracy."""
    (f_train, y_train), (f_held, y_held) = train, held
    best = None
    for strength in strengths:
        weight, bias = ridge(f_train, np.eye(classes)[y_train], strength)
        accuracy = float(np.mean((f_held @ weight + bias).argmax(-1) == y_held))
        if best is None or accuracy > best[0]:
            best = (accuracy, weight, bias)
    accuracy, weight, bias = best
    raw = f_held @ weight + bias
    likelihoods = []
    temperatures = (1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0)
    for temperature in temperatures:
        z = raw * temperature
        z = z - z.max(1, keepdims=True)
        likelihoods.append(float(np.mean(z[np.arange(len(z)), y_held] - np.log(np.exp(z).sum(1)))))
    temperature = temperatures[int(np.argmax(likelihoods))]
    return weight * temperature, bias * temperature, accuracy


def refine_softmax(features: np.ndarray, labels: np.ndarray, weight: np.ndarray, bias: np.ndarray, *,
                   steps: int = 150, rows: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``weight``/``bias`` after ``steps`` of gradient descent on the softmax cross-entropy
    (on at most ``rows`` rows), with the step size 1/L from the loss's curvature bound;
    ridge regression's squared loss is a poor fit at class boundaries."""
    if len(features) > rows:
        pick = np.random.default_rng(seed).choice(len(features), rows, replace=False)
        features, labels = features[pick], labels[pick]
    x = np.concatenate([features, np.ones((len(features), 1))], axis=1).astype(np.float64)
    w = np.concatenate([weight, bias[None]], axis=0).astype(np.float64)
    targets = np.eye(w.shape[1])[labels]
    rate = 1.0 / (0.5 * float(np.linalg.eigvalsh(x.T @ x / len(x))[-1]))
    for _ in range(steps):
        z = x @ w
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        w -= rate * (x.T @ (p - targets) / len(x))
    return w[:-1], w[-1]


def decayed_head(train: tuple[np.ndarray, np.ndarray], held: tuple[np.ndarray, np.ndarray], classes: int, *,
                 decays: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1),
                 steps: int = 400) -> tuple[np.ndarray, np.ndarray, float]:
    """A linear head fitted as training fits one: cross-entropy with weight decay on the
    weights themselves, the decay picked by held-out cross-entropy. ``classes`` > 1: a
    softmax head, weight [features, classes]; ``classes`` == 1: a sigmoid head of 0/1
    labels, weight [features, 1]. Returns weight, bias and held-out accuracy.

    Features are centred and divided by *one* scale (their overall RMS), never feature by
    feature: a per-feature standardization lets the penalty spare features of tiny spread
    (a nearly dead Relu channel), whose weights then grow by 1/spread once folded back —
    the weights no trained network has. Fitted by Nesterov-accelerated gradient descent
    with step 1/L from the loss's curvature bound."""
    (f_train, y_train), (f_held, y_held) = train, held
    mean = f_train.astype(np.float64).mean(0)
    scale = float(np.sqrt(np.mean((f_train - mean) ** 2))) or 1.0
    x = np.concatenate([(f_train - mean) / scale, np.ones((len(f_train), 1))], axis=1)
    x_held = np.concatenate([(f_held - mean) / scale, np.ones((len(f_held), 1))], axis=1)
    columns = max(classes, 2)  # a sigmoid head is a softmax over [0, z]
    targets = np.eye(columns)[y_train.reshape(-1).astype(np.int64)]
    curvature = 0.5 * float(np.linalg.eigvalsh(x.T @ x / len(x))[-1])

    def probabilities(inputs, w):
        z = inputs @ w
        p = np.exp(z - z.max(1, keepdims=True))
        return p / p.sum(1, keepdims=True)

    best = None
    for decay in decays:
        mask = np.ones((x.shape[1], 1))
        mask[-1] = 0.0  # the bias is not decayed
        rate = 1.0 / (curvature + decay)
        w = np.zeros((x.shape[1], columns))
        previous = w
        for step in range(steps):
            look = w + (step / (step + 3)) * (w - previous)
            gradient = x.T @ (probabilities(x, look) - targets) / len(x) + decay * mask * look
            previous, w = w, look - rate * gradient
        p_held = probabilities(x_held, w)
        labels = y_held.reshape(-1).astype(np.int64)
        loss = -float(np.mean(np.log(p_held[np.arange(len(labels)), labels] + 1e-12)))
        accuracy = float(np.mean(p_held.argmax(1) == labels))
        if best is None or loss < best[0]:
            best = (loss, w, accuracy)
    _, w, accuracy = best
    if classes == 1:
        w = w[:, 1:] - w[:, :1]
    weight = w[:-1] / scale
    return weight, w[-1] - mean @ weight, accuracy
