"""Where Q/DQ go so that int8 runs as int8: contiguous int8 regions.

A quantized node pays a QuantizeLinear on each fp32 value it reads and a
DequantizeLinear for each fp32 reader of its output. Between two int8 kernels an fp32
node that has an int8 kernel of its own is an island that costs a DQ and a Q for
nothing, so the placement quantizes every node onnxruntime runs in int8 (asked of
onnxruntime itself, `executed.Int8Kernels`), and keeps only the regions (connected
through the values they exchange, and through a Relu/Clip folded into its producer's
quantization) that hold a Conv, MatMul or Gemm: a region of int8 data movement or
elementwise ops alone adds transitions and saves no arithmetic. fp32 islands remain
only where onnxruntime has no int8 kernel (ConvTranspose, linear Resize; HardSwish and
HardSigmoid too, unless `edgec.quantization.decompose` has rewritten them first, as
`qdq.prepare` does for this placement).
"""

from __future__ import annotations

from edgec.ir.core import Model, Node
from edgec.quantization.executed import Int8Kernels

ANCHORS = frozenset({"Conv", "MatMul", "Gemm"})


def contiguous_nodes(model: Model, kernels: Int8Kernels | None = None) -> list[Node]:
    """The nodes the contiguous placement quantizes, in graph order."""
    from edgec.quantization.qdq import ALL_OPS, MOVEMENT_OPS, is_relu, typed_candidates

    kernels = kernels or Int8Kernels()
    opset = model.opset() or 17
    typed = typed_candidates(model, frozenset((*ALL_OPS, *MOVEMENT_OPS)))
    int8 = [n for n in typed if kernels.runs_int8(n, opset)]
    chosen = {id(n): n for n in int8}
    parent = {id(n): id(n) for n in int8}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def join(a: Node, b: Node) -> None:
        parent[find(id(a))] = find(id(b))

    for node in int8:
        for out in node.outputs:
            readers = out.consumers()
            # A Relu that is the output's only reader folds into its quantization:
            # what reads the Relu reads this node's int8 output.
            if len(readers) == 1 and is_relu(readers[0]) and id(readers[0]) not in chosen:
                readers = readers[0].outputs[0].consumers()
            for reader in readers:
                if id(reader) in chosen:
                    join(node, reader)
    anchored = {find(id(n)) for n in int8 if n.op_type in ANCHORS}
    return [n for n in int8 if find(id(n)) in anchored]

