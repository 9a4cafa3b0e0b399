"""What TVM 0.27's relax ONNX importer cannot take, and what edgec does about it.

Two tables, both measured on onnx's node test cases
(``python -m edgec.testing.conformance --backend tvm``):

- ``miscompiled``: constructs TVM imports without complaint but computes wrongly (float8
  casts, NonMaxSuppression, training-mode BatchNormalization, ...). The tvm backend
  refuses a model holding one, naming the node, instead of shipping wrong results.
- ``needed_rewrite``: for an import failure (the failing node's op and the importer's
  message), the edgec rewrite that would make it importable, or why none exists; the
  candidate's reason says it.
"""

from __future__ import annotations

import onnx

_FLOAT8 = {17, 18, 19, 20, 24}  # FLOAT8E4M3FN, E4M3FNUZ, E5M2, E5M2FNUZ, E8M0
_SUB_BYTE = {21, 22, 23, 25, 26}  # UINT4, INT4, FLOAT4E2M1, UINT2, INT2
_ONNX = ("", "ai.onnx")


def _element_types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
    except Exception:  # inference is best effort here
        inferred = model
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in [*g.input, *g.value_info, *g.output] if vi.type.HasField("tensor_type")}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def miscompiled(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, str]]:
    """The main graph's nodes TVM 0.27 is known to compute wrongly, each with why."""
    types = None
    found = []
    constants = {t.name for t in model.graph.initializer} - {i.name for i in model.graph.input}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    for node in model.graph.node:
        if node.domain not in _ONNX:
            continue
        op = node.op_type
        why = None
        if op in ("Cast", "CastLike"):
            if types is None:
                types = _element_types(model)
            to = _attr(node, "to") if op == "Cast" else types.get(node.input[1]) if len(node.input) > 1 else None
            source = types.get(node.input[0]) if node.input else None
            # E8M0 → wider types converts right; everything else float8 does not.
            if to in _FLOAT8 or source in _FLOAT8 and source != 24:
                why = ("TVM 0.27 converts float8 wrongly (zero, NaN, infinity and saturation "
                       "come out as other values)")
            elif to in _SUB_BYTE or source in _SUB_BYTE:
                why = "TVM 0.27 cannot hold 2- and 4-bit tensors"
        elif op == "NonMaxSuppression":
            why = "TVM 0.27's NonMaxSuppression returns no boxes"
        elif op == "BatchNormalization" and _attr(node, "training_mode", 0):
            why = "TVM 0.27 ignores BatchNormalization's training_mode (it uses the running statistics)"
        elif op == "ConvTranspose" and _attr(node, "output_shape") is not None \
                and not _output_shape_is_default(node, model):
            why = "TVM 0.27 ignores ConvTranspose's output_shape attribute"
        elif op == "IsInf" and (_attr(node, "detect_negative", 1) == 0 or _attr(node, "detect_positive", 1) == 0):
            why = "TVM 0.27 ignores IsInf's detect_negative/detect_positive (lower-isinf rewrites it)"
        elif op == "Dropout" and len(node.output) > 1 and node.output[1]:
            why = "TVM 0.27 returns Dropout's mask as float, not bool"
        elif op == "SpaceToDepth" and _attr(node, "mode", b"DCR") in (b"CRD", "CRD"):
            why = "TVM 0.27 ignores SpaceToDepth's mode (CRD is computed as DCR)"
        elif op == "Resize":
            why = _resize_problem(node, model)
        elif op == "Expand" and len(node.input) > 1 and node.input[1] not in constants:
            why = ("TVM 0.27 takes a run-time Expand shape as the output shape, without "
                   "broadcasting it against the input's")
        if why is not None:
            found.append((node, why))
    return found


def _resize_problem(node: onnx.NodeProto, model: onnx.ModelProto) -> str | None:
    """Why TVM 0.27 would compute this Resize wrongly, or None (measured on the node cases)."""
    mode = _attr(node, "mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode == "nearest":
        return None
    if _attr(node, "antialias", 0):
        return "TVM 0.27 ignores Resize's antialias"
    scales_name = node.input[2] if len(node.input) > 2 else ""
    scales = next((onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name == scales_name), None)
    if scales is None:
        scales = next((onnx.numpy_helper.to_array(_attr(n, "value")) for n in model.graph.node
                       if n.op_type == "Constant" and n.output[0] == scales_name and _attr(n, "value") is not None),
                      None)
    if scales is None or scales.size == 0:
        return None
    dims = _static_shape(model, node.input[0])
    if dims is None or len(dims) != scales.size:
        return None
    if any(abs(d * s - round(d * s)) > 1e-6 for d, s in zip(dims, scales.tolist())):
        return ("TVM 0.27 interpolates Resize with the ratio of the output to the input size, "
                "not with the given scales, which differ where input size × scale is not whole")
    return None


def _static_shape(model: onnx.ModelProto, name: str) -> list[int] | None:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # inference is best effort here
        return None
    for vi in [*inferred.graph.input, *inferred.graph.value_info]:
        if vi.name == name and vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
            return None if None in dims else dims
    return None


def _output_shape_is_default(node: onnx.NodeProto, model: onnx.ModelProto) -> bool:
    """Whether ConvTranspose's output_shape is what its pads give anyway (TVM ignores it)."""
    if _attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return False
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:
        return False
    shapes = {vi.name: [d.dim_value if d.HasField("dim_value") else None
                        for d in vi.type.tensor_type.shape.dim]
              for vi in [*inferred.graph.input, *inferred.graph.value_info]}
    shapes.update({t.name: list(t.dims) for t in inferred.graph.initializer})
    x, w = shapes.get(node.input[0]), shapes.get(node.input[1])
    wanted = list(_attr(node, "output_shape"))
    if not x or not w or None in x or None in w:
        return False
    spatial = len(x) - 2
    kernel = list(_attr(node, "kernel_shape", w[2:]))
    strides = list(_attr(node, "strides", [1] * spatial))
    dilations = list(_attr(node, "dilations", [1] * spatial))
    extra = list(_attr(node, "output_padding", [0] * spatial))
    pads = list(_attr(node, "pads", [0] * 2 * spatial))
    default = [strides[i] * (x[2 + i] - 1) + extra[i] + (kernel[i] - 1) * dilations[i] + 1
               - pads[i] - pads[spatial + i] for i in range(spatial)]
    return default == wanted[-spatial:]


# (op type or None for any, text in the importer's message, the rewrite that is needed)
KNOWN_CAUSES: tuple[tuple[str | None, str, str], ...] = (
    ("Attention", "num_heads", "expand-functions (ONNX Attention into MatMul/Softmax; TVM's "
                               "converter is com.microsoft's)"),
    (None, "cannot handle ShapeExpr", "bind-dims + infer-shapes + fold-constants (a shape "
                                      "computed at run time must fold to a constant)"),
    ("Reshape", "requires the input new shape to be Shape",
     "bind-dims + infer-shapes + fold-constants (the new shape must fold to a constant)"),
    (None, "Only constant axes", "fold-constants (the axes input must be a constant)"),
    ("Resize", "is currently unsupported", "fold-constants (Resize's scales/sizes must be constants)"),
    ("Resize", "has no len()", "fold-constants (Resize's scales/sizes must be constants)"),
    ("Resize", "has no attribute 'value'", "fold-constants (Resize's scales/sizes must be constants)"),
    ("TopK", "must be a constant", "fold-constants (TopK's k must be a constant)"),
    ("CumSum", "non-constant axis", "fold-constants (CumSum's axis must be a constant)"),
    ("Split", "Dynamic Split", "fold-constants (Split's sizes must be a constant)"),
    ("Constant", "no value in Constant", "fold-constants (Constant with value_float(s)/value_int(s))"),
    (None, "is not populated", "infer-shapes (the importer needs every value's type)"),
    (None, "ty.IsMissing", "infer-shapes (the importer needs every value's type)"),
    ("CastLike", "", "lower-castlike"),
    ("Resize", "Only one of scales and sizes", "omit-empty-resize-inputs (an empty scales/roi beside "
                                               "sizes must be absent)"),
    *((op, "not supported for frontend ONNX", f"unroll-rnn (an {op} with ONNX's default cell: default "
                                               "activations, no clip, no peepholes, layout 0, float32, "
                                               "over a sequence whose length is known)")
      for op in ("LSTM", "GRU", "RNN")),
    (None, "only supports Tensor that has ShapeExpr shape",
     "a shape known when compiling: the input's shape depends on a value computed at run time "
     "(an If whose branches differ in shape, or a symbolic dimension no spec binds); sink-into-if "
     "moves what follows such an If into its branches only where that reaches values of one "
     "shape whichever branch runs (not a graph output whose shape is the branch's), and no edgec "
     "rewrite folds it unless that value is a constant"),
)


def needed_rewrite(op_type: str | None, message: str) -> str:
    """The rewrite that would make a node TVM failed to import importable (a sentence).

    ``legalize-tvm`` runs every rewrite named here; a model that still fails after it
    holds a value the rewrite could not make constant (an input, or a dimension no
    spec binds)."""
    for op, text, rewrite in KNOWN_CAUSES:
        if (op is None or op == op_type) and text in message:
            return f"needs {rewrite}"
    if "OpNotImplemented" in message or "not supported for frontend ONNX" in message:
        if op_type and _has_function(op_type):
            return f"needs expand-functions{{ops={op_type}}} (its ONNX function body)"
        return "no edgec rewrite: TVM has no converter for this op and ONNX gives it no function body"
    return "no known rewrite"


def _has_function(op_type: str) -> bool:
    try:
        schema = onnx.defs.get_schema(op_type)
    except onnx.defs.SchemaError:
        return False
    return bool(schema.has_function or schema.has_context_dependent_function)


__all__ = ["KNOWN_CAUSES", "miscompiled", "needed_rewrite"]
