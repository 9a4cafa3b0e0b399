"""What the legalize-tvm rewrites share: the ONNX domains they match, a builder of node
chains, and readers of a value's float type, static shape and constant."""

from __future__ import annotations

from edgec.ir.core import Node, Value
from edgec.ir.types import DataType, TensorType


ONNX_DOMAINS = ("", "ai.onnx")


class Chain:
    """Nodes built in order for a rewrite: ``chain.op("Add", a, b)`` returns the output."""

    def __init__(self, graph):
        self.graph = graph
        self.nodes: list[Node] = []

    def op(self, op_type: str, *inputs: Value, outputs: list[Value] | None = None, **attributes) -> Value:
        node = Node(op_type, list(inputs), attributes=attributes, outputs=outputs)
        self.nodes.append(node)
        return node.output

    def replace(self, node: Node, result: Value) -> None:
        """Put the chain in ``node``'s place: inserted before it, its last node named as
        ``node`` was, ``result`` typed as and standing for ``node``'s output; ``node`` goes."""
        self.nodes[-1].name = node.name
        self.graph.insert_before(node, self.nodes)
        result.type = node.output.type
        self.graph.replace_value(node.output, result)
        self.graph.remove(node)

    def constant(self, value, dtype=None, name: str = "const") -> Value:
        import numpy as np

        if isinstance(dtype, str):  # constant(array, "name")
            dtype, name = None, dtype
        return self.graph.make_constant(np.array(value, dtype), name)


def float_type(v: Value | None) -> DataType | None:
    if v is None or v.dtype not in (DataType.FLOAT16, DataType.FLOAT, DataType.DOUBLE):
        return None
    return v.dtype


def static_dims(v: Value | None) -> tuple[int, ...] | None:
    if v is None or not isinstance(v.type, TensorType) or v.type.shape is None or v.type.shape.dims is None:
        return None
    dims = tuple(v.type.shape.dims)
    return dims if all(isinstance(d, int) for d in dims) else None


def constant_value(v: Value | None):
    return v.const.numpy() if v is not None and v.is_constant() else None
