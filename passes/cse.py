"""Common subexpression elimination: ``a = op(x, y); b = op(x, y) -> b := a``.

Two nodes merge when they have the same op, domain and overload, equal attributes
and the very same input values; duplicate initializers (equal dtype, shape and
bytes) merge first so that nodes reading copies of a weight become identical too.
Non-deterministic ops, ops of unknown domains and nodes with subgraphs never merge.
Graph outputs keep their names.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar, Hashable

import onnx

from edgec.ir.core import Attr, Graph, Model, Node, Tensor, Value
from edgec.ir.ops import PURE_DOMAINS, canonical_domain, is_deterministic
from edgec.passmgr.base import Pass, PassContext, PassResult

A = onnx.AttributeProto

@dataclass(frozen=True)
class CommonSubexpressionElimination(Pass):
    """Merge identical nodes and duplicate initializers."""

    name: ClassVar[str] = "cse"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        graphs = list(model.all_graphs())
        local_functions = {(f.domain, f.name) for f in model.functions.values()}
        initializers_merged = nodes_merged = 0
        for g in graphs:
            initializers_merged += _merge_initializers(g)
            nodes_merged += _merge_nodes(g, local_functions)
        stats = {"nodes-merged": nodes_merged, "initializers-merged": initializers_merged}
        return PassResult(bool(nodes_merged or initializers_merged), stats)


def _merge_initializers(graph: Graph) -> int:
    by_key: dict[tuple, list[Value]] = {}
    merged = 0
    for name, v in list(graph.initializers.items()):
        t = v.const
        # External weights stay on disk: hashing them would load them.
        if not v.is_constant() or t.sparse_proto is not None or t.external is not None:
            continue
        key = (t.dtype, t.dims, _digest(t))
        same = by_key.setdefault(key, [])
        canonical = next((c for c in same if _same_bytes(c.const, t)), None)
        # An initializer the graph returns keeps its name: an Identity would save nothing.
        if canonical is None or v.is_graph_output():
            same.append(v)
            continue
        graph.replace_value(v, canonical)
        graph.remove_initializer(name)
        merged += 1
    return merged


def _digest(t: Tensor) -> bytes:
    array = t.numpy()
    if array.dtype == object:
        return hashlib.sha1(repr(array.tolist()).encode()).digest()
    return hashlib.sha1(array.tobytes()).digest()


def _same_bytes(a: Tensor, b: Tensor) -> bool:
    x, y = a.numpy(), b.numpy()
    if x.dtype == object or y.dtype == object:
        return x.shape == y.shape and x.tolist() == y.tolist()
    return x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


def _merge_nodes(graph: Graph, local_functions: set[tuple[str, str]]) -> int:
    seen: dict[Hashable, Node] = {}
    merged = 0
    for node in graph:
        key = _node_key(node, local_functions)
        if key is None:
            continue
        canonical = seen.get(key)
        if canonical is None:
            seen[key] = node
            continue
        for old, new in zip(node.outputs, canonical.outputs):
            graph.replace_value(old, new)
        graph.remove(node)
        merged += 1
    return merged


def _node_key(node: Node, local_functions: set[tuple[str, str]]) -> Hashable | None:
    """What makes two nodes interchangeable, or None if ``node`` must never merge."""
    domain = canonical_domain(node.domain)
    if (domain not in PURE_DOMAINS or (node.domain, node.op_type) in local_functions
            or not is_deterministic(node) or not node.outputs):
        return None
    attrs = []
    for name in sorted(node.attributes):
        a = node.attributes[name]
        if a.subgraphs():
            return None
        attrs.append((name, a.type, a.ref_attr_name, _attr_value_key(a)))
    inputs = tuple(None if v is None else id(v) for v in node.inputs)
    # An omitted optional output ("") may change what an op computes (Dropout's mask).
    outputs = tuple(bool(o.name) for o in node.outputs)
    return (domain, node.op_type, node.overload, inputs, outputs, tuple(attrs))


def _attr_value_key(a: Attr) -> Any:
    v = a.value
    if a.type == A.TENSOR:
        return _tensor_key(v)
    if a.type == A.TENSORS:
        return tuple(_tensor_key(t) for t in v)
    if a.type == A.FLOAT:
        return repr(v)  # keeps -0.0 apart from 0.0
    if a.type == A.FLOATS:
        return tuple(repr(x) for x in v)
    if a.type == A.SPARSE_TENSOR:
        return v.SerializeToString(deterministic=True)
    if a.type == A.SPARSE_TENSORS:
        return tuple(s.SerializeToString(deterministic=True) for s in v)
    if isinstance(v, list):
        return tuple(v)
    return v


def _tensor_key(t: Tensor) -> Hashable:
    if t.external is not None:
        return ("external", t.external.path, t.external.offset, t.external.length)
    return (t.dtype, t.dims, _digest(t))
