"""Per-node cost analysis: arithmetic operations and bytes moved, from static shapes.

What pruning reports and what the planner's cost model reads. Conventions:

- A multiply-add counts as **2 operations** (one multiply, one add), as in most
  papers' "FLOPs" and in vendors' peak figures quoted in FLOP/s. So a Conv with
  ``M`` output elements and ``K`` taps per output costs ``2*M*K`` (+ ``M`` for a bias).
- Operations are counted **per precision**, keyed by the IR's short type names
  (``f32``, ``f16``, ``i8``, ``u8`` ...): a cost model divides each by that
  precision's peak. ``NodeCost.flops`` is the floating-point part, ``int_ops`` the
  integer part. QLinearConv/ConvInteger/QLinearMatMul/MatMulInteger count at their
  input's integer type; a Conv/Gemm/MatMul whose data and weight inputs both come
  straight from DequantizeLinear of an 8-bit tensor (the QDQ form that onnxruntime
  and TVM lower to integer kernels) counts at that integer type too.
- Elementwise ops cost 1 operation per output element (transcendental functions
  too: next to convolutions they are cheap, and a cost model that cares about them
  is bound by their bytes anyway), with a few stated exceptions (Clip 2, Softmax 5,
  LayerNormalization 8, BatchNormalization 2 — inference BN is one fused scale and
  shift).
- Bytes moved = non-constant inputs read + outputs written + constant inputs
  (weights) read, each once, at the values' element sizes. Metadata-only ops
  (Reshape, Flatten, Squeeze, Unsqueeze, Identity, Shape, Size, Constant) move
  0 bytes: every runtime edgec targets treats them as views.
- onnxruntime's ``com.microsoft::Attention`` (written by the ``fuse-attention`` pass)
  counts its QKV projection, Q·Kᵀ, P·V and softmax.
- An op this module does not model costs 0 operations and is flagged
  (``NodeCost.modelled`` False); its bytes are still counted.
- Shapes come from the IR's value types; `model_cost` infers types first
  (`edgec.ir.shape_inference.infer_types`) when some value's shape is not static
  (that only refines types).
  Symbolic dimensions take the value given in ``dim_values`` (default 1, i.e.
  batch 1) and unknown ones 1; a node that needed such a guess has ``exact`` False.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from edgec.ir.core import Graph, Model, Node, Value
from edgec.ir.types import DataType

# Ops whose outputs are views of their input in every runtime edgec targets.
VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Shape",
                      "Size", "Constant", "Dropout"})
# Pure data movement: 0 operations, bytes counted.
MOVE_OPS = frozenset({"Transpose", "Concat", "Split", "Slice", "Gather", "GatherElements",
                      "GatherND", "ScatterND", "ScatterElements", "Pad", "Expand", "Tile",
                      "Cast", "CastLike", "DepthToSpace", "SpaceToDepth", "ConstantOfShape",
                      "Range", "Where", "NonZero", "TopK", "OneHot", "Trilu", "CenterCropPad"})
# Operations per output element.
ELEMENTWISE_COST = {
    **dict.fromkeys(["Add", "Sub", "Mul", "Div", "Pow", "Mod", "Max", "Min", "Mean", "Sum",
                     "Neg", "Abs", "Sign", "Reciprocal", "Sqrt", "Exp", "Log", "Erf", "Tanh",
                     "Sigmoid", "Relu", "Floor", "Ceil", "Round", "Sin", "Cos", "Tan", "Asin",
                     "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Softplus",
                     "Softsign", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
                     "And", "Or", "Xor", "Not", "IsNaN", "IsInf", "BitShift", "BitwiseAnd",
                     "BitwiseOr", "BitwiseXor", "BitwiseNot", "PRelu", "Elu", "Selu",
                     "Celu", "Mish", "ThresholdedRelu"], 1),
    "Clip": 2, "LeakyRelu": 2, "HardSigmoid": 3, "HardSwish": 4, "Gelu": 8,
    "QuantizeLinear": 2, "DequantizeLinear": 2, "DynamicQuantizeLinear": 3,
    "BatchNormalization": 2, "InstanceNormalization": 8, "LayerNormalization": 8,
    "GroupNormalization": 8, "Softmax": 5, "LogSoftmax": 5, "Hardmax": 2,
    "LpNormalization": 3, "MeanVarianceNormalization": 8,
}
REDUCE_OPS = frozenset({"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd",
                        "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
                        "ReduceSumSquare", "ArgMax", "ArgMin"})
INTEGER_COMPUTE_OPS = frozenset({"QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger"})


@dataclass(frozen=True)
class NodeCost:
    """What one node costs. ``ops`` maps precision (``f32``, ``i8`` ...) to operations."""

    node: str            # the node's name, or a description when it has none
    op_type: str
    ops: Mapping[str, int]
    bytes_read: int      # non-constant inputs
    bytes_written: int   # outputs
    weight_bytes: int    # constant inputs (initializers)
    modelled: bool = True   # False: an op this module does not know; ops are 0
    exact: bool = True      # False: a symbolic or unknown dimension was guessed

    @property
    def flops(self) -> int:
        return sum(n for p, n in self.ops.items() if _is_float_precision(p))

    @property
    def int_ops(self) -> int:
        return sum(n for p, n in self.ops.items() if not _is_float_precision(p))

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written + self.weight_bytes


@dataclass
class ModelCost:
    """Per-node costs of a model's main graph, in graph order, and their totals."""

    nodes: list[NodeCost] = field(default_factory=list)

    @property
    def ops_by_precision(self) -> dict[str, int]:
        total: dict[str, int] = defaultdict(int)
        for n in self.nodes:
            for p, k in n.ops.items():
                total[p] += k
        return dict(sorted(total.items()))

    @property
    def flops(self) -> int:
        return sum(n.flops for n in self.nodes)

    @property
    def int_ops(self) -> int:
        return sum(n.int_ops for n in self.nodes)

    @property
    def bytes(self) -> int:
        return sum(n.bytes for n in self.nodes)

    @property
    def weight_bytes(self) -> int:
        return sum(n.weight_bytes for n in self.nodes)

    @property
    def unmodelled_ops(self) -> list[str]:
        """Op types counted as 0 operations because this module does not model them."""
        return sorted({n.op_type for n in self.nodes if not n.modelled})

    @property
    def exact(self) -> bool:
        return all(n.exact for n in self.nodes)

    def by_op_type(self) -> dict[str, int]:
        """Operations (all precisions) per op type."""
        total: dict[str, int] = defaultdict(int)
        for n in self.nodes:
            total[n.op_type] += sum(n.ops.values())
        return dict(total)

    def to_json(self) -> dict:
        return {"flops": self.flops, "int_ops": self.int_ops, "bytes": self.bytes,
                "ops_by_precision": self.ops_by_precision, "exact": self.exact,
                "unmodelled_ops": self.unmodelled_ops}


def _is_float_precision(p: str) -> bool:
    return DataType.from_short_name(p).is_floating


# --------------------------------------------------------------------------- shapes


class _Dims:
    """Static dims of values; symbolic or unknown dims are guessed and remembered."""

    def __init__(self, dim_values: Mapping[str, int]):
        self.dim_values = dim_values
        self.guessed = False

    def of(self, v: Value | None) -> tuple[int, ...] | None:
        if v is None:
            return None
        if v.const is not None and v.is_constant():
            return tuple(v.const.dims)
        shape = v.shape
        if shape is None or shape.dims is None:
            self.guessed = True
            return None
        dims = []
        for d in shape.dims:
            if isinstance(d, int):
                dims.append(d)
            else:
                self.guessed = True
                dims.append(int(self.dim_values.get(d, 1)) if isinstance(d, str) else 1)
        return tuple(dims)

    def numel(self, v: Value | None) -> int:
        dims = self.of(v)
        return 0 if dims is None else int(np.prod(dims, dtype=np.int64))


def _nbytes(v: Value | None, dims: _Dims) -> int:
    if v is None or v.dtype is None:
        return 0
    return (dims.numel(v) * v.dtype.itemsize_bits + 7) // 8


def _attr(node: Node, name: str, default):
    a = node.attributes.get(name)
    return default if a is None else a.value


# --------------------------------------------------------------------------- per-op counts


def _conv_ops(node: Node, d: _Dims) -> int:
    out = d.numel(node.outputs[0])
    w = d.of(node.inputs[1])
    if w is None:
        return 0
    taps = int(np.prod(w[1:], dtype=np.int64))  # Cin/group * kernel
    ops = 2 * out * taps
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        ops += out
    return ops


def _conv_transpose_ops(node: Node, d: _Dims) -> int:
    x, w = d.of(node.inputs[0]), d.of(node.inputs[1])
    if x is None or w is None:
        return 0
    # Every input element is scattered to (Cout/group * kernel) outputs.
    ops = 2 * int(np.prod(x, dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64))
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        ops += d.numel(node.outputs[0])
    return ops


def _qlinear_conv_ops(node: Node, d: _Dims) -> int:
    # QLinearConv(x, xs, xz, w, ws, wz, ys, yz, B)
    out = d.numel(node.outputs[0])
    w = d.of(node.inputs[3])
    if w is None:
        return 0
    ops = 2 * out * int(np.prod(w[1:], dtype=np.int64))
    if len(node.inputs) > 8 and node.inputs[8] is not None:
        ops += out
    return ops


def _matmul_ops(a: Value | None, b: Value | None, out: Value, d: _Dims) -> int:
    ad = d.of(a)
    if ad is None or not ad:
        return 0
    k = ad[-1]
    return 2 * d.numel(out) * k


def _gemm_ops(node: Node, d: _Dims) -> int:
    a = d.of(node.inputs[0])
    if a is None or len(a) != 2:
        return 0
    k = a[0] if _attr(node, "transA", 0) else a[1]
    out = d.numel(node.outputs[0])
    ops = 2 * out * k
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        ops += out
    return ops


def _pool_ops(node: Node, d: _Dims) -> int:
    kernel = _attr(node, "kernel_shape", [1])
    return d.numel(node.outputs[0]) * int(np.prod(kernel, dtype=np.int64))


def _resize_ops(node: Node, d: _Dims) -> int:
    mode = _attr(node, "mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode == "nearest":
        return 0
    x, y = d.of(node.inputs[0]), d.of(node.outputs[0])
    if x is None or y is None:
        return 0
    resized = sum(1 for a, b in zip(x, y) if a != b)
    taps = (2 if mode == "linear" else 4) ** resized
    return 2 * taps * d.numel(node.outputs[0])


_COUNTERS: dict[str, Callable[[Node, _Dims], int]] = {
    "Conv": _conv_ops,
    "ConvInteger": _conv_ops,
    "QLinearConv": _qlinear_conv_ops,
    "ConvTranspose": _conv_transpose_ops,
    "Gemm": _gemm_ops,
    "MatMul": lambda n, d: _matmul_ops(n.inputs[0], n.inputs[1], n.outputs[0], d),
    "MatMulInteger": lambda n, d: _matmul_ops(n.inputs[0], n.inputs[1], n.outputs[0], d),
    "QLinearMatMul": lambda n, d: _matmul_ops(n.inputs[0], n.inputs[3], n.outputs[0], d),
    "MaxPool": _pool_ops,
    "AveragePool": _pool_ops,
    "LpPool": lambda n, d: 2 * _pool_ops(n, d),
    "GlobalAveragePool": lambda n, d: d.numel(n.inputs[0]),
    "GlobalMaxPool": lambda n, d: d.numel(n.inputs[0]),
    "GlobalLpPool": lambda n, d: 2 * d.numel(n.inputs[0]),
    "Resize": _resize_ops,
    "Einsum": lambda n, d: 0,  # would need the equation; flagged below
}
_UNMODELLED_COUNTERS = {"Einsum"}


def _attention_ops(node: Node, d: _Dims) -> int:
    """com.microsoft::Attention(x [B,S,Hin], W [Hin,3H], b [3H]) with ``num_heads``:
    the packed QKV projection, Q·Kᵀ and P·V over all heads, and the softmax."""
    x, w = d.of(node.inputs[0]), d.of(node.inputs[1]) if len(node.inputs) > 1 else None
    if x is None or w is None or len(x) != 3 or len(w) != 2:
        return 0
    batch, seq, _ = x
    tokens = batch * seq
    hidden = w[1] // 3
    heads = int(_attr(node, "num_heads", 1)) or 1
    ops = 2 * tokens * w[0] * w[1] + tokens * w[1]     # projection + bias
    ops += 2 * 2 * batch * seq * seq * hidden           # Q·Kᵀ and P·V
    ops += ELEMENTWISE_COST["Softmax"] * batch * heads * seq * seq
    return ops


# onnxruntime's contrib ops (domain com.microsoft) that edgec's own passes write.
_CONTRIB_COUNTERS: dict[str, Callable[[Node, _Dims], int]] = {"Attention": _attention_ops}


def _precision(node: Node) -> str:
    """The precision a node's arithmetic runs at (see the module docstring)."""
    op = node.op_type
    if op in INTEGER_COMPUTE_OPS:
        x = node.inputs[0]
        return x.dtype.short_name if x is not None and x.dtype is not None else "i8"
    if op in ("Conv", "Gemm", "MatMul", "ConvTranspose"):
        sources = [v.producer() for v in node.inputs[:2] if v is not None]
        if len(sources) == 2 and all(p is not None and p.op_type == "DequantizeLinear"
                                     for p in sources):
            types = {p.inputs[0].dtype for p in sources if p.inputs[0] is not None}
            if types and all(t in (DataType.INT8, DataType.UINT8) for t in types):
                # Mixed u8 activations with i8 weights run on u8*i8 kernels: call it i8.
                return "i8" if DataType.INT8 in types else "u8"
    out = node.outputs[0] if node.outputs else None
    if out is not None and out.dtype is not None and out.dtype.itemsize_bits:
        if op in ("DequantizeLinear", "QuantizeLinear"):
            return "f32"
        return out.dtype.short_name
    return "f32"


def node_cost(node: Node, dim_values: Mapping[str, int] | None = None) -> NodeCost:
    """The cost of one node, from its values' current types (see the module docstring)."""
    d = _Dims(dim_values or {})
    op = node.op_type
    modelled = True
    if node.domain == "com.microsoft" and op in _CONTRIB_COUNTERS:
        ops = _CONTRIB_COUNTERS[op](node, d)
    elif node.domain not in ("", "ai.onnx"):
        ops, modelled = 0, False
    elif op in _COUNTERS:
        ops = _COUNTERS[op](node, d)
        modelled = op not in _UNMODELLED_COUNTERS
    elif op in ELEMENTWISE_COST:
        ops = ELEMENTWISE_COST[op] * d.numel(node.outputs[0])
    elif op in REDUCE_OPS:
        ops = d.numel(node.inputs[0]) if node.inputs else 0
    elif op in VIEW_OPS or op in MOVE_OPS:
        ops = 0
    else:
        ops, modelled = 0, False
    weight = read = 0
    for v in node.inputs:
        if v is None:
            continue
        if v.is_constant():
            weight += _nbytes(v, d)
        else:
            read += _nbytes(v, d)
    written = sum(_nbytes(o, d) for o in node.outputs if o.name)
    if op in VIEW_OPS:
        read = written = weight = 0
    precision = _precision(node)
    name = node.name or node.describe()
    return NodeCost(name, op, {precision: int(ops)} if ops else {}, int(read), int(written),
                    int(weight), modelled, not d.guessed)


def _needs_shapes(graph: Graph) -> bool:
    for node in graph:
        for o in node.outputs:
            if o.name and (o.shape is None or o.shape.dims is None):
                return True
    return False


def model_cost(model: Model, *, dim_values: Mapping[str, int] | None = None,
               infer_shapes: bool = True) -> ModelCost:
    """Per-node costs of ``model``'s main graph and their totals.

    With ``infer_shapes`` (the default) and some node output lacking a shape, the
    model's types are inferred first (`infer_types`: it only refines value types).
    Subgraphs (If/Loop bodies) and functions are not counted: their trip counts are
    not static; such nodes are flagged as not modelled.
    """
    if infer_shapes and _needs_shapes(model.graph):
        # Imported here: it brings in onnx's shape inference, which most costs never need.
        from edgec.ir.shape_inference import infer_types
        infer_types(model)
    return ModelCost([node_cost(n, dim_values) for n in model.graph])


def parameter_count(model: Model) -> int:
    """Elements in the main graph's constant initializers."""
    return sum(v.const.numel for v in model.graph.initializers.values()
               if v.const is not None and v.is_constant())
