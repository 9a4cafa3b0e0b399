"""Patterns over the IR's use-def graph, matched from the node that produces the result.

A pattern is a tree written as data::

    # x * sigmoid(x)
    Op("Mul", Var("x"), Op("Sigmoid", Var("x")), commutative=True)

`Op` matches a node of that op type in the default ONNX domain whose inputs match
the sub-patterns (both orders for a ``commutative`` binary op); `Var` binds any value,
and the same name must bind the very same value everywhere; `Const` binds a value
that is a constant (an initializer that no graph input overrides, or a ``Constant``
node's output) and keeps its array. A pattern with ``name=`` also binds its node.
Matching is a walk up the producers from one node, so it costs the pattern's size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Union

import numpy as np

from edgec.ir.core import Node, Value
from edgec.ir.types import TensorType

DEFAULT_DOMAINS = ("", "ai.onnx")


def constant_array(value: Value | None) -> np.ndarray | None:
    """The data of ``value`` when it is a compile-time constant, else None.

    Initializers stored as external data count as constants too; reading them loads them.
    """
    if value is None:
        return None
    if value.is_constant():
        tensor = value.const
        if tensor.sparse_proto is not None:
            return None
        return tensor.numpy()
    node = value.producer()
    if node is not None and node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS:
        attr = node.attributes.get("value")
        if attr is not None and not attr.ref_attr_name and hasattr(attr.value, "numpy"):
            return attr.value.numpy()
    return None


@dataclass
class Match:
    """What a pattern bound: values and constants by name, nodes by name, and every
    node the pattern covered (``root`` last)."""

    root: Node
    values: dict[str, Value] = field(default_factory=dict)
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    covered: list[Node] = field(default_factory=list)

    def __getitem__(self, name: str) -> Value:
        return self.values[name]


@dataclass(frozen=True)
class Var:
    """Any value (or an omitted optional input when ``optional``)."""

    name: str
    optional: bool = False


@dataclass(frozen=True)
class Const:
    """A constant value; ``where`` further restricts its array."""

    name: str
    where: Callable[[np.ndarray], bool] | None = None


@dataclass(frozen=True)
class Op:
    """A node of ``op_type`` (default domain) whose inputs match ``inputs``.

    Extra inputs the pattern does not list must be absent unless ``extra_inputs``.
    """

    op_type: str
    inputs: tuple["PatternItem", ...]
    name: str | None = None
    commutative: bool = False
    extra_inputs: bool = False

    def __init__(self, op_type: str, *inputs: "PatternItem", name: str | None = None,
                 commutative: bool = False, extra_inputs: bool = False):
        object.__setattr__(self, "op_type", op_type)
        object.__setattr__(self, "inputs", tuple(inputs))
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "commutative", commutative)
        object.__setattr__(self, "extra_inputs", extra_inputs)

    def match(self, node: Node) -> Match | None:
        """Match this pattern with ``node`` as its root."""
        match = Match(node)
        if not _match_node(self, node, match):
            return None
        # Producers first, root last: the order rewrites remove them in reverse.
        match.covered.reverse()
        return match


PatternItem = Union[Op, Var, Const]


def _match_node(pattern: Op, node: Node, match: Match) -> bool:
    if node.op_type != pattern.op_type or node.domain not in DEFAULT_DOMAINS:
        return False
    inputs = list(node.inputs)
    n = len(pattern.inputs)
    while len(inputs) > n and inputs[-1] is None:
        inputs.pop()
    if len(inputs) > n and not pattern.extra_inputs:
        return False
    inputs = inputs[:n] + [None] * (n - len(inputs))
    orders = [inputs]
    if pattern.commutative and n == 2:
        orders.append([inputs[1], inputs[0]])
    for order in orders:
        trial = Match(match.root, dict(match.values), dict(match.constants), dict(match.nodes),
                      list(match.covered))
        if pattern.name is not None:
            trial.nodes[pattern.name] = node
        trial.covered.append(node)
        if all(_match_item(p, v, trial) for p, v in zip(pattern.inputs, order)):
            match.values, match.constants = trial.values, trial.constants
            match.nodes, match.covered = trial.nodes, trial.covered
            return True
    return False


def _match_item(pattern: PatternItem, value: Value | None, match: Match) -> bool:
    if isinstance(pattern, Var):
        if value is None:
            return pattern.optional and match.values.setdefault(pattern.name, None) is None  # type: ignore[arg-type]
        bound = match.values.setdefault(pattern.name, value)
        return bound is value
    if value is None:
        return False
    if isinstance(pattern, Const):
        array = constant_array(value)
        if array is None or (pattern.where is not None and not pattern.where(array)):
            return False
        bound = match.values.setdefault(pattern.name, value)
        match.constants[pattern.name] = array
        return bound is value
    producer = value.producer()
    if producer is None or value.index != 0:
        return False
    return _match_node(pattern, producer, match)


def scalar_equal(expected: float, tolerance: float = 1e-6) -> Callable[[np.ndarray], bool]:
    """A `Const` condition: a one-element floating array equal to ``expected``."""
    def check(array: np.ndarray) -> bool:
        return (array.size == 1 and array.dtype.kind == "f"
                and abs(float(array.reshape(())) - expected) <= tolerance * max(1.0, abs(expected)))
    return check


def static_shape(value: Value | None) -> tuple[int, ...] | None:
    """The value's shape when every dimension is a known integer."""
    if value is None or not isinstance(value.type, TensorType):
        return None
    shape = value.type.shape
    if shape is None or not shape.is_static:
        return None
    return tuple(int(d) for d in shape.dims)


def rank_of(value: Value | None) -> int | None:
    if value is None or not isinstance(value.type, TensorType) or value.type.shape is None:
        return None
    return value.type.shape.rank


def axes_operand(node: Node) -> list[int] | None:
    """A node's ``axes``: the attribute (older opsets) or the constant second input
    (newer ones, e.g. Squeeze/Unsqueeze from 13, ReduceMean from 18); None if unknown."""
    axes = attribute(node, "axes")
    if axes is not None:
        return list(axes)
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        array = constant_array(node.inputs[1])
        return None if array is None else [int(a) for a in array.reshape(-1)]
    return None


def attribute(node: Node, name: str, default=None):
    """An attribute's Python value, or ``default`` when the node does not set it."""
    attr = node.attributes.get(name)
    if attr is None or attr.ref_attr_name:
        return default
    return attr.value
