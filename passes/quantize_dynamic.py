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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np

from edgec.ir.core import Graph, Model, Node, Value
from edgec.ir.types import DataType, TensorType
from edgec.passmgr.base import OptionError, Pass, PassContext, PassResult
from edgec.quantization.arithmetic import weight_range
from edgec.quantization.qdq import quantizable_graphs, quantize_weight


@dataclass(frozen=True)
class QuantizeDynamic(Pass):
    """Dynamic int8 MatMul/Gemm: weights int8 offline, activations quantized at run time."""

    name: ClassVar[str] = "quantize-dynamic"
    ops: tuple[str, ...] = field(default=("MatMul", "Gemm"), metadata={"help": "MatMul and/or Gemm"})
    per_channel: bool = field(default=True, metadata={"help": "per-output-column weight scales"})
    format: Literal["contrib", "standard"] = field(default="contrib", metadata={"help": "contrib (DynamicQuantizeMatMul) or standard (MatMulInteger)"})
    exclude: tuple[str, ...] = field(default=(), metadata={"help": "node names kept fp32"})
    reduce_range: bool | None = field(default=None, metadata={"help": "true: 7-bit weights, false: 8-bit; unset: what the target's int8 kernels need (x86 without VNNI saturates 8-bit u8 x s8 pairs: 7-bit; 7-bit without a target)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        bad = set(self.ops) - {"MatMul", "Gemm"}
        if bad:
            raise OptionError("ops", f"only MatMul and Gemm, not {', '.join(sorted(bad))}")

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        bits = weight_range(ctx.target, self.reduce_range).bits
        rewritten = biases = 0
        for graph in quantizable_graphs(model):
            for node in list(graph):
                weight, bias_value, consumer = self._match(node)
                if weight is None:
                    continue
                q, scale = quantize_weight(weight, 1 if self.per_channel else None, bits)
                bias = bias_value.const.numpy() if bias_value is not None else None
                out = (consumer or node).outputs[0]
                self._emit(model, graph, node, consumer, node.inputs[0], q, scale, bias, out)
                rewritten += 1
                biases += bias is not None
        if rewritten and self.format == "contrib":
            model.opset_imports.setdefault("com.microsoft", 1)
        for g in quantizable_graphs(model):
            g.remove_unused_initializers()
        return PassResult(rewritten > 0, {"nodes-quantized": rewritten, "biases-folded": biases,
                                          "weight-bits": bits})

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
