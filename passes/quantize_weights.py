"""Weight-only quantization, for size: ``Op(x, W)`` -> ``Op(x, DQ(W_int8))`` with int8
weights, symmetric, per output channel (``bits=8``); or, with ``bits=4``,
``MatMul(x, W)`` -> ``com.microsoft::MatMulNBits(x, W_u4, scales)`` with 4-bit
weights in blocks of ``block-size`` along K (zero point 8, scale per block and column).

Activations stay fp32 and the computation stays fp32: only the stored weights shrink.
With ``bits=4``, Gemm with ``transA=0, alpha=beta=1`` becomes MatMulNBits + Add; Conv
weights stay at int8 (4-bit DequantizeLinear needs opset 21, and raising a model's
opset can change the meaning of its other ops) unless the model already imports
opset >= 21, where they are 4-bit blockwise DequantizeLinear along the input channels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np

from edgec.ir.core import Model, Node, Value
from edgec.ir.types import DataType, TensorType
from edgec.passmgr.base import OptionError, Pass, PassContext, PassResult
from edgec.quantization.qdq import quantizable_graphs, quantize_weight

_AXIS = {"Conv": lambda n: 0, "Gemm": lambda n: 0 if n.attr("transB", 0) else 1, "MatMul": lambda n: 1}


@dataclass(frozen=True)
class QuantizeWeights(Pass):
    """Weight-only int8/int4: weights stored quantized, dequantized in front of the fp32 op."""

    name: ClassVar[str] = "quantize-weights"
    bits: Literal[8, 4] = field(default=8, metadata={"help": "8 or 4"})
    block_size: int = field(default=32, metadata={"help": "4-bit block size along K (16, 32, 64, 128, 256)"})
    ops: tuple[str, ...] = field(default=("Conv", "MatMul", "Gemm"), metadata={"help": "op types whose weights are quantized"})
    per_channel: bool = field(default=True, metadata={"help": "int8: per-output-channel scales"})
    exclude: tuple[str, ...] = field(default=(), metadata={"help": "node names kept fp32"})
    min_elements: int = field(default=256, metadata={"help": "smaller weights are left fp32"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bits == 4 and (self.block_size < 16 or self.block_size & (self.block_size - 1)):
            raise OptionError("block-size", f"must be a power of two >= 16, got {self.block_size}")
        bad = set(self.ops) - set(_AXIS)
        if bad:
            raise OptionError("ops", f"supported ops are {', '.join(sorted(_AXIS))}, "
                                     f"not {', '.join(sorted(bad))}")
        if self.min_elements < 0:
            raise OptionError("min-elements", f"must be >= 0, got {self.min_elements}")

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        stats = {"int8-weights": 0, "int4-weights": 0, "bytes-before": 0, "bytes-after": 0}
        root = model.graph
        for graph in quantizable_graphs(model):
            for node in list(graph):
                if node.domain not in ("", "ai.onnx") or node.op_type not in self.ops or node.name in self.exclude:
                    continue
                w = node.inputs[1] if len(node.inputs) > 1 else None
                if w is None or not w.is_constant() or w.const.numpy().dtype != np.float32:
                    continue
                weight = w.const.numpy()
                if weight.size < self.min_elements or (node.op_type != "Conv" and weight.ndim != 2):
                    continue
                stats["bytes-before"] += weight.nbytes
                if self.bits == 4 and node.op_type in ("MatMul", "Gemm") and self._matmul_nbits(model, node, weight, stats):
                    continue
                axis = _AXIS[node.op_type](node)
                q, scale = quantize_weight(weight, axis if self.per_channel else None)
                label = w.name or "weight"
                q_value = root.make_constant(q, f"{label}_quantized")
                s_value = root.make_constant(scale, f"{label}_scale")
                out = Value(None, TensorType(DataType.FLOAT, w.shape))
                attrs = {"axis": axis} if scale.ndim == 1 else {}
                # Symmetric: the zero point is 0, the default when the input is left out.
                graph.insert_before(node, Node("DequantizeLinear", [q_value, s_value],
                                               attributes=attrs, outputs=[out],
                                               name=graph.unique_name(f"{label}_DequantizeLinear")))
                node.set_input(1, out)
                stats["int8-weights"] += 1
                stats["bytes-after"] += q.nbytes + scale.nbytes
        for g in quantizable_graphs(model):
            g.remove_unused_initializers()
        if stats["int4-weights"]:
            model.opset_imports.setdefault("com.microsoft", 1)
        return PassResult(bool(stats["int8-weights"] or stats["int4-weights"]), stats)

    def _matmul_nbits(self, model: Model, node: Node, weight: np.ndarray, stats: dict) -> bool:
        if node.op_type == "Gemm":
            if node.attr("transA", 0) or node.attr("alpha", 1.0) != 1.0 or node.attr("beta", 1.0) != 1.0:
                return False
            if len(node.inputs) > 2 and node.inputs[2] is not None and not node.inputs[2].is_constant():
                return False
            weight = weight.T if node.attr("transB", 0) else weight
        packed, scales = pack_int4_blocks(weight, self.block_size)
        k, n = weight.shape
        root, graph = model.graph, node.graph
        label = node.inputs[1].name or "weight"
        out = node.outputs[0]
        bias = node.inputs[2] if node.op_type == "Gemm" and len(node.inputs) > 2 else None
        result = Value(None, out.type)
        mm_out = result if bias is None else Value(None, out.type)
        new = [Node("MatMulNBits", [node.inputs[0], root.make_constant(packed, f"{label}_int4"),
                                    root.make_constant(scales, f"{label}_int4_scale")],
                    domain="com.microsoft", outputs=[mm_out],
                    attributes={"K": k, "N": n, "bits": 4, "block_size": self.block_size},
                    name=graph.unique_name(f"{node.name or 'matmul'}_MatMulNBits"))]
        if bias is not None:
            new.append(Node("Add", [mm_out, bias], outputs=[result]))
        graph.insert_before(node, new)
        graph.replace_value(out, result)
        graph.remove(node, safe=False)
        stats["int4-weights"] += 1
        stats["bytes-after"] += packed.nbytes + scales.nbytes
        return True


def pack_int4_blocks(weight: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """MatMulNBits' layout for W [K, N]: uint8 [N, K/block, block/2] (two 4-bit codes a
    byte, low nibble first; code = round(w/scale) + 8) and float scales [N * K/block]."""
    k, n = weight.shape
    blocks = -(-k // block_size)
    padded = np.zeros((blocks * block_size, n), np.float32)
    padded[:k] = weight
    w = padded.T.reshape(n, blocks, block_size)
    absmax = np.abs(w).max(axis=2)
    scale = np.where(absmax > 0, absmax / 7.0, 1.0).astype(np.float32)
    codes = (np.clip(np.round(w / scale[..., None]), -8, 7) + 8).astype(np.uint8)
    packed = (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)
    return packed, scale.reshape(-1)
