"""Where each value's channels are, and which channels must be pruned together.

Every channel-carrying value gets a `Layout` (its channel axis, the channel groups it
concatenates, features per channel after a Flatten). Channel groups tied together
(residual Adds, concatenated and re-split values) are merged with union-find; a group
is pruned consistently in every value that carries it, or left alone ("blocked") when
it reaches a graph output or input, an op this pass does not understand, a layout it
cannot prove (an unknown Reshape, a LayerNorm over the channels, a grouped Conv), or
a subgraph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgec.ir.core import Model, Node, Value

# Channel-wise ops that pass the channel layout of input 0 to output 0 unchanged.
CHANNELWISE_UNARY = frozenset({"Relu", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Selu", "Celu", "HardSigmoid",
                    "HardSwish", "Softplus", "Softsign", "Identity", "Neg", "Abs", "Exp", "Erf",
                    "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Mish", "Gelu",
                    "ThresholdedRelu", "Dropout", "Cast", "Clip"})
POOLS = frozenset({"MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool",
                    "GlobalLpPool"})
BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "PRelu"})


@dataclass(frozen=True)
class Layout:
    """Where a value's channels are: ``axis`` counted from the end (broadcasting keeps
    it), the channel groups laid out along it, and features per channel (``inner``,
    > 1 after a Flatten or a depthwise channel multiplier)."""

    axis: int
    segments: tuple[tuple[int, int], ...]  # (group leaf, channels)
    inner: int = 1

    @property
    def size(self) -> int:
        return sum(n for _, n in self.segments) * self.inner

    def same_structure(self, other: "Layout") -> bool:
        return (self.axis == other.axis and self.inner == other.inner
                and [n for _, n in self.segments] == [n for _, n in other.segments])


def node_attr(node: Node, name: str, default):
    a = node.attributes.get(name)
    return default if a is None else a.value


def value_dims(v: Value | None) -> tuple | None:
    """The value's dims (ints, or a symbol / None where unknown); None when the rank is unknown."""
    if v is None:
        return None
    if v.is_constant():
        return tuple(v.const.dims)
    s = v.shape
    return tuple(s.dims) if s is not None and s.dims is not None else None


def known_product(dims) -> int | None:
    """The product of ``dims``, or None when one of them is not known."""
    if not all(isinstance(d, int) for d in dims):
        return None
    return int(np.prod(dims, dtype=np.int64))


def constant_array(v: Value | None) -> np.ndarray | None:
    return v.const.numpy() if v is not None and v.is_constant() else None


class ChannelAnalysis:
    """Layouts of channel-carrying values, channel groups (union-find) and the nodes to rewrite."""

    def __init__(self, model: Model):
        self.model = model
        self.layout: dict[int, Layout] = {}
        self.values: dict[int, Value] = {}
        self.parent: list[int] = []
        self.size: list[int] = []
        self.blocked: dict[int, str] = {}  # root -> why it stays
        self.sources: list[tuple[Node, int]] = []
        self.nodes: list[Node] = []  # the nodes that read or write a tracked value, in order

    # -- union-find
    def new_group(self, size: int, blocked: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        if blocked:
            self.blocked[len(self.parent) - 1] = blocked
        return len(self.parent) - 1

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        self.parent[rb] = ra
        if rb in self.blocked:
            self.blocked.setdefault(ra, self.blocked.pop(rb))

    def block(self, layout: Layout | None, why: str) -> None:
        if layout is None:
            return
        for g, _ in layout.segments:
            self.blocked.setdefault(self.find(g), why)

    def group_count(self) -> int:
        return len({self.find(g) for g in range(len(self.parent))})

    # -- layouts
    def get(self, v: Value | None) -> Layout | None:
        return None if v is None else self.layout.get(id(v))

    def set(self, v: Value, layout: Layout) -> None:
        self.layout[id(v)] = layout
        self.values[id(v)] = v

    # -- the walk
    def run(self) -> None:
        graph = self.model.graph
        visited: set[int] = set()
        for node in graph:
            visited.add(id(node))
            handled = self._node(node) if node.domain in ("", "ai.onnx") else set()
            tracked = [i for i, v in enumerate(node.inputs) if self.get(v) is not None]
            for i in tracked:
                if i not in handled:
                    self.block(self.get(node.inputs[i]), f"read by {node.describe()}")
            if tracked or any(self.get(o) for o in node.outputs):
                self.nodes.append(node)
        for v in graph.outputs:
            self.block(self.get(v), "a graph output")
        for vid, v in self.values.items():
            if any(id(user) not in visited for user in v.consumers()):
                self.block(self.layout[vid], "read inside a subgraph")

    def _node(self, node: Node) -> set[int]:
        """Give the node's outputs their layouts; return the input indices accounted for."""
        op = node.op_type
        if op == "Conv":
            return self._conv(node)
        if op == "Gemm":
            return self._gemm(node)
        if op == "MatMul":
            return self._matmul(node)
        if op == "BatchNormalization":
            return self._batchnorm(node)
        if op in CHANNELWISE_UNARY:
            return self._unary(node)
        if op in POOLS:
            return self._pool(node)
        if op in BINARY:
            return self._binary(node)
        if op == "Concat":
            return self._concat(node)
        if op == "Flatten":
            return self._flatten(node)
        if op == "Reshape":
            return self._reshape(node)
        if op in ("Squeeze", "Unsqueeze", "Transpose"):
            return self._move_axes(node)
        return set()

    def _source(self, node: Node, out: Value, channels: int) -> None:
        rank = len(value_dims(out) or ()) or None
        if rank is None:
            return
        leaf = self.new_group(channels)
        self.sources.append((node, leaf))
        self.set(out, Layout(-1 if node.op_type != "Conv" else 1 - rank, ((leaf, channels),)))

    def _conv(self, node: Node) -> set[int]:
        x, w = node.inputs[0], node.inputs[1]
        b = node.inputs[2] if len(node.inputs) > 2 else None
        wd, xd = value_dims(w), value_dims(x)
        if wd is None or not w.is_constant() or (b is not None and not b.is_constant()) or xd is None:
            return set()
        group = node_attr(node, "group", 1)
        lx = self.get(x)
        if lx is not None and lx.axis != 1 - len(xd):
            return set()
        if len(xd) < 2:
            return set()
        if group == 1:
            self._source(node, node.outputs[0], wd[0])
            return {0}
        if wd[1] == 1 and group == xd[1] and wd[0] % group == 0:
            # Depthwise: output channel o reads input channel o // multiplier.
            if lx is not None:
                self.set(node.outputs[0], Layout(lx.axis, lx.segments, lx.inner * (wd[0] // group)))
            return {0}
        return set()

    def _gemm(self, node: Node) -> set[int]:
        a, w = node.inputs[0], node.inputs[1]
        c = node.inputs[2] if len(node.inputs) > 2 else None
        wd = value_dims(w)
        if wd is None or not w.is_constant() or len(wd) != 2 or (c is not None and not c.is_constant()):
            return set()
        la = self.get(a)
        if node_attr(node, "transA", 0) or (la is not None and la.axis != -1):
            return set()
        n = wd[0] if node_attr(node, "transB", 0) else wd[1]
        self._source(node, node.outputs[0], n)
        return {0}

    def _matmul(self, node: Node) -> set[int]:
        a, w = node.inputs[0], node.inputs[1]
        wd, ad = value_dims(w), value_dims(a)
        if wd is None or not w.is_constant() or len(wd) != 2 or ad is None or len(ad) < 2:
            return set()
        la = self.get(a)
        if la is not None and la.axis != -1:
            return set()
        self._source(node, node.outputs[0], wd[1])
        return {0}

    def _batchnorm(self, node: Node) -> set[int]:
        lx = self.get(node.inputs[0])
        xd = value_dims(node.inputs[0])
        if (lx is None or xd is None or lx.axis != 1 - len(xd)
                or not all(v is not None and v.is_constant() for v in node.inputs[1:5])
                or any(o.has_uses() or o.is_graph_output() for o in node.outputs[1:])):
            return set()
        self.set(node.outputs[0], lx)
        return {0}

    def _unary(self, node: Node) -> set[int]:
        lx = self.get(node.inputs[0])
        if lx is None or any(o.has_uses() or o.is_graph_output() for o in node.outputs[1:]):
            return set()
        for v in node.inputs[1:]:  # Clip bounds, Dropout ratio: scalars only
            d = value_dims(v)
            if v is not None and (d is None or int(np.prod(d)) != 1):
                return set()
        self.set(node.outputs[0], lx)
        return {0}

    def _pool(self, node: Node) -> set[int]:
        lx, xd = self.get(node.inputs[0]), value_dims(node.inputs[0])
        if (lx is None or xd is None or lx.axis != 1 - len(xd)
                or any(o.has_uses() or o.is_graph_output() for o in node.outputs[1:])):
            return set()
        self.set(node.outputs[0], lx)
        return {0}

    def _binary(self, node: Node) -> set[int]:
        inputs = node.inputs[:2]
        layouts = [self.get(v) for v in inputs]
        tracked = [lay for lay in layouts if lay is not None]
        if not tracked or len(node.inputs) != 2:
            return set()
        first = tracked[0]
        if len(tracked) == 2:
            if not first.same_structure(tracked[1]):
                return set()
            for (g1, _), (g2, _) in zip(first.segments, tracked[1].segments):
                self.union(g1, g2)
        else:
            other = inputs[1] if layouts[0] is not None else inputs[0]
            d = value_dims(other)
            if d is None:
                return set()
            p = first.axis + len(d)
            broadcast = p < 0 or d[p] == 1
            per_channel = not broadcast and other.is_constant() and d[p] == first.size
            if not broadcast and not isinstance(d[p], int):
                return set()
            if not (broadcast or per_channel):
                return set()
            if node.op_type == "PRelu" and layouts[0] is None:
                return set()  # the slope cannot carry the channels of the data
        self.set(node.outputs[0], first)
        return {i for i, lay in enumerate(layouts) if lay is not None}

    def _concat(self, node: Node) -> set[int]:
        out_dims = value_dims(node.outputs[0])
        if out_dims is None:
            return set()
        axis = node_attr(node, "axis", 0)
        axis = axis - len(out_dims) if axis >= 0 else axis
        layouts = [self.get(v) for v in node.inputs]
        tracked = [lay for lay in layouts if lay is not None]
        if not tracked:
            return set()
        if tracked[0].axis != axis:
            # Concatenated along another axis: every input carries the same channels.
            if len(tracked) != len(layouts) or not all(t.same_structure(tracked[0]) for t in tracked):
                return set()
            for t in tracked[1:]:
                for (g1, _), (g2, _) in zip(tracked[0].segments, t.segments):
                    self.union(g1, g2)
            self.set(node.outputs[0], tracked[0])
            return set(range(len(layouts)))
        segments: list[tuple[int, int]] = []
        for v, lay in zip(node.inputs, layouts):
            if lay is None:
                d = value_dims(v)
                if d is None or not isinstance(d[axis], int):
                    return set()
                segments.append((self.new_group(d[axis], "concatenated with an unprunable value"), d[axis]))
            elif lay.axis != axis or lay.inner != 1:
                return set()
            else:
                segments.extend(lay.segments)
        self.set(node.outputs[0], Layout(axis, tuple(segments)))
        return set(range(len(layouts)))

    def _flatten(self, node: Node) -> set[int]:
        lx, xd = self.get(node.inputs[0]), value_dims(node.inputs[0])
        if lx is None or xd is None:
            return set()
        ca = lx.axis + len(xd)
        a = node_attr(node, "axis", 1)
        a = a + len(xd) if a < 0 else a
        inner = known_product(xd[ca + 1:])
        if a > ca or known_product(xd[a:ca]) != 1 or inner is None:
            return set()
        self.set(node.outputs[0], Layout(-1, lx.segments, lx.inner * inner))
        return {0}

    def _reshape(self, node: Node) -> set[int]:
        lx, xd, od = self.get(node.inputs[0]), value_dims(node.inputs[0]), value_dims(node.outputs[0])
        shape = node.inputs[1] if len(node.inputs) > 1 else None
        if (lx is None or xd is None or od is None or constant_array(shape) is None
                or known_product(xd) is None or known_product(od) is None):
            return set()
        ca = lx.axis + len(xd)
        before = int(np.prod(xd[:ca]))
        j = next((k for k in range(len(od) + 1) if int(np.prod(od[:k])) == before), None)
        if j is None or j >= len(od):
            return set()
        rest = int(np.prod(xd[ca + 1:]))
        if od[j] == xd[ca] and int(np.prod(od[j + 1:])) == rest:
            self.set(node.outputs[0], Layout(j - len(od), lx.segments, lx.inner))
        elif od[j] == xd[ca] * rest and j == len(od) - 1:
            self.set(node.outputs[0], Layout(-1, lx.segments, lx.inner * rest))
        else:
            return set()
        return {0}

    def _move_axes(self, node: Node) -> set[int]:
        lx, xd, od = self.get(node.inputs[0]), value_dims(node.inputs[0]), value_dims(node.outputs[0])
        if lx is None or xd is None or od is None:
            return set()
        ca = lx.axis + len(xd)
        if node.op_type == "Transpose":
            perm = list(node_attr(node, "perm", list(range(len(xd)))[::-1]))
            new = perm.index(ca)
        else:
            axes = node_attr(node, "axes", None)
            if axes is None and len(node.inputs) > 1:
                c = constant_array(node.inputs[1])
                if c is None and node.inputs[1] is not None:
                    return set()
                axes = None if c is None else c.tolist()
            if node.op_type == "Squeeze":
                axes = [i for i, d in enumerate(xd) if d == 1] if axes is None else axes
                axes = [a + len(xd) if a < 0 else a for a in axes]
                if ca in axes:
                    return set()
                new = ca - sum(1 for a in axes if a < ca)
            else:
                if axes is None:
                    return set()
                axes = sorted(a + len(od) if a < 0 else a for a in axes)
                kept = [k for k in range(len(od)) if k not in axes]
                new = kept[ca]
        self.set(node.outputs[0], Layout(new - len(od), lx.segments, lx.inner))
        return {0}
