"""Static int8 quantization in QDQ form: ``y = Op(x, W, b)`` ->
``y' = DQ(Q(Op(DQ(Q(x)), DQ(W_int8), DQ(b_int32))))``, the pattern onnxruntime's QDQ
transformer fuses into its int8 kernels (QLinearConv, QLinearMatMul, QGemm, ...).

Activations get one QuantizeLinear/DequantizeLinear pair per tensor (u8 asymmetric by
default, the fastest form on x86's u8s8 kernels; s8 symmetric on request) with ranges
from calibration; weights are stored as int8 initializers, symmetric, per output
channel, in 7 bits unless told otherwise (x86 without VNNI saturates full-range u8 x s8
pairs; the passes choose from the target);
Conv and Gemm biases as int32 with scale ``s_x * s_w``. Their zero point is 0, which
is DequantizeLinear's default: the DequantizeLinear of a bias or a Conv weight leaves
it out (MatMul and Gemm weights keep it, for onnxruntime's QGemm fusion), and scales
and zero points of equal value are stored once. Before planning, a
BatchNormalization that follows a quantized Conv is folded into the Conv's weights
(``Conv(x, W, b) ∘ BN -> Conv(x, W', b')``) so the int8 kernel absorbs it, and a Relu
(or Clip from 0) right after a quantized op is folded into that op's output
quantization: u8 with zero point 0 clamps at 0 exactly as Relu does.

Which ops are quantized is a policy (`QuantConfig.ops`): the compute-heavy ops only
(Conv, MatMul, Gemm; the default) or everything onnxruntime has int8 kernels for
(``all``). Nodes inside If branches are quantized too; Loop and Scan bodies are not.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import numpy as np

from edgec.frontend import export_model
from edgec.ir.core import Graph, Model, Node, Value
from edgec.ir.types import DataType, TensorType
from edgec.quantization import calibration as cal
from edgec.quantization.observe import Progress, observe

COMPUTE_OPS = ("Conv", "MatMul", "Gemm")
# Everything onnxruntime's CPU EP runs in int8 when wrapped in QDQ.
ALL_OPS = ("Conv", "MatMul", "Gemm", "Add", "Mul", "MaxPool", "AveragePool",
           "GlobalAveragePool", "Concat", "Sigmoid", "LeakyRelu", "Softmax", "Relu", "Clip",
           "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze")
# Data-movement ops beyond ALL_OPS that onnxruntime may run on uint8 directly (Resize
# only in nearest mode): the contiguous placement asks onnxruntime which ones it does
# (`edgec.quantization.executed`), so they are candidates only there.
MOVEMENT_OPS = ("Resize", "Slice", "Gather", "DepthToSpace", "SpaceToDepth")
# Ops whose output takes its input's parameters, so onnxruntime can drop the QDQ
# around them and move int8 data unchanged.
SHARED_PARAMS = frozenset({"MaxPool", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze",
                           *MOVEMENT_OPS})
# Ops whose int8 kernel can return fp32 directly (MatMulIntegerToFloat, QGemm with
# float output): their output is quantized only when every reader is quantized.
FLOAT_OUTPUT_OK = frozenset({"MatMul", "Gemm"})
CONTROL_FLOW_SKIPPED = frozenset({"Loop", "Scan"})


@dataclass(frozen=True)
class QuantConfig:
    """What to quantize and how. ``ops`` is the op-type policy ("all" expands to
    ALL_OPS); ``exclude`` names nodes kept fp32; ``only``, when set, quantizes just
    those nodes (sensitivity analysis). ``placement`` is how nodes are picked:
    ``ops`` (the op-type policy), ``contiguous`` (every node onnxruntime runs in int8,
    probed, in regions joined to a Conv/MatMul/Gemm: `edgec.quantization.placement`;
    ``ops`` is then not read)."""

    ops: tuple[str, ...] = COMPUTE_OPS
    placement: str = "ops"
    calibration: str = "minmax"         # minmax | percentile | entropy
    percentile: float = 99.99
    per_channel: bool = True
    symmetric_activations: bool = False
    exclude: tuple[str, ...] = ()
    only: tuple[str, ...] = ()
    samples: int = 128
    fold_batchnorm: bool = True
    fold_relu: bool = True
    # 7-bit weights: x86 without VNNI multiplies u8 x s8 pairs with vpmaddubsw, whose
    # int16 sums saturate for full-range weights (onnxruntime's reduce_range). The safe
    # default here; the passes choose from the target (arithmetic.weight_range).
    reduce_range: bool = True
    # Contiguous placement: HardSwish/HardSigmoid rewritten as Mul/Add/Clip, which run
    # in int8 (`edgec.quantization.decompose`).
    decompose_hard: bool = True

    @property
    def weight_bits(self) -> int:
        return 7 if self.reduce_range else 8

    @property
    def op_types(self) -> frozenset[str]:
        if self.placement == "contiguous":
            return frozenset((*ALL_OPS, *MOVEMENT_OPS))
        expanded: set[str] = set()
        for op in self.ops:
            expanded.update(ALL_OPS if op.lower() == "all" else (op,))
        return frozenset(expanded)


@dataclass
class Calibration:
    """Observed range per value name (and the method that produced it)."""

    ranges: dict[str, tuple[float, float]]
    method: str
    samples: int
    observed: frozenset[str] = frozenset()  # the values asked for (some have no range)


# --------------------------------------------------------------------------- plan


@dataclass
class _Plan:
    nodes: list[Node] = field(default_factory=list)
    # id(value) -> value, for activation tensors to wrap in Q/DQ
    activations: dict[int, Value] = field(default_factory=dict)
    # id(value) whose every reader must read the DQ (outputs of quantized ops)
    outputs: set[int] = field(default_factory=set)
    # id(value) -> the value whose parameters it shares
    shared: dict[int, Value] = field(default_factory=dict)
    # id(value) -> name of the value whose calibrated range it takes (Relu folding)
    range_of: dict[int, str] = field(default_factory=dict)
    relu_folds: list[tuple[Node, Node]] = field(default_factory=list)  # (producer, relu)
    weights: list[tuple[Node, int, int | None]] = field(default_factory=list)  # node, input, axis
    # (node holding the bias, its bias input, node holding activation and weight,
    # activation input, weight input): Conv/Gemm biases, and the constant of the Add
    # that follows a MatMul (onnxruntime turns MatMul + Add into Gemm, and fuses that
    # into QGemm only when the bias is an int32 DequantizeLinear).
    biases: list[tuple[Node, int, Node, int, int]] = field(default_factory=list)


def quantizable_graphs(model: Model) -> list[Graph]:
    """The main graph and If branches, recursively (not Loop/Scan bodies)."""
    out = []

    def visit(g: Graph) -> None:
        out.append(g)
        for node in g:
            if node.op_type in CONTROL_FLOW_SKIPPED or node.domain not in ("", "ai.onnx"):
                continue
            for sub in node.subgraphs():
                visit(sub)

    visit(model.graph)
    return out


def is_float(v: Value | None) -> bool:
    """Whether ``v`` is a float32 value, or of unknown type (taken as float32)."""
    return v is not None and v.dtype in (DataType.FLOAT, None)


def _constant(v: Value | None) -> np.ndarray | None:
    if v is not None and v.is_constant() and v.const is not None:
        return v.const.numpy()
    return None


def candidate_nodes(model: Model, config: QuantConfig) -> list[Node]:
    """Nodes the placement would quantize (before ``exclude``/``only``)."""
    if config.placement == "contiguous":
        from edgec.quantization.placement import contiguous_nodes
        return contiguous_nodes(model)
    if config.placement != "ops":
        raise ValueError(f"unknown placement '{config.placement}' (ops or contiguous)")
    return typed_candidates(model, config.op_types)


def typed_candidates(model: Model, ops: frozenset[str]) -> list[Node]:
    """Nodes of the op types ``ops`` that the QDQ form can wrap."""
    out = []
    for g in quantizable_graphs(model):
        for node in g:
            if node.domain not in ("", "ai.onnx") or node.op_type not in ops:
                continue
            if not node.inputs or not is_float(node.inputs[0]) or not node.outputs:
                continue
            if any(o.dtype not in (DataType.FLOAT, None) for o in node.outputs[:1]):
                continue
            if node.op_type == "Gemm" and node.attr("transA", 0):
                continue
            if node.op_type == "Clip" and not _clip_bounds_constant(node):
                continue
            if node.op_type in ("Conv",) and _constant(node.inputs[1]) is None:
                continue
            if any(v is not None and v.producer() is not None
                   and v.producer().op_type == "DequantizeLinear" for v in node.inputs):
                continue  # already quantized: running the pass twice changes nothing
            out.append(node)
    return out


def _clip_bounds_constant(node: Node) -> bool:
    return all(v is None or _constant(v) is not None for v in node.inputs[1:])


def _selected(model: Model, config: QuantConfig) -> list[Node]:
    only, exclude = set(config.only), set(config.exclude)
    return [n for n in candidate_nodes(model, config)
            if n.name not in exclude and (not only or n.name in only)]


def _weight_axis(node: Node, index: int) -> int | None:
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        return 0 if node.attr("transB", 0) else 1
    if node.op_type == "MatMul":
        return len(node.inputs[index].const.dims) - 1
    return None


def _plan(model: Model, config: QuantConfig) -> _Plan:
    plan = _Plan()
    selected = _selected(model, config)
    chosen = {id(n) for n in selected}
    plan.nodes = selected

    def activation(v: Value) -> None:
        plan.activations[id(v)] = v

    for node in selected:
        op = node.op_type
        inputs = node.inputs
        if op in ("Conv", "Gemm", "MatMul"):
            activation(inputs[0])
            w = inputs[1]
            if _constant(w) is not None and (op != "MatMul" or len(w.const.dims) == 2):
                plan.weights.append((node, 1, _weight_axis(node, 1) if config.per_channel else None))
                if len(inputs) > 2 and inputs[2] is not None and _constant(inputs[2]) is not None \
                        and len(inputs[2].const.dims) == 1 and op != "MatMul":
                    plan.biases.append((node, 2, node, 0, 1))
                if op == "MatMul":
                    _matmul_bias(node, chosen, plan)
            elif is_float(w):
                activation(w)
        elif op == "Clip":
            activation(inputs[0])
        elif op in ("Add", "Mul", "Concat"):
            for v in inputs:
                if is_float(v):
                    activation(v)
        else:
            activation(inputs[0])
        out = node.outputs[0]
        readers = out.consumers()
        if op in FLOAT_OUTPUT_OK and (not readers or out.is_graph_output()
                                      or any(id(r) not in chosen for r in readers)):
            continue
        plan.outputs.add(id(out))
        activation(out)
        if op in SHARED_PARAMS:
            plan.shared[id(out)] = inputs[0]
        # Relu folding: the op's only reader is a Relu (or Clip from 0).
        if (config.fold_relu and not config.symmetric_activations and op not in SHARED_PARAMS
                and len(out.uses()) == 1 and not out.is_graph_output()):
            relu = readers[0]
            if relu.graph is node.graph and is_relu(relu):
                plan.relu_folds.append((node, relu))
                plan.range_of[id(out)] = relu.outputs[0].name
    return plan


def _matmul_bias(matmul: Node, chosen: set[int], plan: _Plan) -> None:
    """Plans the Add after a quantized MatMul as its int32 bias, when the MatMul's
    float output is read only by an Add (not itself quantized) of a constant vector
    as long as the weight's last axis."""
    out = matmul.outputs[0]
    uses = out.uses()
    if len(uses) != 1 or out.is_graph_output():
        return
    add, index = uses[0]
    if add.op_type != "Add" or add.domain not in ("", "ai.onnx") or id(add) in chosen or add.graph is not matmul.graph:
        return
    bias = add.inputs[1 - index]
    const = _constant(bias) if bias is not None else None
    columns = matmul.inputs[1].const.dims[-1]
    if const is None or const.dtype != np.float32 or const.shape != (columns,):
        return
    plan.biases.append((add, 1 - index, matmul, 0, 1))


def is_relu(node: Node) -> bool:
    if node.op_type == "Relu" and node.domain in ("", "ai.onnx"):
        return True
    if node.op_type == "Clip" and node.domain in ("", "ai.onnx") and len(node.inputs) > 1:
        low = _constant(node.inputs[1])
        high = _constant(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
        if low is None or low.size != 1 or (high is not None and high.size != 1):
            return False
        return float(low.reshape(-1)[0]) == 0.0 and (high is None or float(high.reshape(-1)[0]) > 0) \
            and (len(node.inputs) < 3 or node.inputs[2] is None or high is not None)
    return False


def _needed_names(model: Model, config: QuantConfig) -> set[str]:
    """Every value whose range any exclusion of ``config`` might ask for."""
    names: set[str] = set()
    full = _plan(model, replace(config, exclude=(), only=()))
    for v in full.activations.values():
        names.add(v.name)
    names.update(full.range_of.values())
    for node in candidate_nodes(model, config):
        for v in list(node.inputs) + list(node.outputs):
            if is_float(v) and _constant(v) is None and v is not None:
                names.add(v.name)
    return {n for n in names if n}


# --------------------------------------------------------------------------- calibration


# Calibrations of this process, newest last: the planner's int8 candidates quantize the
# same model on the same samples under different policies; a value's range does not
# depend on which other values are observed, so one run for all of them serves each.
_CALIBRATIONS: list[tuple[tuple, Calibration]] = []
_KEPT_CALIBRATIONS = 4


def calibrate(model: Model, samples: dict[str, np.ndarray], config: QuantConfig,
              progress: Progress | None = None) -> Calibration:
    """Run the model on up to ``config.samples`` samples and compute a range for every
    value the policy may quantize, with the configured method. Every value any policy
    (op types, all ops, contiguous) may quantize is observed at once, and the ranges
    are kept for the next call on the same model and samples."""
    samples = {k: v[:config.samples] for k, v in samples.items()}
    proto = export_model(model)
    initializers = {t.name for t in proto.graph.initializer}
    fed = [vi.name for vi in proto.graph.input if vi.name not in initializers]
    # A model without inputs (every operand a constant) computes one thing: one run.
    count = min((len(v) for v in samples.values()), default=0) if fed else 1
    if count == 0:
        raise ValueError("calibration needs at least one sample")
    wanted = _needed_names(model, config)
    key = _calibration_key(proto, samples, config)
    for cached_key, cached in reversed(_CALIBRATIONS):
        if cached_key == key and wanted <= cached.observed:
            return cached
    for policy in (replace(config, placement="ops", ops=("all",)), replace(config, placement="contiguous")):
        wanted |= _needed_names(model, policy)
    calibration = _calibrate(model, proto, samples, config, wanted, count, progress, key[0])
    _CALIBRATIONS.append((key, calibration))
    del _CALIBRATIONS[:-_KEPT_CALIBRATIONS]
    return calibration


def _calibration_key(proto, samples: dict[str, np.ndarray], config: QuantConfig) -> tuple:
    digest = hashlib.sha256(proto.SerializeToString())
    for name in sorted(samples):
        array = np.ascontiguousarray(samples[name])
        digest.update(f"{name}{array.dtype.str}{array.shape}".encode())
        digest.update(array.data)
    return digest.hexdigest(), config.calibration, config.percentile


# What the model's values were observed to be, per model and samples (not per method):
# their extremes and, once a clipping method asked, their histograms. Every method
# derives its ranges from these, so `calibration=auto` costs two runs of the model, not
# one or two per method.
@dataclass
class _Observation:
    wanted: frozenset[str]
    extremes: dict[str, tuple[float, float]]
    histograms: dict[str, "cal.Histogram"] | None = None


_OBSERVATIONS: dict[str, _Observation] = {}
_KEPT_OBSERVATIONS = 2


def _calibrate(model: Model, proto, samples: dict[str, np.ndarray], config: QuantConfig,
               wanted: set[str], count: int, progress: Progress | None,
               digest: str | None = None) -> Calibration:
    if config.calibration not in ("minmax", "percentile", "entropy"):
        raise ValueError(f"unknown calibration method '{config.calibration}' "
                         "(minmax, percentile or entropy)")
    seen = _OBSERVATIONS.get(digest) if digest is not None else None
    if seen is None or not wanted <= seen.wanted:
        seen = _Observation(frozenset(wanted), _extremes(model, proto, samples, wanted, progress))
        if digest is not None:
            _OBSERVATIONS.pop(digest, None)
            _OBSERVATIONS[digest] = seen
            while len(_OBSERVATIONS) > _KEPT_OBSERVATIONS:
                del _OBSERVATIONS[next(iter(_OBSERVATIONS))]
    ranges = {k: v for k, v in seen.extremes.items() if k in wanted}
    if config.calibration in ("percentile", "entropy"):
        if seen.histograms is None:
            hists = {k: cal.Histogram(max(abs(lo), abs(hi))) for k, (lo, hi) in seen.extremes.items()}
            observe(proto, samples, set(hists), lambda n, a: hists[n].add(a), progress=progress,
                    base_dir=model.base_dir)
            seen.histograms = hists
        unclipped = unclipped_values(model)
        for k in ranges:
            if k in unclipped or k not in seen.histograms:
                continue
            h = seen.histograms[k]
            if config.calibration == "percentile":
                ranges[k] = cal.percentile_range(h, config.percentile, ranges[k])
            else:
                ranges[k] = cal.entropy_range(h, ranges[k])
    return Calibration(ranges, config.calibration, count, observed=frozenset(wanted))


def _extremes(model: Model, proto, samples: dict[str, np.ndarray], wanted: set[str],
              progress: Progress | None) -> dict[str, tuple[float, float]]:
    observed: dict[str, list[float]] = {}

    def minmax(name: str, array: np.ndarray) -> None:
        if array.dtype.kind != "f":
            return
        array = array[np.isfinite(array)]  # -inf masks, NaN: no range can represent them
        if array.size == 0:
            return
        lo, hi = float(array.min()), float(array.max())
        if name in observed:
            r = observed[name]
            r[0], r[1] = min(r[0], lo), max(r[1], hi)
        else:
            observed[name] = [lo, hi]

    observe(proto, samples, wanted, minmax, progress=progress, base_dir=model.base_dir)
    return {k: (v[0], v[1]) for k, v in observed.items()}


# Ops whose output range is bounded by the op itself (Sigmoid, Softmax, HardSigmoid: within
# [0, 1]; Tanh: [-1, 1]): the bound is not a tail to clip. A probability map is mostly
# near 0, so KL entropy or a percentile put its range's top below 0.5 and every
# "positive" pixel then saturates there (the detector's IoU fell to 0 with ops=all).
BOUNDED_OUTPUT_OPS = frozenset({"Sigmoid", "HardSigmoid", "Softmax", "LogSoftmax", "Tanh"})


def unclipped_values(model: Model) -> set[str]:
    """Values a clipping calibration (percentile, entropy) leaves at their observed
    extremes: the outputs of BOUNDED_OUTPUT_OPS, and the model's outputs (what the user
    reads: a clipped tail there is an error in the result itself, not noise that later
    layers absorb)."""
    names = {v.name for v in model.graph.outputs if v.name}
    for g in quantizable_graphs(model):
        for node in g:
            if node.op_type in BOUNDED_OUTPUT_OPS and node.domain in ("", "ai.onnx"):
                names.update(o.name for o in node.outputs[:1] if o.name)
    return names


# --------------------------------------------------------------------------- parameters


def activation_params(lo: float, hi: float, symmetric: bool) -> tuple[np.float32, np.ndarray]:
    """Scale and zero point: u8 over [min(lo,0), max(hi,0)], or s8 symmetric (zp 0)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if symmetric:
        bound = max(-lo, hi)
        scale = bound / 127.0 if bound > 0 else 1.0
        return np.float32(scale), np.array(0, np.int8)
    scale = (hi - lo) / 255.0 if hi > lo else 1.0
    zero = int(np.clip(round(-lo / scale), 0, 255))
    return np.float32(scale), np.array(zero, np.uint8)


def quantize_weight(w: np.ndarray, axis: int | None, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric signed quantization (zero point 0) per slice along ``axis`` or per
    tensor: returns (int8 values in [-(2^(b-1)-1), 2^(b-1)-1], float32 scales)."""
    qmax = 2 ** (bits - 1) - 1
    w = np.asarray(w, dtype=np.float32)
    if axis is None:
        absmax = np.array(np.abs(w).max() if w.size else 0.0, np.float32)
    else:
        axes = tuple(i for i in range(w.ndim) if i != axis)
        absmax = np.abs(w).max(axis=axes) if w.size else np.zeros(w.shape[axis], np.float32)
    scale = np.where(absmax > 0, absmax / qmax, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -qmax, qmax).astype(np.int8)
    return q, scale


def with_weights_rounded(model, axes: dict[str, int], bits: int = 8):
    """A copy of ``model`` (an onnx.ModelProto) whose initializers named in ``axes``
    hold their `quantize_weight` round trip (per slice along ``axes[name]``) in float32:
    the weights' rounding error alone, with every activation left in float."""
    import onnx
    from onnx import numpy_helper

    rounded = onnx.ModelProto()
    rounded.CopyFrom(model)
    for tensor in rounded.graph.initializer:
        if tensor.name in axes:
            w = numpy_helper.to_array(tensor)
            q, scale = quantize_weight(w, axes[tensor.name], bits)
            shape = [1] * w.ndim
            shape[axes[tensor.name]] = -1
            tensor.CopyFrom(numpy_helper.from_array(
                (q.astype(np.float32) * scale.reshape(shape)).astype(np.float32), tensor.name))
    return rounded


# --------------------------------------------------------------------------- rewrite


def apply(model: Model, calibration: Calibration, config: QuantConfig) -> dict[str, int]:
    """Insert the QDQ pairs ``config`` asks for, with ranges from ``calibration``."""
    plan = _plan(model, config)
    # Folding renames values that are graph outputs; ranges are keyed by the old names.
    calibrated_name = {id(v): v.name for v in plan.activations.values()}
    for producer, relu in plan.relu_folds:
        graph = relu.graph
        out = producer.outputs[0]
        graph.replace_value(relu.outputs[0], out)
        graph.remove(relu)
    params: dict[int, tuple[np.float32, np.ndarray]] = {}

    def params_of(v: Value) -> tuple[np.float32, np.ndarray]:
        key = id(v)
        if key in params:
            return params[key]
        if key in plan.shared and id(plan.shared[key]) in plan.activations:
            p = params_of(plan.shared[key])
        else:
            name = plan.range_of.get(key, calibrated_name.get(key, v.name))
            const = _constant(v)
            if const is not None:
                lo, hi = float(const.min()), float(const.max())
            elif name in calibration.ranges:
                lo, hi = calibration.ranges[name]
            else:
                raise ValueError(f"no calibration range for value '{name}'")
            p = activation_params(lo, hi, config.symmetric_activations)
        params[key] = p
        return p

    constants = _Parameters()
    stats = {"nodes-quantized": len(plan.nodes), "activations": 0, "weights": 0, "biases": 0,
             "relu-folded": len(plan.relu_folds)}
    # Biases first: they need the activation scale and the unquantized weight.
    for node, b_index, owner, a_index, w_index in plan.biases:
        x_scale, _ = params_of(owner.inputs[a_index])
        axis = next((ax for n, i, ax in plan.weights if n is owner and i == w_index), None)
        _, w_scale = quantize_weight(owner.inputs[w_index].const.numpy(), axis, config.weight_bits)
        bias = node.inputs[b_index].const.numpy().astype(np.float64)
        scale = (np.float64(x_scale) * w_scale.astype(np.float64)).astype(np.float32)
        if scale.ndim == 0:
            scale = np.full(bias.shape, scale, np.float32)
        q = np.clip(np.round(bias / scale.astype(np.float64)), -2**31, 2**31 - 1).astype(np.int32)
        dq = _dequantize(constants, node, q, scale, None, 0, "bias")
        node.set_input(b_index, dq)
        stats["biases"] += 1
    shared_weights: dict[tuple[int, int | None, int], Value] = {}
    # Weights are symmetric: their zero point (0) is left out, except for Gemm and MatMul
    # weights: onnxruntime (1.32) fuses DQ -> Gemm into QGemm only with an explicit zero
    # point, and it turns MatMul + Add into Gemm first. (The zero arrays are shared.)
    explicit_zero_point = {(id(n.inputs[i]), axis, id(n.graph)) for n, i, axis in plan.weights
                           if n.op_type in ("Gemm", "MatMul")}
    for node, index, axis in plan.weights:
        w = node.inputs[index]
        key = (id(w), axis, id(node.graph))
        if key not in shared_weights:
            q, scale = quantize_weight(w.const.numpy(), axis, config.weight_bits)
            zp = np.zeros(scale.shape, np.int8) if key in explicit_zero_point else None
            shared_weights[key] = _dequantize(constants, node, q, scale, zp, axis, w.name or "w")
            stats["weights"] += 1
        node.set_input(index, shared_weights[key])
    quantized_readers = {id(n) for n in plan.nodes}
    for v in list(plan.activations.values()):
        if not v.has_uses() and not v.is_graph_output():
            continue  # the output of a folded Relu
        scale, zp = params_of(v)
        const = _constant(v)
        if const is not None:  # a constant operand of Add/Mul/Concat: quantize it offline
            q = _quantize_array(const, scale, zp)
            readers = [(n, i) for n, i in v.uses() if id(n) in quantized_readers]
            for n, i in readers:
                n.set_input(i, _dequantize(constants, n, q, np.asarray(scale), zp, None, v.name))
            continue
        everyone = id(v) in plan.outputs
        _insert_qdq(constants, v, scale, zp, everyone, quantized_readers)
        stats["activations"] += 1
    if config.placement == "contiguous" and config.decompose_hard:
        from edgec.quantization.decompose import fold_scalar_multiplies
        stats["scalar-muls-folded"] = fold_scalar_multiplies(model)
    for g in quantizable_graphs(model):
        g.remove_unused_initializers()
    return stats


def _quantize_array(x: np.ndarray, scale, zp: np.ndarray) -> np.ndarray:
    info = np.iinfo(zp.dtype)
    return np.clip(np.round(x / scale) + zp.astype(np.int32), info.min, info.max).astype(zp.dtype)


class _Parameters:
    """Scale and zero-point initializers, one per graph and distinct value: many
    tensors share their quantization parameters (every ReLU6 output's range is [0, 6]),
    and one initializer serves all their QuantizeLinear/DequantizeLinear nodes."""

    def __init__(self) -> None:
        self._made: dict[tuple, Value] = {}

    def constant(self, graph: Graph, array: np.ndarray, name: str) -> Value:
        key = (id(graph), array.dtype.str, array.shape, array.tobytes())
        if key not in self._made:
            self._made[key] = graph.make_constant(array, name)
        return self._made[key]


def _dequantize(constants: _Parameters, reader: Node, q: np.ndarray, scale: np.ndarray,
                zp: np.ndarray | None, axis: int | None, label: str) -> Value:
    """An initializer ``q`` and a DequantizeLinear, placed before ``reader``. Without
    ``zp`` the zero point input is left out: ONNX reads it as 0 of ``q``'s type, which
    is what symmetric int8 weights and int32 biases have (an explicit array of zeros
    as long as the scales would only make the model bigger)."""
    # Constants live in the reader's own graph: onnxruntime's optimizer looks for a
    # DequantizeLinear's weight in the DequantizeLinear's graph, not in outer scopes.
    graph = reader.graph
    q_value = graph.make_constant(q, f"{label}_quantized")
    s_value = constants.constant(graph, np.asarray(scale, np.float32), f"{label}_scale")
    inputs = [q_value, s_value]
    if zp is not None:
        inputs.append(constants.constant(graph, zp, f"{label}_zero_point"))
    attrs = {"axis": axis} if axis is not None and np.ndim(scale) == 1 else {}
    out = Value(None, TensorType(DataType.FLOAT, q_value.shape))
    dq = Node("DequantizeLinear", inputs, attributes=attrs, outputs=[out],
              name=graph.unique_name(f"{label}_DequantizeLinear"))
    graph.insert_before(reader, dq)
    return out


def _insert_qdq(constants: _Parameters, v: Value, scale, zp: np.ndarray, everyone: bool,
                quantized_readers: set[int]) -> None:
    """v -> QuantizeLinear -> DequantizeLinear -> (readers). With ``everyone`` every
    reader (and a graph output slot) takes the DQ; otherwise quantized readers only."""
    uses = [(n, i) for n, i in v.uses() if everyone or id(n) in quantized_readers]
    graph = v.graph
    if graph is None or not uses and not (everyone and v.is_graph_output()):
        return
    base = v.name or "v"
    s_value = constants.constant(graph, np.asarray(scale, np.float32), f"{base}_scale")
    z_value = constants.constant(graph, zp, f"{base}_zero_point")
    q_dtype = DataType.from_numpy(zp.dtype)
    q_out = Value(None, TensorType(q_dtype, v.shape))
    dq_out = Value(None, TensorType(DataType.FLOAT, v.shape) if v.shape is not None else v.type)
    q = Node("QuantizeLinear", [v, s_value, z_value], outputs=[q_out],
             name=graph.unique_name(f"{base}_QuantizeLinear"))
    dq = Node("DequantizeLinear", [q_out, s_value, z_value], outputs=[dq_out],
              name=graph.unique_name(f"{base}_DequantizeLinear"))
    producer = v.producer()
    if producer is not None and producer.graph is graph:
        graph.insert_after(producer, [q, dq])
    else:
        first = next(iter(graph), None)
        if first is None:
            graph.append(q)
            graph.append(dq)
        else:
            graph.insert_before(first, [q, dq])
    for n, i in uses:
        n.set_input(i, dq_out)
    if everyone:
        graph.hand_over_outputs(v, dq_out, "_float")


# --------------------------------------------------------------------------- the whole flow


def prepare(model: Model, config: QuantConfig) -> int:
    """The rewrites quantization wants first (BatchNormalization folded into Conv;
    for the contiguous placement, HardSwish/HardSigmoid written in ops with int8
    kernels: `edgec.quantization.decompose`)."""
    folded = fold_batchnorms(model) if config.fold_batchnorm else 0
    if config.placement == "contiguous" and config.decompose_hard:
        from edgec.quantization.decompose import decompose_hard_activations
        decompose_hard_activations(model)
    return folded


def quantize_static(model: Model, samples: dict[str, np.ndarray], config: QuantConfig = QuantConfig(),
                    progress: Progress | None = None,
                    calibration: Calibration | None = None) -> dict[str, int | float]:
    """Fold, calibrate and insert QDQ, in place. Returns statistics."""
    folded = prepare(model, config)
    if calibration is None:
        # Nothing to quantize: no reason to run the model (it may not even run on the
        # samples given, e.g. an input the samples lack).
        calibration = (calibrate(model, samples, config, progress) if _plan(model, config).nodes
                       else Calibration({}, config.calibration, 0))
    stats = apply(model, calibration, config)
    stats["batchnorm-folded"] = folded
    stats["calibration-samples"] = calibration.samples
    return stats


def fold_batchnorms(model: Model) -> int:
    """``Conv(x, W, b) ∘ BatchNormalization(γ, β, μ, σ²) -> Conv(x, W·k, (b-μ)·k+β)``
    with ``k = γ/√(σ²+ε)``, when the Conv's weights are constants and the Conv's
    output is read by that BatchNormalization only."""
    folded = 0
    for graph in quantizable_graphs(model):
        for bn in list(graph):
            if bn.op_type != "BatchNormalization" or bn.domain not in ("", "ai.onnx"):
                continue
            if len(bn.outputs) > 1 and any(o.has_uses() or o.is_graph_output() for o in bn.outputs[1:]):
                continue
            conv = bn.inputs[0].producer() if bn.inputs[0] is not None else None
            if conv is None or conv.op_type != "Conv" or conv.graph is not graph:
                continue
            x = conv.outputs[0]
            if len(x.uses()) != 1 or x.is_graph_output():
                continue
            params = [_constant(v) for v in bn.inputs[1:5]]
            weight = _constant(conv.inputs[1])
            bias = _constant(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] is not None else None
            if weight is None or any(p is None for p in params) or \
                    (len(conv.inputs) > 2 and conv.inputs[2] is not None and bias is None):
                continue
            gamma, beta, mean, var = (p.astype(np.float64) for p in params)
            k = gamma / np.sqrt(var + float(bn.attr("epsilon", 1e-5)))
            new_w = (weight.astype(np.float64) * k.reshape(-1, *([1] * (weight.ndim - 1)))).astype(np.float32)
            b = bias.astype(np.float64) if bias is not None else np.zeros_like(mean)
            new_b = ((b - mean) * k + beta).astype(np.float32)
            w_value = model.graph.make_constant(new_w, f"{conv.inputs[1].name}_bn_folded")
            b_value = model.graph.make_constant(new_b, f"{conv.name or 'conv'}_bias_bn_folded")
            conv.set_input(1, w_value)
            if len(conv.inputs) > 2:
                conv.set_input(2, b_value)
            else:
                conv.append_input(b_value)
            graph.replace_value(bn.outputs[0], x)
            graph.remove(bn, safe=False)
            folded += 1
    for g in quantizable_graphs(model):
        g.remove_unused_initializers()
    return folded
