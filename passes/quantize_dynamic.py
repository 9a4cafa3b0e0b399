"""Dynamic int8 quantization of MatMul/Gemm with constant weights:
``MatMul(x, W) [+ b]`` -> ``com.microsoft::DynamicQuantizeMatMul(x, W_s8, s_W, 0, b)``
(x is quantized to u8 at run time, per tensor, from its own min/max).

``format=standard`` writes the same computation in standard ops instead:
``DynamicQuantizeLinear(x) -> MatMulInteger(x_u8, W_s8, zp_x, 0) -> Cast -> Mul(s_x·s_W) [-> Add b]``
(onnxruntime's optimizer fuses that back into DynamicQuantizeMatMul; other runtimes
can run it as written). No calibration data is needed. Weights are symmetric int8,
per output column by default, in 7 bits where the target's u8 x s8 kernels saturate
full-range pairs (x86 without VNNI) and 8 elsewhere, unless ``reduce-range`` says
(stat ``weight-bits``). A following ``Add`` of a 1-D constant bias is folded in.

``ops`` may also name the two recurrent/attention forms onnxruntime's own
``quantize_dynamic`` writes (operators/lstm.py, attention.py); both are contrib-only:

    LSTM(x, W, R, ...)                  -> com.microsoft::DynamicQuantizeLSTM(x, W_s8ᵀ, R_s8ᵀ, ..., s_W, 0, s_R, 0)
    com.microsoft::Attention(x, W, b)   -> QAttention(DynamicQuantizeLinear(x), W_s8, b, s_x, s_W, -, zp_x, 0)

LSTM: W [D, 4H, I] and R [D, 4H, H] constants, stored transposed ([D, I, 4H], [D, H,
4H]) with scales per gate row ([D, 4H]; per direction [D] without ``per-channel``);
every other input and attribute is kept. onnxruntime has no int8 kernel for an LSTM
in QDQ form: this is the only form it runs in int8. Attention (the op ``fuse`` makes
of a self-attention, see fuse_attention): the QKV projection runs in int8, the
softmax(q·kᵀ)·v core in fp32, as onnxruntime's QAttention does; weights per column.
Attention with ``qkv_hidden_sizes``, rotary embedding, an attention bias or a past
sequence length has no QAttention form and is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np

from edgec.ir.core import Graph, Model, Node, Value
from edgec.ir.types import DataType, TensorType
from edgec.passmgr.base import OptionError, Pass, PassContext, PassResult
from edgec.quantization.arithmetic import weight_range
from edgec.quantization.options import check_exclusions
from edgec.quantization.qdq import quantizable_graphs, quantize_weight


CONTRIB = "com.microsoft"
# Ops with an int8 form only in onnxruntime's contrib domain.
CONTRIB_ONLY = ("LSTM", "Attention")
# com.microsoft::Attention's inputs and attributes that QAttention has no place for.
_NO_QATTENTION_INPUTS = 5       # attention_bias (5) and past_sequence_length (6)
_NO_QATTENTION_ATTRIBUTES = ("qkv_hidden_sizes", "rotary_embedding_dim")


@dataclass(frozen=True)
class QuantizeDynamic(Pass):
    """Dynamic int8 MatMul/Gemm: weights int8 offline, activations quantized at run time."""

    name: ClassVar[str] = "quantize-dynamic"
    ops: tuple[str, ...] = field(default=("MatMul", "Gemm"), metadata={"help": "MatMul, Gemm, LSTM, Attention (com.microsoft's, from fuse)"})
    per_channel: bool = field(default=True, metadata={"help": "per-output-column weight scales"})
    format: Literal["contrib", "standard"] = field(default="contrib", metadata={"help": "contrib (DynamicQuantizeMatMul) or standard (MatMulInteger)"})
    exclude: tuple[str, ...] = field(default=(), metadata={"help": "node names kept fp32"})
    reduce_range: bool | None = field(default=None, metadata={"help": "true: 7-bit weights, false: 8-bit; unset: what the target's int8 kernels need (x86 without VNNI saturates 8-bit u8 x s8 pairs: 7-bit; 7-bit without a target)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        bad = set(self.ops) - {"MatMul", "Gemm", *CONTRIB_ONLY}
        if bad:
            raise OptionError("ops", f"only MatMul, Gemm, LSTM and Attention, not {', '.join(sorted(bad))}")
        if self.format == "standard" and set(self.ops) & set(CONTRIB_ONLY):
            raise OptionError("ops", "LSTM and Attention have only onnxruntime's contrib int8 form "
                                     "(format=contrib)")

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        check_exclusions(model, self.exclude, self.name)
        bits = weight_range(ctx.target, self.reduce_range).bits
        rewritten = biases = 0
        contrib_only = {op: 0 for op in CONTRIB_ONLY}
        for graph in quantizable_graphs(model):
            for node in list(graph):
                if node.name in self.exclude:
                    continue
                if "LSTM" in self.ops and _is_lstm(node):
                    contrib_only["LSTM"] += _quantize_lstm(node, self.per_channel, bits)
                    continue
                if "Attention" in self.ops and _is_attention(node):
                    contrib_only["Attention"] += _quantize_attention(node, self.per_channel, bits)
                    continue
                weight, bias_value, consumer = self._match(node)
                if weight is None:
                    continue
                q, scale = quantize_weight(weight, 1 if self.per_channel else None, bits)
                bias = bias_value.const.numpy() if bias_value is not None else None
                out = (consumer or node).outputs[0]
                self._emit(model, graph, node, consumer, node.inputs[0], q, scale, bias, out)
                rewritten += 1
                biases += bias is not None
        rewritten += sum(contrib_only.values())
        if rewritten and self.format == "contrib":
            model.opset_imports.setdefault(CONTRIB, 1)
        for g in quantizable_graphs(model):
            g.remove_unused_initializers()
        stats = {"nodes-quantized": rewritten, "biases-folded": biases, "weight-bits": bits}
        stats.update({f"{op.lower()}-quantized": n for op, n in contrib_only.items() if n})
        return PassResult(rewritten > 0, stats)

    def _match(self, node: Node):
        """(weight [K, N], bias value or None, the bias Add or None), or Nones."""
        none = (None, None, None)
        if node.domain not in ("", "ai.onnx") or node.op_type not in self.ops or node.name in self.exclude:
            return none
        x, w = node.inputs[0], node.inputs[1] if len(node.inputs) > 1 else None
        if x is None or x.dtype not in (DataType.FLOAT, None) or w is None or not w.is_constant():
            return none
        weight = w.const.numpy()
        if weight.dtype != np.float32 or weight.ndim != 2:
            return none
        if node.op_type == "Gemm":
            if node.attr("transA", 0) or node.attr("alpha", 1.0) != 1.0 or node.attr("beta", 1.0) != 1.0:
                return none
            if node.attr("transB", 0):
                weight = weight.T
            c = node.inputs[2] if len(node.inputs) > 2 else None
            if c is not None and not (c.is_constant() and c.const.numpy().ndim == 1
                                      and c.const.numpy().shape[0] == weight.shape[1]):
                return none
            return np.ascontiguousarray(weight), c, None
        out = node.outputs[0]
        readers = out.uses()
        if len(readers) == 1 and not out.is_graph_output():
            add, index = readers[0]
            other = add.inputs[1 - index] if add.op_type == "Add" and len(add.inputs) == 2 else None
            if (other is not None and add.graph is node.graph and other.is_constant()
                    and other.const.numpy().shape == (weight.shape[1],)):
                return weight, other, add
        return weight, None, None

    def _emit(self, model: Model, graph: Graph, node: Node, consumer: Node | None, x: Value,
              q: np.ndarray, scale: np.ndarray, bias: np.ndarray | None, out: Value) -> None:
        root = model.graph
        label = node.name or "matmul"
        w_q = root.make_constant(q, f"{label}_weight_quantized")
        w_scale = root.make_constant(scale, f"{label}_weight_scale")
        w_zero = root.make_constant(np.zeros(scale.shape, np.int8), f"{label}_weight_zero_point")
        anchor = consumer or node
        result = Value(None, out.type)
        if self.format == "contrib":
            inputs = [x, w_q, w_scale, w_zero]
            if bias is not None:
                inputs.append(root.make_constant(bias.astype(np.float32), f"{label}_bias"))
            new = [Node("DynamicQuantizeMatMul", inputs, domain="com.microsoft", outputs=[result],
                        name=graph.unique_name(f"{label}_DynamicQuantizeMatMul"))]
        else:
            x_q = Value(None, TensorType(DataType.UINT8, x.shape))
            x_scale, x_zero = Value(None, TensorType(DataType.FLOAT)), Value(None, TensorType(DataType.UINT8))
            dql = Node("DynamicQuantizeLinear", [x], outputs=[x_q, x_scale, x_zero],
                       name=graph.unique_name(f"{label}_DynamicQuantizeLinear"))
            acc = Node("MatMulInteger", [x_q, w_q, x_zero, w_zero], name=graph.unique_name(f"{label}_MatMulInteger"))
            cast = Node("Cast", [acc.output], attributes={"to": int(DataType.FLOAT)})
            combined = Node("Mul", [x_scale, w_scale])
            scaled_out = result if bias is None else Value(None, out.type)
            scaled = Node("Mul", [cast.output, combined.output], outputs=[scaled_out])
            new = [dql, acc, cast, combined, scaled]
            if bias is not None:
                new.append(Node("Add", [scaled_out, root.make_constant(bias.astype(np.float32), f"{label}_bias")],
                                outputs=[result]))
        graph.insert_before(anchor, new)
        graph.replace_value(out, result)
        if consumer is not None:
            graph.remove(consumer, safe=False)
        graph.remove(node, safe=False)


def _constant_float(v: Value | None, rank: int) -> np.ndarray | None:
    if v is None or not v.is_constant() or v.const is None:
        return None
    array = v.const.numpy()
    return array if array.dtype == np.float32 and array.ndim == rank else None


def _is_lstm(node: Node) -> bool:
    if node.domain not in ("", "ai.onnx") or node.op_type != "LSTM" or node.attr("layout", 0):
        return False  # DynamicQuantizeLSTM has no batch-major layout
    x = node.inputs[0] if node.inputs else None
    return (x is not None and x.dtype in (DataType.FLOAT, None) and len(node.inputs) >= 3
            and _constant_float(node.inputs[1], 3) is not None
            and _constant_float(node.inputs[2], 3) is not None)


def _lstm_weight(graph: Graph, array: np.ndarray, per_channel: bool, bits: int, label: str):
    """[D, 4H, K] float -> ([D, K, 4H] int8, scale, zero point) values: one scale per
    gate row ([D, 4H]) or per direction ([D])."""
    directions, rows, columns = array.shape
    if per_channel:
        q, scale = quantize_weight(array.reshape(directions * rows, columns), 0, bits)
        scale = scale.reshape(directions, rows)
    else:
        q, scale = quantize_weight(array, 0, bits)
    q = np.ascontiguousarray(q.reshape(directions, rows, columns).transpose(0, 2, 1))
    return (graph.make_constant(q, f"{label}_quantized"),
            graph.make_constant(scale.astype(np.float32), f"{label}_scale"),
            graph.make_constant(np.zeros(scale.shape, np.int8), f"{label}_zero_point"))


def _quantize_lstm(node: Node, per_channel: bool, bits: int) -> int:
    """LSTM -> DynamicQuantizeLSTM in place (its outputs, names and attributes kept)."""
    # Constants live in the node's own graph: onnxruntime prepacks a kernel's weights
    # only from initializers it can see as constant there.
    graph = node.graph
    label = node.name or "lstm"
    w, w_scale, w_zero = _lstm_weight(graph, node.inputs[1].const.numpy(), per_channel, bits, f"{label}_W")
    r, r_scale, r_zero = _lstm_weight(graph, node.inputs[2].const.numpy(), per_channel, bits, f"{label}_R")
    rest = list(node.inputs[3:8]) + [None] * (8 - len(node.inputs[:8]))
    node.set_inputs([node.inputs[0], w, r, *rest[:5], w_scale, w_zero, r_scale, r_zero])
    node.op_type, node.domain = "DynamicQuantizeLSTM", CONTRIB
    node.attributes.pop("layout", None)  # 0 (checked): DynamicQuantizeLSTM has no such attribute
    return 1


def _is_attention(node: Node) -> bool:
    if node.domain != CONTRIB or node.op_type != "Attention":
        return False
    if any(node.attr(a) for a in _NO_QATTENTION_ATTRIBUTES):
        return False
    if any(v is not None for v in node.inputs[_NO_QATTENTION_INPUTS:]):
        return False
    x = node.inputs[0]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    return (x is not None and x.dtype in (DataType.FLOAT, None) and bias is not None
            and _constant_float(node.inputs[1], 2) is not None)


def _quantize_attention(node: Node, per_channel: bool, bits: int) -> int:
    """Attention -> DynamicQuantizeLinear + QAttention in place: x quantized to u8 at
    run time, the packed QKV weight [K, 3·hidden] int8 offline."""
    graph = node.graph
    label = node.name or "attention"
    x = node.inputs[0]
    q, scale = quantize_weight(node.inputs[1].const.numpy(), 1 if per_channel else None, bits)
    w = graph.make_constant(q, f"{label}_qkv_weight_quantized")
    w_scale = graph.make_constant(scale, f"{label}_qkv_weight_scale")
    w_zero = graph.make_constant(np.zeros(scale.shape, np.int8), f"{label}_qkv_weight_zero_point")
    x_q = Value(None, TensorType(DataType.UINT8, x.shape))
    x_scale, x_zero = Value(None, TensorType(DataType.FLOAT)), Value(None, TensorType(DataType.UINT8))
    graph.insert_before(node, Node("DynamicQuantizeLinear", [x], outputs=[x_q, x_scale, x_zero],
                                   name=graph.unique_name(f"{label}_DynamicQuantizeLinear")))
    mask = node.inputs[3] if len(node.inputs) > 3 else None
    past = node.inputs[4] if len(node.inputs) > 4 else None
    node.set_inputs([x_q, w, node.inputs[2], x_scale, w_scale, mask, x_zero, w_zero, past])
    node.op_type = "QAttention"
    for name in _NO_QATTENTION_ATTRIBUTES:
        node.attributes.pop(name, None)  # unset or 0 (checked)
    return 1
