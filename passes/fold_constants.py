"""Constant folding: ``y = op(c1, c2)`` with constant ``c1``, ``c2`` -> initializer ``y``.

Constants are initializers that are not graph inputs (a graph input can override its
initializer at run time), ``Constant`` nodes (which become initializers themselves)
and values already folded; ``Shape`` and ``Size`` of a value whose shape is
statically known fold too. The constant region of each graph is evaluated by
onnxruntime in one session whose outputs are the constant values the rest of the
graph reads; when onnxruntime cannot run some node, the region is split until the
culprit is isolated and left alone, so one odd node never blocks the rest. A folded
value larger than ``max-size`` elements stays unfolded unless the constants it makes
dead are at least as large: folding never balloons the model. Nothing is run before
its size is known: each value's shape is inferred (onnx shape inference with data
propagation) from the actual shapes and values of the constants, never from the shapes
the model declares, and a node whose output would be larger than both ``max-size`` and
its largest input, or whose size cannot be known before running it, is not evaluated. If/Loop/Scan bodies
are folded too (constants of enclosing graphs are constants inside); function bodies
are not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import onnx
from onnx import numpy_helper

from edgec.frontend.onnx_export import export_node
from edgec.ir.core import Graph, Model, Node, Tensor, Value
from edgec.ir.ops import NON_TENSOR_OPS, canonical_domain, is_deterministic
from edgec.ir.types import DataType, Shape, TensorType
from edgec.passmgr.base import OptionError, Pass, PassContext, PassResult

# Domains onnxruntime's CPU provider implements; other domains' nodes are left alone.
ORT_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
# onnxruntime's names of the element types whose values it returns as these numpy types.
_ORT_TENSOR_TYPES = {f"tensor({name})": np.dtype(dtype) for name, dtype in [
    ("float", np.float32), ("double", np.float64), ("float16", np.float16),
    ("int8", np.int8), ("int16", np.int16), ("int32", np.int32), ("int64", np.int64),
    ("uint8", np.uint8), ("uint16", np.uint16), ("uint32", np.uint32), ("uint64", np.uint64),
    ("bool", np.bool_), ("string", np.object_)]}
# Nodes of the evaluation model are named so that onnxruntime's errors point at them.
_NODE_PREFIX = "__edgec_fold_"
_NODE_NAME = re.compile(re.escape(_NODE_PREFIX) + r"(\d+)")


@dataclass(frozen=True)
class FoldConstants(Pass):
    """Replace nodes whose inputs are all constant by initializers holding their outputs."""

    name: ClassVar[str] = "fold-constants"
    max_size: int = field(default=1 << 20, metadata={
        "help": "largest folded tensor, in elements, unless it replaces at least as many "
                "bytes of constants"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_size < 0:
            raise OptionError("max-size", f"must be >= 0, got {self.max_size}")

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        folder = _Folder(model, self.max_size)
        folder.graph(model.graph, in_loop=False)
        stats = {"nodes-folded": folder.folded, "bytes-added": folder.bytes_added,
                 "bytes-removed": folder.bytes_removed, "too-large": len(folder.too_large),
                 "not-evaluable": len(folder.not_evaluable)}
        return PassResult(folder.folded > 0, stats)


class _BatchFailure(Exception):
    def __init__(self, node: Node | None, message: str):
        super().__init__(message)
        self.node = node


class _Folder:
    def __init__(self, model: Model, max_size: int):
        self.model = model
        self.max_size = max_size
        self.local_functions = {(f.domain, f.name) for f in model.functions.values()}
        self.folded = 0
        self.bytes_added = 0
        self.bytes_removed = 0
        self.too_large: set[int] = set()
        self.not_evaluable: set[int] = set()

    # -- walking graphs
    def graph(self, g: Graph, in_loop: bool) -> None:
        region: list[Node] = []
        pending: set[int] = set()  # outputs of region nodes: constant, not yet evaluated

        def is_constant(v: Value | None) -> bool:
            return v is None or id(v) in pending or v.is_constant()

        for node in g:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                tensor = _constant_attribute(node)
                if tensor is not None and node.outputs:
                    self.materialize(g, node.output, tensor)
                    g.remove(node)
                    self.folded += 1
                    continue
            if node.op_type in ("Shape", "Size") and node.domain in ("", "ai.onnx") and not in_loop:
                array = _static_shape_value(node)
                if array is not None:
                    self.materialize(g, node.output, Tensor(array))
                    g.remove(node)
                    self.folded += 1
                    continue
            if self.can_fold(node) and all(is_constant(v) for v in node.inputs):
                if self.surely_too_large(node):
                    self.too_large.add(id(node))
                    continue
                region.append(node)
                pending.update(id(o) for o in node.outputs)
        if region:
            region = self.bound_region(region)
        if region:
            self.fold_region(g, region)
        for node in g:
            loop = in_loop or node.op_type in ("Loop", "Scan")
            for sub in node.subgraphs():
                self.graph(sub, loop)

    def can_fold(self, node: Node) -> bool:
        domain = canonical_domain(node.domain)
        if (domain not in ORT_DOMAINS or (node.domain, node.op_type) in self.local_functions
                or node.op_type in NON_TENSOR_OPS or not is_deterministic(node)):
            return False
        if not any(o.name for o in node.outputs):
            return False
        if any(a.subgraphs() or a.ref_attr_name for a in node.attributes.values()):
            return False
        return all(o.type is None or isinstance(o.type, TensorType) for o in node.outputs)

    # -- the size cap
    def surely_too_large(self, node: Node) -> bool:
        """Whether ``node``'s output is known, before running anything, to exceed the
        cap by more than the constants that folding it would make dead."""
        numel = _estimated_numel(node)
        if numel is None or numel <= self.max_size:
            return False
        out = node.outputs[0]
        itemsize = max(1, (out.dtype.itemsize_bits if out.dtype else 32) // 8)
        dead = sum(v.const.nbytes for v in set(node.inputs)
                   if v is not None and v.is_constant() and v.const.sparse_proto is None
                   and all(u is node for u, _ in v.uses()))
        return numel * itemsize > dead

    def dead_constant_bytes(self, value: Value, folding: set[int]) -> int:
        """Bytes of the constants in ``value``'s cone that only the folded nodes read."""
        total = 0
        seen: set[int] = set()
        stack = [value.producer()]
        while stack:
            node = stack.pop()
            for v in node.inputs:
                if v is None or id(v) in seen:
                    continue
                seen.add(id(v))
                p = v.producer()
                if p is not None and id(p) in folding:
                    stack.append(p)
                elif (v.is_constant() and self.removable(v)
                      and all(id(u) in folding for u, _ in v.uses())):
                    total += v.const.nbytes
        return total

    def removable(self, v: Value) -> bool:
        return not v.is_returned() and v.const.sparse_proto is None

    # -- bounding a region's sizes before running it
    def bound_region(self, region: list[Node]) -> list[Node]:
        """The nodes of ``region`` whose outputs' sizes are known, before anything runs,
        to stay within ``max(max_size, largest input)`` elements; the others (and what
        reads them) are set aside as too large or not evaluable. Where a size depends on
        values computed in the region (ConstantOfShape of a Concat of Identity ...), those
        values are computed first, bounded the same way, and inference runs again."""
        known: dict[int, np.ndarray] = {}
        produced = {id(o): n for n in region for o in n.outputs}
        while True:
            shapes = self.infer_region(region, known)
            keep: list[Node] = []
            unavailable: set[int] = set()
            waiting: list[Value] = []
            for node in region:
                outs = [o for o in node.outputs if o.name]
                if any(v is not None and id(v) in unavailable for v in node.inputs):
                    unavailable.update(id(o) for o in node.outputs)
                    continue
                sizes = [_numel(shapes.get(id(o))) for o in outs]
                if any(s is None for s in sizes):
                    pending = [v for v in node.inputs if v is not None and id(v) in produced
                               and id(v) not in known]
                    if pending:
                        waiting.extend(pending)
                    else:
                        self.not_evaluable.add(id(node))
                    unavailable.update(id(o) for o in node.outputs)
                    continue
                largest = max((_numel(shapes.get(id(v))) or 0 for v in node.inputs
                               if v is not None), default=0)
                if max(sizes, default=0) > max(self.max_size, largest):
                    self.too_large.add(id(node))
                    unavailable.update(id(o) for o in node.outputs)
                    continue
                keep.append(node)
            kept = {id(n) for n in keep}
            needed = list({id(v): v for v in waiting if id(produced[id(v)]) in kept}.values())
            if not needed:
                for v in waiting:
                    self.not_evaluable.add(id(produced[id(v)]))
                return keep
            got, _ = self.evaluate(_cone(keep, needed), needed, known)
            if not got:
                for v in needed:
                    self.not_evaluable.add(id(produced[id(v)]))
                return [n for n in keep if not any(id(o) in {id(v) for v in needed}
                                                   for o in n.outputs)]
            known.update(got)

    def empty_model(self, graph_name: str) -> onnx.ModelProto:
        """A model with the folded model's IR version and opsets and an empty graph
        named ``graph_name``, for running or shape-inferring a region of it alone."""
        proto = onnx.ModelProto()
        proto.ir_version = self.model.ir_version
        for domain, version in self.model.opset_imports.items():
            op = proto.opset_import.add()
            op.domain, op.version = domain, version
        proto.graph.name = graph_name
        return proto

    def infer_region(self, region: list[Node], known: dict[int, np.ndarray]
                     ) -> dict[int, tuple | None]:
        """Shapes of the region's inputs and outputs, from the constants' actual shapes
        and (small ones') values and the values in ``known``: onnx shape inference with
        data propagation on a model of the region alone, holding no declared shapes."""
        shapes: dict[int, tuple | None] = {}
        proto = self.empty_model("fold_constants_shapes")
        gp = proto.graph
        produced = {id(o) for n in region for o in n.outputs}
        fed: set[int] = set()
        by_name: dict[str, Value] = {}

        def feed(v: Value, array: np.ndarray | None, tensor: Tensor | None) -> None:
            fed.add(id(v))
            dims = tuple(array.shape) if array is not None else tuple(tensor.dims)
            shapes[id(v)] = dims
            dtype = array.dtype if array is not None else None
            if array is not None and array.size <= _INFER_DATA_LIMIT:
                gp.initializer.append(numpy_helper.from_array(array, v.name))
            elif tensor is not None and _numel(dims) is not None \
                    and _numel(dims) <= _INFER_DATA_LIMIT and tensor.sparse_proto is None:
                gp.initializer.append(_tensor_proto(tensor, v.name))
            else:
                elem = (onnx.helper.np_dtype_to_tensor_dtype(dtype) if dtype is not None
                        else int(tensor.dtype))
                gp.input.append(onnx.helper.make_tensor_value_info(v.name, elem, list(dims)))

        try:
            for i, node in enumerate(region):
                if all(id(o) in known for o in node.outputs if o.name):
                    for o in node.outputs:
                        if o.name and id(o) not in fed:
                            feed(o, known[id(o)], None)
                    continue
                for v in node.inputs:
                    if v is None or id(v) in fed or (id(v) in produced and id(v) not in known):
                        continue
                    if id(v) in known:
                        feed(v, known[id(v)], None)
                    elif v.is_constant():
                        feed(v, None, v.const)
                gp.node.append(export_node(node, name=f"{_NODE_PREFIX}{i}"))
                for o in node.outputs:
                    if o.name:
                        by_name[o.name] = o
                        gp.output.add().name = o.name
            inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False,
                                                         data_prop=True)
        except Exception:  # noqa: BLE001 - anything onnx cannot infer is not evaluated
            return shapes
        for vi in list(inferred.graph.output) + list(inferred.graph.value_info):
            v = by_name.get(vi.name)
            if v is None or id(v) in shapes:
                continue
            tt = vi.type.tensor_type
            if vi.type.WhichOneof("value") != "tensor_type" or not tt.HasField("shape"):
                continue
            dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
            shapes[id(v)] = dims
        return shapes

    # -- folding a region
    def fold_region(self, g: Graph, region: list[Node]) -> None:
        folding = list(region)
        results: dict[int, np.ndarray] = {}
        while folding:
            # Nodes that feed no needed value are not folding's business (dce's); once
            # they are out, what they read from the region becomes needed in turn.
            while True:
                ids = {id(n) for n in folding}
                needed = [o for n in folding for o in n.outputs if o.name and (
                    o.is_returned() or any(id(u) not in ids for u, _ in o.uses()))]
                in_cone = _cone(folding, needed)
                if len(in_cone) == len(folding):
                    break
                folding = in_cone
            missing = [o for o in needed if id(o) not in results]
            if missing:
                got, failed = self.evaluate(folding, missing, {})
                results.update(got)
                failed.update(id(o.producer()) for o in missing if id(o) not in results)
                if failed:
                    self.not_evaluable.update(failed)
                    folding = _without(folding, failed)
                    continue
            rejected = set()
            for o in needed:
                array = results[id(o)]
                if not _fits(array, o):
                    self.not_evaluable.add(id(o.producer()))
                    rejected.add(id(o.producer()))
                elif (array.size > self.max_size
                      and array.nbytes > self.dead_constant_bytes(o, ids)):
                    self.too_large.add(id(o.producer()))
                    rejected.add(id(o.producer()))
            if rejected:
                folding = _without(folding, rejected)
                continue
            break
        if not folding:
            return
        inputs = {id(v): v for n in folding for v in n.inputs if v is not None and v.is_constant()}
        for o in needed:
            tensor = Tensor(results[id(o)])
            self.bytes_added += tensor.nbytes
            self.materialize(g, o, tensor)
        for node in reversed(folding):
            g.remove(node)
        self.folded += len(folding)
        for v in inputs.values():
            owner = v.graph
            if owner is not None and not v.has_uses() and self.removable(v):
                owner.remove_initializer(v.name)
                self.bytes_removed += v.const.nbytes

    def materialize(self, g: Graph, v: Value, tensor: Tensor) -> Value:
        """Make ``v``'s readers read a new initializer holding ``tensor``, under ``v``'s name."""
        name = v.name
        v.name = g.unique_name(f"{name}_folded")
        tensor.name = name
        new = Value(name, TensorType(tensor.dtype, Shape(tensor.dims)), const=tensor,
                    doc_string=v.doc_string, metadata_props=v.metadata_props)
        g.add_initializer(new)
        v.replace_all_uses_with(new, replace_graph_outputs=True)
        return new

    # -- evaluation with onnxruntime
    def evaluate(self, nodes: list[Node], wanted: list[Value], known: dict[int, np.ndarray]
                 ) -> tuple[dict[int, np.ndarray], set[int]]:
        """Values of ``wanted`` (outputs of ``nodes``, in order), and the nodes that
        could not be evaluated. Splits the batch in halves while onnxruntime fails."""
        failed: set[int] = set()
        while True:
            nodes = _runnable(nodes, known, failed)
            produced = {id(o) for n in nodes for o in n.outputs}
            wanted = [v for v in wanted if id(v) in produced]
            if not wanted:
                return {}, failed
            try:
                return self.run_batch(nodes, wanted, known), failed
            except _BatchFailure as e:
                if e.node is not None and any(n is e.node for n in nodes):
                    failed.add(id(e.node))
                    continue
                if len(nodes) == 1:
                    failed.add(id(nodes[0]))
                    return {}, failed
            half = len(nodes) // 2
            first, second = nodes[:half], nodes[half:]
            later = {id(n) for n in second}
            wanted_ids = {id(v) for v in wanted}
            first_wanted = [o for n in first for o in n.outputs if o.name and (
                id(o) in wanted_ids or any(id(u) in later for u, _ in o.uses()))]
            first_results, first_failed = self.evaluate(first, first_wanted, known)
            second_results, second_failed = self.evaluate(
                second, wanted, {**known, **first_results})
            results = {k: a for k, a in first_results.items() if k in wanted_ids}
            results.update(second_results)
            return results, failed | first_failed | second_failed

    def run_batch(self, nodes: list[Node], wanted: list[Value], known: dict[int, np.ndarray]
                  ) -> dict[int, np.ndarray]:
        import onnxruntime as ort

        proto = self.empty_model("fold_constants")
        gp = proto.graph
        produced = {id(o) for n in nodes for o in n.outputs}
        fed: set[int] = set()
        for i, node in enumerate(nodes):
            for v in node.inputs:
                if v is None or id(v) in produced or id(v) in fed:
                    continue
                fed.add(id(v))
                if id(v) in known:
                    gp.initializer.append(numpy_helper.from_array(known[id(v)], v.name))
                elif v.const.sparse_proto is not None:
                    gp.sparse_initializer.append(v.const.sparse_proto)
                else:
                    gp.initializer.append(_tensor_proto(v.const, v.name))
            gp.node.append(export_node(node, name=f"{_NODE_PREFIX}{i}"))
        for v in wanted:
            gp.output.add().name = v.name
        options = ort.SessionOptions()
        # onnxruntime's own graph rewrites are not wanted: the kernels, as written.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 4
        try:
            session = ort.InferenceSession(proto.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
            arrays = session.run([v.name for v in wanted], {})
            declared = [o.type for o in session.get_outputs()]
        except Exception as e:  # onnxruntime raises its own exception types
            match = _NODE_NAME.search(str(e))
            node = nodes[int(match.group(1))] if match and int(match.group(1)) < len(nodes) else None
            raise _BatchFailure(node, str(e)) from None
        # onnxruntime hands some element types (float8, int4, ...) back as numpy types
        # of the same width (uint8): such an array would change the value's type.
        return {id(v): a if _ORT_TENSOR_TYPES.get(t) == getattr(a, "dtype", None) else None
                for v, a, t in zip(wanted, arrays, declared)}


# Constants up to this many elements are handed to shape inference with their values
# (shape arithmetic needs them); larger ones only with their shapes.
_INFER_DATA_LIMIT = 1 << 16


def _numel(dims: tuple | None) -> int | None:
    """Elements of a shape whose every dimension is known (Python ints: no overflow)."""
    if dims is None or any(not isinstance(d, int) or d < 0 for d in dims):
        return None
    count = 1
    for d in dims:
        count *= d
    return count


def _runnable(nodes: list[Node], known: dict[int, np.ndarray], failed: set[int]) -> list[Node]:
    """``nodes`` less those that read a value nobody can provide (a failed node's)."""
    out = []
    available: set[int] = set()
    for n in nodes:
        if id(n) not in failed and all(v is None or id(v) in available or id(v) in known
                                       or v.is_constant() for v in n.inputs):
            out.append(n)
            available.update(id(o) for o in n.outputs)
        else:
            failed.add(id(n))
    return out


def _cone(nodes: list[Node], values: list[Value]) -> list[Node]:
    """The nodes of ``nodes`` that ``values`` depend on, in order."""
    members = {id(n) for n in nodes}
    keep: set[int] = set()
    stack = [v.producer() for v in values]
    while stack:
        n = stack.pop()
        if n is None or id(n) in keep or id(n) not in members:
            continue
        keep.add(id(n))
        stack.extend(v.producer() for v in n.inputs if v is not None)
    return [n for n in nodes if id(n) in keep]


def _without(nodes: list[Node], dropped: set[int]) -> list[Node]:
    """``nodes`` less ``dropped`` and everything that reads their outputs."""
    out = []
    unavailable: set[int] = set()
    for n in nodes:
        if id(n) in dropped or any(v is not None and id(v) in unavailable for v in n.inputs):
            unavailable.update(id(o) for o in n.outputs)
        else:
            out.append(n)
    return out


def _fits(array, v: Value) -> bool:
    """Whether onnxruntime's result can stand in for ``v`` as an initializer."""
    if not isinstance(array, np.ndarray):  # a sequence, map or empty optional
        return False
    try:
        dtype = DataType.from_numpy(array.dtype)
    except Exception:  # numpy types onnx has no element type for
        return False
    return v.dtype is None or v.dtype is DataType.UNDEFINED or v.dtype == dtype


def _tensor_proto(t: Tensor, name: str) -> onnx.TensorProto:
    if t.proto is not None and t.external is None:
        tp = onnx.TensorProto()
        tp.CopyFrom(t.proto)
    else:
        tp = numpy_helper.from_array(t.numpy())
    tp.name = name
    return tp


def _constant_attribute(node: Node) -> Tensor | None:
    """The tensor a Constant node produces, or None (sparse values: left to onnxruntime)."""
    a = node.attributes
    if "value" in a:
        return a["value"].value
    if "value_float" in a:
        return Tensor(np.array(a["value_float"].value, dtype=np.float32))
    if "value_floats" in a:
        return Tensor(np.array(a["value_floats"].value, dtype=np.float32))
    if "value_int" in a:
        return Tensor(np.array(a["value_int"].value, dtype=np.int64))
    if "value_ints" in a:
        return Tensor(np.array(a["value_ints"].value, dtype=np.int64))
    if "value_string" in a:
        return Tensor(np.array(a["value_string"].value, dtype=object))
    if "value_strings" in a:
        return Tensor(np.array(a["value_strings"].value, dtype=object))
    return None


def _static_shape_value(node: Node) -> np.ndarray | None:
    """Shape(x) or Size(x) when the dimensions it reports are statically known."""
    x = node.inputs[0] if node.inputs else None
    if x is None or x.shape is None or x.shape.dims is None or any(
            a.ref_attr_name for a in node.attributes.values()):
        return None
    dims = list(x.shape.dims)
    if node.op_type == "Size":
        return np.array(int(np.prod(dims)), dtype=np.int64) if all(
            isinstance(d, int) for d in dims) else None
    rank = len(dims)
    start, end = node.attr("start", 0), node.attr("end", rank)
    start, end = (min(max(i + rank if i < 0 else i, 0), rank) for i in (start, end))
    reported = dims[start:end]
    if not all(isinstance(d, int) for d in reported):
        return None
    return np.array(reported, dtype=np.int64)


def _estimated_numel(node: Node) -> int | None:
    """The element count of ``node``'s first output, when knowable without running it."""
    out = node.outputs[0]
    if out.shape is not None and out.shape.is_static:
        return out.shape.numel()
    ins = node.inputs

    def data(i: int) -> np.ndarray | None:
        v = ins[i] if len(ins) > i else None
        if v is None or not v.is_constant() or v.const.sparse_proto is not None:
            return None
        return v.const.numpy()

    def dims(i: int) -> list[int] | None:
        v = ins[i] if len(ins) > i else None
        if v is None:
            return None
        if v.const is not None:
            return list(v.const.dims)
        return list(v.shape.dims) if v.shape is not None and v.shape.is_static else None

    try:
        if node.op_type == "ConstantOfShape":
            shape = data(0)
            return None if shape is None else int(np.prod(shape))
        if node.op_type == "Expand":
            shape, input_dims = data(1), dims(0)
            if shape is None or input_dims is None:
                return None
            return int(np.prod(np.broadcast_shapes(tuple(input_dims), tuple(int(s) for s in shape))))
        if node.op_type == "Tile":
            repeats, input_dims = data(1), dims(0)
            if repeats is None or input_dims is None:
                return None
            return int(np.prod(input_dims)) * int(np.prod(repeats))
    except (ValueError, TypeError):
        return None
    return None
