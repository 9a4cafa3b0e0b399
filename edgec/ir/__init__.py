"""edgec's intermediate representation: a typed dataflow graph close to ONNX semantics."""

from edgec.ir.core import (Attr, ExternalData, Function, Graph, GraphOutputs, Model, Node,
                           Tensor, Value, captured_values, node_reads)
from edgec.ir.types import (DataType, MapType, OpaqueType, OptionalType, SequenceType, Shape,
                            SparseTensorType, TensorType, Type)

__all__ = [
    "Attr", "DataType", "ExternalData", "Function", "Graph", "GraphOutputs", "MapType", "Model",
    "Node", "OpaqueType", "OptionalType", "SequenceType", "Shape", "SparseTensorType", "Tensor",
    "TensorType", "Type", "Value", "captured_values", "node_reads",
]
