"""edgec's IR: a typed dataflow graph close to ONNX, with use-def links kept by the API.

`Model` owns a main `Graph` and local `Function`s. A `Graph` holds its `Node`s in a
linked list (removal while iterating is safe), its inputs, outputs and initializers.
A `Value` knows its producer, every use ``(node, input_index)`` and every graph
output slot ``(graph, index)`` that returns it; nodes inside subgraphs that read a
value of an enclosing graph are recorded as its uses, and subgraphs that return it
as its output slots, so ``replace_all_uses_with`` reaches into If/Loop/Scan bodies.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from edgec.ir.types import DataType, Shape, TensorType, Type

# --------------------------------------------------------------------------- tensors


@dataclass(frozen=True)
class ExternalData:
    """Where an external tensor's bytes are: a file relative to ``base_dir``.

    The path has been checked to stay inside ``base_dir`` when the model was loaded.
    """

    location: str
    offset: int
    length: int | None
    base_dir: str
    extra: tuple[tuple[str, str], ...] = ()  # other key/value pairs, e.g. checksum

    @property
    def path(self) -> str:
        return os.path.join(self.base_dir, self.location)

    def read_bytes(self) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            return f.read() if self.length is None else f.read(self.length)


class Tensor:
    """A constant tensor: numpy data, or an ONNX TensorProto / external bytes loaded lazily.

    A tensor imported from ONNX keeps its proto so that export is byte-for-byte
    lossless and external data of multi-GB models is never loaded unless a pass reads
    it (`numpy()`).
    """

    __slots__ = ("name", "dtype", "dims", "doc_string", "metadata_props", "_array",
                 "_proto", "_external", "sparse_proto")

    def __init__(self, array: np.ndarray | None = None, *, name: str = "",
                 dtype: DataType | None = None, dims: Sequence[int] | None = None,
                 doc_string: str = "", metadata_props: dict[str, str] | None = None):
        self.name = name
        self._array = None
        self._proto: onnx.TensorProto | None = None
        self._external: ExternalData | None = None
        self.sparse_proto: onnx.SparseTensorProto | None = None
        self.doc_string = doc_string
        self.metadata_props = dict(metadata_props or {})
        if array is not None:
            array = np.asarray(array)
            self._array = array
            self.dtype = dtype if dtype is not None else DataType.from_numpy(array.dtype)
            self.dims = tuple(int(d) for d in array.shape)
        else:
            if dtype is None or dims is None:
                raise ValueError("Tensor needs an array, or dtype and dims")
            self.dtype = dtype
            self.dims = tuple(dims)

    @classmethod
    def from_proto(cls, proto: onnx.TensorProto, external: ExternalData | None = None) -> "Tensor":
        t = cls(name=proto.name, dtype=DataType(proto.data_type), dims=tuple(proto.dims),
                doc_string=proto.doc_string,
                metadata_props={p.key: p.value for p in proto.metadata_props})
        t._proto = proto
        t._external = external
        return t

    @property
    def proto(self) -> onnx.TensorProto | None:
        """The ONNX proto this tensor was imported from, while its data is unchanged."""
        return self._proto

    @property
    def external(self) -> ExternalData | None:
        return self._external

    @property
    def is_loaded(self) -> bool:
        return self._array is not None

    @property
    def numel(self) -> int:
        return int(np.prod(self.dims, dtype=np.int64)) if self.dims else 1

    @property
    def nbytes(self) -> int:
        if self.dtype is DataType.STRING:
            return sum(len(s) for s in self.numpy().flat)
        return (self.numel * self.dtype.itemsize_bits + 7) // 8

    def numpy(self) -> np.ndarray:
        if self._array is None:
            proto = self._proto
            assert proto is not None
            if self._external is not None:
                inline = onnx.TensorProto()
                inline.CopyFrom(proto)
                del inline.external_data[:]
                inline.data_location = onnx.TensorProto.DEFAULT
                inline.raw_data = self._external.read_bytes()
                proto = inline
            self._array = numpy_helper.to_array(proto)
        return self._array

    def set_numpy(self, array: np.ndarray) -> None:
        """Replace the data; the original proto no longer describes it."""
        array = np.asarray(array)
        self._array = array
        self.dtype = DataType.from_numpy(array.dtype)
        self.dims = tuple(int(d) for d in array.shape)
        self._proto = None
        self._external = None

    def __repr__(self) -> str:
        return f"Tensor({self.name!r}, {self.dtype.short_name}{list(self.dims)})"


# --------------------------------------------------------------------------- values


class Value:
    """An SSA value: produced by one node output, or a graph input or initializer."""

    __slots__ = ("name", "type", "doc_string", "metadata_props", "const", "_producer",
                 "_index", "_uses", "_returned", "_graph", "__weakref__")

    def __init__(self, name: str | None = None, type: Type | None = None, *,
                 const: Tensor | None = None, doc_string: str = "",
                 metadata_props: dict[str, str] | None = None):
        self.name = name
        self.type = type
        self.doc_string = doc_string
        self.metadata_props = dict(metadata_props or {})
        # The initializer data, for values that are initializers.
        self.const = const
        self._producer: Node | None = None
        self._index: int | None = None
        # Ordered set of (node, input_index); a dict keeps insertion order.
        self._uses: dict[tuple[Node, int], None] = {}
        # Ordered set of (graph, output_index): the graph output slots holding this
        # value, kept by `GraphOutputs`.
        self._returned: dict[tuple[Graph, int], None] = {}
        # The graph owning this value when it is a graph input or initializer.
        self._graph: Graph | None = None

    # -- structure
    def producer(self) -> "Node | None":
        return self._producer

    @property
    def index(self) -> int | None:
        """Which output of its producer this value is."""
        return self._index

    def uses(self) -> list[tuple["Node", int]]:
        return list(self._uses)

    def consumers(self) -> list["Node"]:
        return list(dict.fromkeys(node for node, _ in self._uses))

    def has_uses(self) -> bool:
        return bool(self._uses)

    @property
    def graph(self) -> "Graph | None":
        if self._producer is not None:
            return self._producer.graph
        return self._graph

    def is_graph_input(self) -> bool:
        g = self._graph
        return g is not None and any(v is self for v in g.inputs)

    def returned_by(self) -> list[tuple["Graph", int]]:
        """The graph output slots ``(graph, index)`` holding this value: its own
        graph's, and those of subgraphs that return it from an enclosing scope."""
        return list(self._returned)

    def is_returned(self) -> bool:
        """Whether some graph returns this value (its own graph or a nested one):
        such a value must keep existing even when no node reads it."""
        return bool(self._returned)

    def is_graph_output(self) -> bool:
        """Whether the graph this value belongs to returns it: part of that graph's
        interface, whose names matter (a model's outputs)."""
        g = self.graph
        return g is not None and any(slot_graph is g for slot_graph, _ in self._returned)

    def is_initializer(self) -> bool:
        g = self._graph
        return g is not None and self.name is not None and g.initializers.get(self.name) is self

    def is_constant(self) -> bool:
        """True for an initializer that is not also a graph input (which could override it)."""
        return self.const is not None and self.is_initializer() and not self.is_graph_input()

    # -- types
    @property
    def dtype(self) -> DataType | None:
        return self.type.dtype if isinstance(self.type, TensorType) else None

    @property
    def shape(self) -> Shape | None:
        return self.type.shape if isinstance(self.type, TensorType) else None

    # -- mutation
    def replace_all_uses_with(self, new: "Value", *, replace_graph_outputs: bool = False) -> None:
        """Make every node that reads this value read ``new`` instead.

        Output slots of subgraphs that return this value from an enclosing scope are
        reads too (an If branch returning an outer value) and always take ``new``.
        The output slots of this value's own graph are its interface: with
        ``replace_graph_outputs`` they take ``new`` as well and the caller decides on
        names (see `Graph.replace_value`, which keeps the interface's names);
        without it they keep this value.
        """
        if new is self:
            return
        for node, i in list(self._uses):
            node._set_input(i, new)
        own = self.graph
        for g, i in list(self._returned):
            if replace_graph_outputs or g is not own:
                g.outputs[i] = new

    def __repr__(self) -> str:
        return f"Value({self.name!r}, {self.type})"


# --------------------------------------------------------------------------- attributes

AttrType = onnx.AttributeProto.AttributeType


@dataclass
class Attr:
    """A node attribute. ``value`` is a Python value (int, float, str, bytes, Tensor,
    Graph, Type, or a list of those); ``ref_attr_name`` is set for attribute
    references inside function bodies."""

    name: str
    type: int  # onnx.AttributeProto.AttributeType
    value: Any
    ref_attr_name: str = ""
    doc_string: str = ""

    @classmethod
    def infer(cls, name: str, value: Any) -> "Attr":
        """An attribute whose type is inferred from a Python value."""
        A = onnx.AttributeProto
        if isinstance(value, bool) or isinstance(value, (int, np.integer)):
            return cls(name, A.INT, int(value))
        if isinstance(value, (float, np.floating)):
            return cls(name, A.FLOAT, float(value))
        if isinstance(value, (str, bytes)):
            return cls(name, A.STRING, value)
        if isinstance(value, Tensor):
            return cls(name, A.TENSOR, value)
        if isinstance(value, np.ndarray):
            return cls(name, A.TENSOR, Tensor(value))
        if isinstance(value, Graph):
            return cls(name, A.GRAPH, value)
        if isinstance(value, (list, tuple)):
            items = list(value)
            if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
                return cls(name, A.INTS, [int(v) for v in items])
            if all(isinstance(v, (int, float, np.number)) for v in items):
                return cls(name, A.FLOATS, [float(v) for v in items])
            if all(isinstance(v, (str, bytes)) for v in items):
                return cls(name, A.STRINGS, items)
            if all(isinstance(v, Tensor) for v in items):
                return cls(name, A.TENSORS, items)
            if all(isinstance(v, Graph) for v in items):
                return cls(name, A.GRAPHS, items)
        raise TypeError(f"cannot infer the ONNX attribute type of {name}={value!r}")

    def subgraphs(self) -> list["Graph"]:
        if self.type == onnx.AttributeProto.GRAPH:
            return [self.value]
        if self.type == onnx.AttributeProto.GRAPHS:
            return list(self.value)
        return []


# --------------------------------------------------------------------------- nodes


class Node:
    """One operator application. Inputs may be None (an omitted optional input)."""

    __slots__ = ("op_type", "domain", "name", "overload", "attributes", "doc_string",
                 "metadata_props", "device_configurations", "_inputs", "_outputs", "graph",
                 "_link", "__weakref__")

    def __init__(self, op_type: str, inputs: Sequence[Value | None] = (), *,
                 domain: str = "", attributes: Iterable[Attr] | dict[str, Any] = (),
                 outputs: Sequence[Value] | None = None, num_outputs: int = 1,
                 name: str = "", overload: str = "", doc_string: str = "",
                 metadata_props: dict[str, str] | None = None):
        self.op_type = op_type
        self.domain = domain
        self.name = name
        self.overload = overload
        self.doc_string = doc_string
        self.metadata_props = dict(metadata_props or {})
        # NodeDeviceConfigurationProto list, kept opaque for lossless export.
        self.device_configurations: list[Any] = []
        self.graph: Graph | None = None
        self._link: _Link | None = None
        if isinstance(attributes, dict):
            attributes = [a if isinstance(a, Attr) else Attr.infer(k, a)
                          for k, a in attributes.items()]
        self.attributes: dict[str, Attr] = {}
        for a in attributes:
            self.set_attr(a.name, a)
        self._inputs: list[Value | None] = []
        for value in inputs:
            self._append_input(value)
        if outputs is None:
            outputs = [Value() for _ in range(num_outputs)]
        self._outputs: list[Value] = []
        for i, out in enumerate(outputs):
            if out._producer is not None:
                raise ValueError(f"value {out.name!r} already has a producer")
            out._producer = self
            out._index = i
            self._outputs.append(out)

    # -- inputs
    @property
    def inputs(self) -> tuple[Value | None, ...]:
        return tuple(self._inputs)

    def _append_input(self, value: Value | None) -> None:
        index = len(self._inputs)
        self._inputs.append(value)
        if value is not None:
            value._uses[(self, index)] = None

    def _set_input(self, index: int, value: Value | None) -> None:
        old = self._inputs[index]
        if old is not None:
            old._uses.pop((self, index), None)
        self._inputs[index] = value
        if value is not None:
            value._uses[(self, index)] = None

    def set_input(self, index: int, value: Value | None) -> None:
        self._set_input(index, value)

    def set_inputs(self, values: Sequence[Value | None]) -> None:
        self._drop_input_uses()
        self._inputs = []
        for v in values:
            self._append_input(v)

    def append_input(self, value: Value | None) -> None:
        self._append_input(value)

    def _drop_input_uses(self) -> None:
        for i, v in enumerate(self._inputs):
            if v is not None:
                v._uses.pop((self, i), None)

    # -- outputs
    @property
    def outputs(self) -> tuple[Value, ...]:
        return tuple(self._outputs)

    @property
    def output(self) -> Value:
        """The single output of a one-output node."""
        if len(self._outputs) != 1:
            raise ValueError(f"{self.op_type} node {self.name!r} has {len(self._outputs)} outputs")
        return self._outputs[0]

    # -- attributes
    def attr(self, name: str, default: Any = None) -> Any:
        a = self.attributes.get(name)
        return default if a is None else a.value

    def set_attr(self, name: str, value: Any) -> None:
        attr = value if isinstance(value, Attr) else Attr.infer(name, value)
        for sub in attr.subgraphs():
            sub.parent = self
        self.attributes[name] = attr

    def subgraphs(self) -> list["Graph"]:
        return [g for a in self.attributes.values() for g in a.subgraphs()]

    # -- position
    def is_erased(self) -> bool:
        return self._link is None

    def prev(self) -> "Node | None":
        link = self._link._prev if self._link else None
        return None if link is None or link.node is None else link.node

    def next(self) -> "Node | None":
        link = self._link._next if self._link else None
        return None if link is None or link.node is None else link.node

    def describe(self) -> str:
        """How diagnostics name this node: ``node 'conv1' (Conv)``."""
        op = self.op_type if not self.domain else f"{self.domain}::{self.op_type}"
        if self.name:
            return f"node '{self.name}' ({op})"
        first = self._outputs[0].name if self._outputs else None
        return f"{op} node producing '{first}'" if first else f"unnamed {op} node"

    def __repr__(self) -> str:
        return f"Node({self.op_type!r}, name={self.name!r})"


class _Link:
    """A slot of a graph's node list. An erased link keeps its ``_next`` so that an
    iterator standing on it can move on after the node was removed or moved."""

    __slots__ = ("node", "_prev", "_next", "erased")

    def __init__(self, node: Node | None):
        self.node = node
        self._prev: _Link = self
        self._next: _Link = self
        self.erased = False


# --------------------------------------------------------------------------- graphs


class GraphOutputs(list):
    """A graph's outputs: a list of values that records each slot on the value it
    holds (`Value.returned_by`), through every way of changing a list."""

    __slots__ = ("_graph",)

    def __init__(self, graph: "Graph", values: Iterable[Value] = ()):
        super().__init__()
        self._graph = graph
        self.extend(values)

    def _record(self, start: int = 0) -> None:
        g = self._graph
        for i in range(start, len(self)):
            self[i]._returned[(g, i)] = None

    def _forget(self) -> None:
        g = self._graph
        for i, value in enumerate(self):
            value._returned.pop((g, i), None)

    def __setitem__(self, index, value) -> None:
        if isinstance(index, slice):
            self._forget()
            super().__setitem__(index, value)
            self._record()
            return
        i = range(len(self))[index]  # IndexError as a list gives it
        self[i]._returned.pop((self._graph, i), None)
        super().__setitem__(i, value)
        value._returned[(self._graph, i)] = None

    def __delitem__(self, index) -> None:
        self._forget()
        super().__delitem__(index)
        self._record()

    def append(self, value: Value) -> None:
        super().append(value)
        self._record(len(self) - 1)

    def extend(self, values: Iterable[Value]) -> None:
        start = len(self)
        super().extend(values)
        self._record(start)

    def __iadd__(self, values: Iterable[Value]) -> "GraphOutputs":
        self.extend(values)
        return self

    def __imul__(self, n: int) -> "GraphOutputs":
        self._forget()
        super().__imul__(n)
        self._record()
        return self

    def insert(self, index: int, value: Value) -> None:
        self._forget()
        super().insert(index, value)
        self._record()

    def pop(self, index: int = -1) -> Value:
        self._forget()
        value = super().pop(index)
        self._record()
        return value

    def remove(self, value: Value) -> None:
        self._forget()
        super().remove(value)
        self._record()

    def clear(self) -> None:
        self._forget()
        super().clear()

    def sort(self, *args, **kwargs) -> None:
        self._forget()
        super().sort(*args, **kwargs)
        self._record()

    def reverse(self) -> None:
        self._forget()
        super().reverse()
        self._record()


class Graph:
    """A graph or subgraph: nodes in order, inputs, outputs, initializers."""

    def __init__(self, name: str = "", *, inputs: Sequence[Value] = (),
                 outputs: Sequence[Value] = (), nodes: Iterable[Node] = (),
                 initializers: Iterable[Value] = (), doc_string: str = "",
                 metadata_props: dict[str, str] | None = None):
        self.name = name
        self.doc_string = doc_string
        self.metadata_props = dict(metadata_props or {})
        self.inputs: list[Value] = []
        self._outputs = GraphOutputs(self, outputs)
        self.initializers: dict[str, Value] = {}
        # The node whose attribute holds this graph, for subgraphs.
        self.parent: Node | None = None
        # Kept opaque for lossless export: SparseTensorProto is handled through
        # Tensor.sparse_proto, quantization annotations by tensor name.
        self.quantization_annotation: list[onnx.TensorAnnotation] = []
        self._root = _Link(None)
        self._len = 0
        self._name_counter = itertools.count()
        self._names: set[str] | None = None
        for v in inputs:
            self.add_input(v)
        for v in initializers:
            self.add_initializer(v)
        for n in nodes:
            self.append(n)

    @property
    def outputs(self) -> GraphOutputs:
        """The values this graph returns; each slot is recorded on its value."""
        return self._outputs

    @outputs.setter
    def outputs(self, values: Iterable[Value]) -> None:
        values = list(values)
        self._outputs.clear()
        self._outputs.extend(values)

    # -- iteration over nodes
    def __iter__(self) -> Iterator[Node]:
        link = self._root._next
        while link is not self._root:
            if not link.erased:
                yield link.node  # type: ignore[misc]
            link = link._next

    def __reversed__(self) -> Iterator[Node]:
        link = self._root._prev
        while link is not self._root:
            if not link.erased:
                yield link.node  # type: ignore[misc]
            link = link._prev

    def __len__(self) -> int:
        return self._len

    @property
    def nodes(self) -> list[Node]:
        return list(self)

    def all_nodes(self) -> Iterator[Node]:
        """Every node in this graph and, depth first, in its subgraphs."""
        for node in self:
            yield node
            for sub in node.subgraphs():
                yield from sub.all_nodes()

    def subgraphs(self) -> Iterator["Graph"]:
        """This graph's subgraphs, recursively."""
        for node in self:
            for sub in node.subgraphs():
                yield sub
                yield from sub.subgraphs()

    # -- node mutation
    def _link_after(self, anchor: _Link, node: Node) -> None:
        if node.graph is not None:
            raise ValueError(f"{node.describe()} already belongs to a graph; remove it first")
        link = _Link(node)
        nxt = anchor._next
        link._prev, link._next = anchor, nxt
        anchor._next = link
        nxt._prev = link
        node._link = link
        node.graph = self
        self._len += 1
        self._name_new_outputs(node)

    def append(self, node: Node) -> Node:
        self._link_after(self._root._prev, node)
        return node

    def extend(self, nodes: Iterable[Node]) -> None:
        for n in nodes:
            self.append(n)

    def insert_after(self, anchor: Node, nodes: Node | Sequence[Node]) -> None:
        if isinstance(nodes, Node):
            nodes = [nodes]
        self._check_owned(anchor)
        link = anchor._link
        for n in nodes:
            self._link_after(link, n)  # type: ignore[arg-type]
            link = n._link

    def insert_before(self, anchor: Node, nodes: Node | Sequence[Node]) -> None:
        if isinstance(nodes, Node):
            nodes = [nodes]
        self._check_owned(anchor)
        link = anchor._link._prev  # type: ignore[union-attr]
        for n in nodes:
            self._link_after(link, n)
            link = n._link  # type: ignore[assignment]

    def remove(self, node: Node, *, safe: bool = True) -> None:
        """Unlink ``node`` and drop its input uses.

        With ``safe`` (the default) a node whose outputs are still used or returned
        by a graph (this one, or a subgraph returning it) cannot be removed: that
        would leave dangling values. Without it, those uses and output slots keep
        the removed node's outputs, for the caller to redirect.
        """
        self._check_owned(node)
        if safe:
            for out in node._outputs:
                if out._uses:
                    users = ", ".join(n.describe() for n in out.consumers()[:3])
                    raise ValueError(f"cannot remove {node.describe()}: its output "
                                     f"'{out.name}' is still used by {users}")
                if out._returned:
                    where = ", ".join(f"graph '{g.name}'" for g in
                                      dict.fromkeys(g for g, _ in out._returned))
                    raise ValueError(f"cannot remove {node.describe()}: its output "
                                     f"'{out.name}' is a graph output of {where}")
        node._drop_input_uses()
        link = node._link
        assert link is not None
        link.erased = True
        link._prev._next = link._next
        link._next._prev = link._prev
        node._link = None
        node.graph = None
        self._len -= 1

    def _check_owned(self, node: Node) -> None:
        if node.graph is not self:
            raise ValueError(f"{node.describe()} does not belong to graph '{self.name}'")

    # -- inputs, outputs, initializers
    def add_input(self, value: Value) -> Value:
        value._graph = self
        self.inputs.append(value)
        return value

    def add_initializer(self, value: Value) -> Value:
        if value.const is None:
            raise ValueError(f"initializer {value.name!r} has no data")
        if value.name is None:
            value.name = self.unique_name("const")
        if value.name in self.initializers and self.initializers[value.name] is not value:
            raise ValueError(f"duplicate initializer name {value.name!r}")
        value._graph = self
        self.initializers[value.name] = value
        return value

    def remove_initializer(self, name: str) -> Value:
        value = self.initializers.pop(name)
        if not value.is_graph_input():
            value._graph = None
        return value

    def remove_unused_initializers(self) -> int:
        """Drop the initializers nothing reads (and that are not graph inputs, nor
        returned by this graph or a subgraph), e.g. the fp32 weights a rewrite
        replaced. Returns how many."""
        unused = [name for name, init in self.initializers.items()
                  if not init.has_uses() and not init.is_graph_input() and not init.is_returned()]
        for name in unused:
            self.remove_initializer(name)
        return len(unused)

    def make_constant(self, array: np.ndarray, name: str | None = None) -> Value:
        """A new initializer holding ``array``."""
        array = np.asarray(array)
        tensor = Tensor(array)
        value = Value(self.unique_name(name or "const"),
                      TensorType(tensor.dtype, Shape(tensor.dims)), const=tensor)
        tensor.name = value.name  # type: ignore[assignment]
        return self.add_initializer(value)

    # -- whole-value replacement
    def replace_value(self, old: Value, new: Value) -> None:
        """Replace every use of ``old`` by ``new`` (subgraphs returning ``old`` from an
        enclosing scope included), keeping the names of this graph's outputs.

        If ``old`` is an output of this graph, the output slot takes ``new``; when
        ``new`` can be renamed (it is an ordinary intermediate value) it takes
        ``old``'s name, otherwise an Identity node keeps the interface intact.
        """
        old.replace_all_uses_with(new)
        for i, out in enumerate(self.outputs):
            if out is not old:
                continue
            renamable = (new.producer() is not None and new.graph is self
                         and not new.is_graph_output())
            if renamable:
                new_name = old.name
                old.name = self.unique_name((old.name or "v") + "_replaced")
                new.name = new_name
                self.outputs[i] = new
            else:
                identity = Node("Identity", [new], outputs=[Value(old.name, old.type)])
                old.name = self.unique_name((old.name or "v") + "_replaced")
                self.append(identity)
                self.outputs[i] = identity.output

    def hand_over_outputs(self, old: Value, new: Value, suffix: str) -> None:
        """This graph's output slots that hold ``old`` take ``new`` under ``old``'s name,
        so the graph's interface keeps its names; ``old`` is renamed to a unique
        ``<name><suffix>``. Nodes that read ``old`` still read it (``new`` is typically
        computed from it: a Cast or a QuantizeLinear/DequantizeLinear pair)."""
        slots = [i for graph, i in old.returned_by() if graph is self]
        if not slots:
            return
        name = old.name
        old.name = self.unique_name(f"{name}{suffix}")
        new.name = name
        for i in slots:
            self.outputs[i] = new

    # -- names
    def root(self) -> "Graph":
        g = self
        while g.parent is not None and g.parent.graph is not None:
            g = g.parent.graph
        return g

    def _all_names(self) -> set[str]:
        root = self.root()
        if root._names is None:
            names: set[str] = set()
            graphs = [root, *root.subgraphs()]
            for g in graphs:
                names.update(v.name for v in g.inputs if v.name)
                names.update(g.initializers)
                for node in g:
                    names.update(o.name for o in node._outputs if o.name)
            root._names = names
        return root._names

    def unique_name(self, prefix: str) -> str:
        """A value name not used anywhere in this graph's model scope."""
        names = self._all_names()
        if prefix not in names:
            names.add(prefix)
            return prefix
        root = self.root()
        while True:
            candidate = f"{prefix}_{next(root._name_counter)}"
            if candidate not in names:
                names.add(candidate)
                return candidate

    def _name_new_outputs(self, node: Node) -> None:
        names = self.root()._names
        for out in node._outputs:
            # None means "not named yet"; "" is an omitted optional output and stays so.
            if out.name is None:
                out.name = self.unique_name(f"{node.op_type.lower()}_out")
            elif names is not None:
                names.add(out.name)

    def invalidate_names(self) -> None:
        """Forget the cached name set (after renaming values by hand)."""
        self.root()._names = None

    # -- order
    def is_sorted(self) -> bool:
        defined = {id(v) for v in self.inputs} | {id(v) for v in self.initializers.values()}
        outer = self._outer_scope_ids()
        for node in self:
            for v in node_reads(node):
                if v is not None and id(v) not in defined and id(v) not in outer:
                    return False
            defined.update(id(o) for o in node._outputs)
        return True

    def _outer_scope_ids(self) -> set[int]:
        ids: set[int] = set()
        g = self
        while g.parent is not None and g.parent.graph is not None:
            g = g.parent.graph
            ids.update(id(v) for v in g.inputs)
            ids.update(id(v) for v in g.initializers.values())
            for node in g:
                ids.update(id(o) for o in node._outputs)
        return ids

    def sort(self) -> None:
        """Reorder nodes topologically, keeping the current order where it is already
        valid. Raises ValueError naming a node on a cycle if there is one."""
        nodes = list(self)
        position = {id(n): i for i, n in enumerate(nodes)}
        producer_of: dict[int, Node] = {}
        for n in nodes:
            for o in n._outputs:
                producer_of[id(o)] = n
        deps: dict[int, set[int]] = {}
        users: dict[int, list[Node]] = {id(n): [] for n in nodes}
        for n in nodes:
            d = set()
            for v in node_reads(n):
                p = producer_of.get(id(v)) if v is not None else None
                if p is not None and p is not n:
                    d.add(id(p))
            deps[id(n)] = d
            for p in d:
                users[p].append(n)
        import heapq
        ready = [(position[id(n)], n) for n in nodes if not deps[id(n)]]
        heapq.heapify(ready)
        order: list[Node] = []
        remaining = {k: len(v) for k, v in deps.items()}
        while ready:
            _, n = heapq.heappop(ready)
            order.append(n)
            for u in users[id(n)]:
                remaining[id(u)] -= 1
                if remaining[id(u)] == 0:
                    heapq.heappush(ready, (position[id(u)], u))
        if len(order) != len(nodes):
            stuck = next(n for n in nodes if remaining[id(n)] > 0)
            raise ValueError(f"the graph has a cycle through {stuck.describe()}")
        # Relink in the new order without touching use-def links.
        link = self._root
        for n in order:
            nl = n._link
            assert nl is not None
            link._next = nl
            nl._prev = link
            link = nl
        link._next = self._root
        self._root._prev = link

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, {len(self)} nodes)"


def node_reads(node: Node) -> Iterator[Value | None]:
    """The values a node reads: its inputs and the outer values its subgraphs capture."""
    yield from node._inputs
    for sub in node.subgraphs():
        yield from captured_values(sub)


def captured_values(graph: Graph) -> list[Value]:
    """Values of enclosing scopes that ``graph`` (or a graph nested in it) reads with a
    node or returns as an output, in first-seen order."""
    captured: dict[int, Value] = {}
    for g in [graph, *graph.subgraphs()]:
        for n in g:
            for v in n._inputs:
                if v is not None and not _defined_within(v, graph):
                    captured[id(v)] = v
        for v in g.outputs:
            if not _defined_within(v, graph):
                captured[id(v)] = v
    return list(captured.values())


def _defined_within(value: Value, graph: Graph) -> bool:
    """Whether ``value`` belongs to ``graph`` or to a graph nested in it."""
    g = value.graph
    while g is not None:
        if g is graph:
            return True
        g = g.parent.graph if g.parent is not None else None
    return False


class NameScope:
    """Name -> Value for one graph, chained to the enclosing graph's scope: how ONNX
    names resolve in nested graphs (a subgraph sees its own names, then its parents')."""

    __slots__ = ("values", "parent")

    def __init__(self, parent: "NameScope | None" = None):
        self.values: dict[str, Value] = {}
        self.parent = parent

    def lookup(self, name: str) -> Value | None:
        scope: NameScope | None = self
        while scope is not None:
            v = scope.values.get(name)
            if v is not None:
                return v
            scope = scope.parent
        return None


# --------------------------------------------------------------------------- functions and models


@dataclass
class Function:
    """A model-local function (FunctionProto). ``graph`` holds its body; its inputs
    and outputs are untyped values, as in ONNX."""

    domain: str
    name: str
    graph: Graph
    overload: str = ""
    attributes: list[str] = field(default_factory=list)
    attribute_defaults: dict[str, Attr] = field(default_factory=dict)
    opset_imports: dict[str, int] = field(default_factory=dict)
    doc_string: str = ""
    metadata_props: dict[str, str] = field(default_factory=dict)

    @property
    def identifier(self) -> tuple[str, str, str]:
        return (self.domain, self.name, self.overload)


@dataclass
class Model:
    graph: Graph
    ir_version: int = 8
    opset_imports: dict[str, int] = field(default_factory=lambda: {"": 17})
    producer_name: str = ""
    producer_version: str = ""
    domain: str = ""
    model_version: int = 0
    doc_string: str = ""
    metadata_props: dict[str, str] = field(default_factory=dict)
    functions: dict[tuple[str, str, str], Function] = field(default_factory=dict)
    # Kept as protos for lossless export; edgec's passes do not look inside them.
    training_info: list[onnx.TrainingInfoProto] = field(default_factory=list)
    configuration: list[Any] = field(default_factory=list)
    # The directory external data paths are relative to.
    base_dir: str | None = None

    def opset(self, domain: str = "") -> int | None:
        if domain == "ai.onnx":
            domain = ""
        return self.opset_imports.get(domain)

    def all_graphs(self) -> Iterator[Graph]:
        """The main graph, its subgraphs, and function bodies with theirs."""
        yield self.graph
        yield from self.graph.subgraphs()
        for f in self.functions.values():
            yield f.graph
            yield from f.graph.subgraphs()

    def node_count(self) -> int:
        return sum(len(g) for g in self.all_graphs())
