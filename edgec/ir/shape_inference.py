"""Value types from ONNX's shape inference: ``y: ?`` -> ``y: f32[1,16]``.

`infer_types` runs ``onnx.shape_inference.infer_shapes(..., data_prop=True)`` on the
model's ONNX form and merges what it finds into the types of the IR's values, in
every graph (If, Loop and Scan bodies included). Merging never loses information
(`merge_types`): a known dimension is not replaced by a symbolic or unknown one, and a
known element type is never changed. Weights stored as external data are not read:
for inference they are graph inputs of known type. When inference fails the model is
left as it was.

It needs the IR's ONNX form, so it is the one module of the IR that uses the ONNX
codec (`edgec.frontend`); the IR's data structures do not.
"""

from __future__ import annotations

from typing import Iterator

import onnx

from edgec.diagnostics import DiagnosticSink, Location
from edgec.frontend.onnx_export import export_model
from edgec.frontend.onnx_import import import_type
from edgec.ir.core import Graph, Model, Value
from edgec.ir.types import DataType, OptionalType, SequenceType, Shape, TensorType, Type

# Ops whose outputs keep the types they had: ONNX's inference for them can disagree
# with onnxruntime's, which then rejects the model that carries ONNX's answer.
UNTRUSTED_OPS: frozenset[str] = frozenset()


def infer_types(model: Model, diagnostics: DiagnosticSink | None = None) -> int:
    """Refine the types of ``model``'s values in place; returns how many changed.

    When onnx cannot infer the model, nothing changes and, given ``diagnostics``, a
    warning (code ``infer-shapes.failed``) says why.
    """
    try:
        proto = export_model(model)
        _external_initializers_as_inputs(proto.graph)
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=False,
                                                     strict_mode=False, data_prop=True)
    except Exception as e:  # onnx raises InferenceError, ValidationError, RuntimeError...
        if diagnostics is not None:
            lines = str(e).strip().splitlines()
            diagnostics.warning(
                f"shape inference failed; types left as they were: "
                f"{lines[0] if lines else type(e).__name__}",
                Location(obj=f"model '{model.graph.name}'"), code="infer-shapes.failed")
        return 0
    types: dict[str, onnx.TypeProto] = {}
    _collect_types(inferred.graph, types)
    changed = 0
    for g in [model.graph, *model.graph.subgraphs()]:
        for v in _typed_values(g):
            tp = types.get(v.name) if v.name else None
            if tp is None:
                continue
            merged = merge_types(v.type, import_type(tp))
            if merged != v.type:
                v.type = merged
                changed += 1
    return changed


def _external_initializers_as_inputs(gp: onnx.GraphProto) -> None:
    """Replace external initializers by typed graph inputs, so nothing reads their bytes."""
    inputs = {vi.name for vi in gp.input}
    kept = []
    for tp in gp.initializer:
        if tp.data_location != onnx.TensorProto.EXTERNAL:
            kept.append(tp)
        elif tp.name not in inputs:
            gp.input.append(onnx.helper.make_tensor_value_info(tp.name, tp.data_type, list(tp.dims)))
    if len(kept) != len(gp.initializer):
        del gp.initializer[:]
        gp.initializer.extend(kept)


def _collect_types(gp: onnx.GraphProto, types: dict[str, onnx.TypeProto]) -> None:
    # Value names are unique across a model's graphs (subgraphs may not shadow), so
    # one table serves every graph.
    for vi in [*gp.value_info, *gp.output, *gp.input]:
        if vi.HasField("type"):
            types.setdefault(vi.name, vi.type)
    for node in gp.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                _collect_types(a.g, types)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sub in a.graphs:
                    _collect_types(sub, types)


def _typed_values(g: Graph) -> Iterator[Value]:
    """The values of ``g`` whose types inference may refine: node outputs, and the
    inputs of subgraphs (Loop and Scan bodies often leave them untyped)."""
    if g.parent is not None:
        yield from g.inputs
    for node in g:
        if node.op_type in UNTRUSTED_OPS or node.domain not in ("", "ai.onnx", "ai.onnx.ml"):
            continue
        yield from (o for o in node.outputs if o.name)


def merge_types(old: Type | None, new: Type | None) -> Type | None:
    """``old`` refined by ``new``: anything ``old`` knows wins."""
    if old is None:
        return new
    if new is None or type(old) is not type(new):
        return old
    if isinstance(old, TensorType):
        dtype = old.dtype if old.dtype is not DataType.UNDEFINED else new.dtype
        return TensorType(dtype, _merge_shapes(old.shape, new.shape))
    if isinstance(old, (SequenceType, OptionalType)):
        return type(old)(merge_types(old.elem, new.elem))
    return old


def _merge_shapes(old: Shape | None, new: Shape | None) -> Shape | None:
    if old is None or old.dims is None:
        return new if new is not None and new.dims is not None else old
    if new is None or new.dims is None or len(new.dims) != len(old.dims):
        return old
    dims = []
    for a, b in zip(old.dims, new.dims):
        if isinstance(a, int):
            dims.append(a)
        elif isinstance(b, int) or (a is None and b is not None):
            dims.append(b)
        else:
            dims.append(a)
    return Shape(tuple(dims), old.denotations)
