"""Ops TVM 0.27 has no converter for, or whose converter ignores part of the op, written
as the ONNX ops they are defined by: ``expand-functions`` (the op's ONNX function body),
``lower-castlike``, ``lower-isinf``, ``lower-lpnorm`` and ``unroll-cumprod``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import onnx

from edgec.ir.core import Model, Node, Value
from edgec.ir.types import DataType
from edgec.passmgr.base import Pass, PassContext, PassResult

from .common import ONNX_DOMAINS, Chain, constant_value, float_type, static_dims


# ONNX-domain ops that TVM 0.27's importer has no converter for, or whose converter does
# not implement the ONNX op (Attention: it is com.microsoft's), and whose ONNX schema
# defines a function body (measured on the ONNX node cases).
DEFAULT_EXPANDED_OPS = (
    "Attention", "BlackmanWindow", "Celu", "CenterCropPad", "HammingWindow", "HannWindow",
    "NegativeLogLikelihoodLoss", "RotaryEmbedding", "SoftmaxCrossEntropyLoss", "SwiGLU",
    "Swish", "CausalConvWithState",
    # TVM has a converter, but its build fails for some axes ("Tensor dimension mismatch").
    "RMSNormalization",
)


@dataclass(frozen=True)
class ExpandFunctions(Pass):
    """Replace ONNX ops TVM cannot import by their ONNX function bodies.

    Legal whenever the op's schema (at the model's opset) defines a function: ONNX
    defines the op's meaning as that body, so outputs are the same up to the rounding
    of the body's own ops. Context-dependent bodies (Attention, SoftmaxCrossEntropyLoss)
    need the inputs' element types: a node whose input types are unknown is left as it
    is. Nodes inside If/Loop/Scan bodies are left alone.
    """

    name: ClassVar[str] = "expand-functions"
    ops: tuple[str, ...] = field(default=DEFAULT_EXPANDED_OPS, metadata={
        "help": "the ONNX op types to expand into their function bodies"})
    ops_with_extra_outputs: tuple[str, ...] = field(default=("LayerNormalization",), metadata={
        "help": "op types expanded only when an output beyond the first is used"})
    ops_not_float32: tuple[str, ...] = field(default=("Elu",), metadata={
        "help": "op types expanded only when their first input is not float32"})

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        from edgec.frontend import export_model, import_model

        wanted = set(self.ops)

        def selected(op_type: str, domain: str, outputs, inputs=()) -> bool:
            if domain not in ONNX_DOMAINS:
                return False
            if op_type in wanted:
                return True
            # TVM's Elu converter subtracts from a float32 constant whatever the type.
            if op_type in self.ops_not_float32 and inputs and inputs[0] in elem_types \
                    and elem_types[inputs[0]] != onnx.TensorProto.FLOAT:
                return True
            # TVM imports LayerNormalization's Mean and InvStdDev outputs as scalars.
            return op_type in self.ops_with_extra_outputs and sum(1 for o in outputs if o) > 1

        elem_types = {v.name: int(v.dtype) for v in model.graph.inputs
                      if v.name and v.dtype is not None and v.dtype is not DataType.UNDEFINED}
        elem_types.update({o.name: int(o.dtype) for n in model.graph for o in n.outputs
                           if o.name and o.dtype is not None and o.dtype is not DataType.UNDEFINED})
        if not any(selected(n.op_type, n.domain, [o.name for o in n.outputs],
                            [v.name if v is not None else "" for v in n.inputs]) for n in model.graph):
            return PassResult(False, {"nodes-expanded": 0})
        opset = model.opset("") or 1
        proto = export_model(model)
        types = _value_types(proto.graph)
        nodes = []
        expanded = skipped = 0
        for index, node in enumerate(proto.graph.node):
            if not selected(node.op_type, node.domain, node.output, node.input):
                nodes.append(node)
                continue
            body = _expand(node, opset, types, f"{node.op_type}_{index}_expanded_")
            if body is None:
                skipped += 1
                nodes.append(node)
                continue
            nodes.extend(body)
            expanded += 1
        if not expanded:
            return PassResult(False, {"nodes-expanded": 0, "not-expandable": skipped})
        del proto.graph.node[:]
        proto.graph.node.extend(nodes)
        new = import_model(proto, base_dir=model.base_dir, check=False)
        return PassResult(True, {"nodes-expanded": expanded, "not-expandable": skipped}, model=new)


def _value_types(graph: onnx.GraphProto) -> dict[str, onnx.TypeProto]:
    types = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        if vi.HasField("type"):
            types[vi.name] = vi.type
    for t in graph.initializer:
        types[t.name] = onnx.helper.make_tensor_type_proto(t.data_type, list(t.dims))
    return types


def _expand(node: onnx.NodeProto, opset: int, types: dict[str, onnx.TypeProto],
            prefix: str) -> list[onnx.NodeProto] | None:
    """``node`` as the nodes of its schema's function at ``opset``, or None."""
    from onnx.backend.test.case.node import function_expand_helper

    try:
        schema = onnx.defs.get_schema(node.op_type, opset, "")
    except onnx.defs.SchemaError:
        return None
    call = onnx.NodeProto()
    call.CopyFrom(node)
    given = {a.name for a in call.attribute}
    for name, attribute in schema.attributes.items():
        if name not in given and attribute.default_value.name:
            call.attribute.append(attribute.default_value)
    versions = [v for v in schema.function_opset_versions if v <= opset]
    function = onnx.FunctionProto()
    if versions:
        function.ParseFromString(schema.get_function_with_opset_version(max(versions)))
    else:
        versions = [v for v in schema.context_dependent_function_opset_versions if v <= opset]
        if not versions:
            return None
        input_types = []
        for name in node.input:
            if name == "":
                input_types.append(onnx.TypeProto())
                continue
            tp = types.get(name)
            if tp is None or not tp.tensor_type.elem_type:
                return None
            input_types.append(tp)
        try:
            function.ParseFromString(schema.get_context_dependent_function_with_opset_version(
                max(versions), call.SerializeToString(), [t.SerializeToString() for t in input_types]))
        except Exception:  # the builder rejects what it cannot expand
            return None
    if any(o.domain in ONNX_DOMAINS and o.version > opset for o in function.opset_import):
        return None
    if any(n.domain not in ONNX_DOMAINS for n in function.node):
        return None
    return function_expand_helper(call, function, prefix)


@dataclass(frozen=True)
class LowerCastLike(Pass):
    """``CastLike(x, like)`` → ``Cast(x, to=dtype(like))``.

    Legal when ``like``'s element type is known: CastLike is defined as Cast to that
    type (``saturate`` carries over). TVM's converter reads ``like``'s type from the
    relax value, which a shape-expression or an unpopulated type does not give.
    """

    name: ClassVar[str] = "lower-castlike"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        lowered = 0
        for g in [model.graph, *model.graph.subgraphs()]:
            for node in list(g):
                if node.op_type != "CastLike" or node.domain not in ONNX_DOMAINS:
                    continue
                if len(node.inputs) < 2 or node.inputs[0] is None or node.inputs[1] is None:
                    continue
                dtype = node.inputs[1].dtype
                if dtype is None or dtype is DataType.UNDEFINED:
                    continue
                attributes = {"to": int(dtype)}
                if "saturate" in node.attributes:
                    attributes["saturate"] = node.attr("saturate")
                cast = Node("Cast", [node.inputs[0]], attributes=attributes, name=node.name,
                            outputs=[Value(None, node.output.type)])
                g.insert_before(node, cast)
                g.replace_value(node.output, cast.output)
                g.remove(node)
                lowered += 1
        return PassResult(lowered > 0, {"castlike-lowered": lowered})


@dataclass(frozen=True)
class LowerIsInf(Pass):
    """``IsInf(x, detect_negative=0)`` → ``And(IsInf(x), Greater(x, 0))``, and
    ``detect_positive=0`` → ``And(IsInf(x), Less(x, 0))``.

    Legal always (that is the attributes' definition); TVM 0.27 ignores the attributes.
    """

    name: ClassVar[str] = "lower-isinf"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        import numpy as np

        lowered = 0
        for g in [model.graph, *model.graph.subgraphs()]:
            for node in list(g):
                if node.op_type != "IsInf" or node.domain not in ONNX_DOMAINS or not node.inputs:
                    continue
                negative, positive = node.attr("detect_negative", 1), node.attr("detect_positive", 1)
                x = node.inputs[0]
                if negative and positive or x is None or x.dtype is None or x.dtype is DataType.UNDEFINED:
                    continue
                isinf = Node("IsInf", [x], name=node.name)
                nodes = [isinf]
                if negative or positive:
                    zero = g.make_constant(np.zeros((), DataType(x.dtype).to_numpy()), "zero")
                    sign = Node("Greater" if positive else "Less", [x, zero])
                    both = Node("And", [isinf.output, sign.output], outputs=[Value(None, node.output.type)])
                    nodes += [sign, both]
                else:  # neither sign: nothing is reported
                    not_inf = Node("Not", [isinf.output])
                    both = Node("And", [isinf.output, not_inf.output],
                                outputs=[Value(None, node.output.type)])
                    nodes += [not_inf, both]
                g.insert_before(node, nodes)
                g.replace_value(node.output, nodes[-1].output)
                g.remove(node)
                lowered += 1
        return PassResult(lowered > 0, {"isinf-lowered": lowered})


@dataclass(frozen=True)
class LowerLpNormalization(Pass):
    """``LpNormalization(x, axis, p)`` → ``Where(n = 0, 0, x / n)`` with
    ``n = ReduceL1(x, axis)`` (p = 1) or ``ReduceL2(x, axis)`` (p = 2), kept dims.

    Legal always: that is the op's definition (a zero norm gives 0, as onnx's reference
    says); TVM 0.27 has no converter for it.
    """

    name: ClassVar[str] = "lower-lpnorm"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        import numpy as np

        lowered = 0
        opset = model.opset("") or 1
        for g in [model.graph, *model.graph.subgraphs()]:
            for node in list(g):
                if node.op_type != "LpNormalization" or node.domain not in ONNX_DOMAINS or not node.inputs:
                    continue
                x, p, axis = node.inputs[0], node.attr("p", 2), node.attr("axis", -1)
                dtype = float_type(x)
                if dtype is None or p not in (1, 2):
                    continue
                chain = Chain(g)
                reduce = "ReduceL1" if p == 1 else "ReduceL2"
                if opset >= 18:
                    norm = chain.op(reduce, x, chain.constant([axis], np.int64, "axes"), keepdims=1)
                else:
                    norm = chain.op(reduce, x, axes=[axis], keepdims=1)
                zero = chain.constant(0, dtype.to_numpy(), "zero")
                result = chain.op("Where", chain.op("Equal", norm, zero), zero, chain.op("Div", x, norm))
                chain.replace(node, result)
                lowered += 1
        return PassResult(lowered > 0, {"lpnorms-lowered": lowered})


@dataclass(frozen=True)
class UnrollCumProd(Pass):
    """``CumProd(x, axis)`` over an axis of known extent n → the running products of its
    n slices, concatenated (``exclusive`` starts from 1, ``reverse`` runs from the end).

    Legal when the axis is a constant and its extent is known: the same products in the
    same order as ONNX's definition. TVM 0.27 has no converter for CumProd.
    """

    name: ClassVar[str] = "unroll-cumprod"
    max_extent: int = field(default=256, metadata={"help": "the longest axis unrolled"})

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        import numpy as np

        unrolled = 0
        for g in [model.graph, *model.graph.subgraphs()]:
            for node in list(g):
                if node.op_type != "CumProd" or node.domain not in ONNX_DOMAINS or len(node.inputs) != 2:
                    continue
                x, dims, axis = node.inputs[0], static_dims(node.inputs[0]), constant_value(node.inputs[1])
                if dims is None or axis is None or axis.size != 1 or not dims or x.dtype is None:
                    continue
                axis = int(axis.reshape(())) % len(dims)
                n = dims[axis]
                if not 0 < n <= self.max_extent:
                    continue
                chain = Chain(g)
                axes = chain.constant([axis], np.int64, "axes")
                slices = [chain.op("Slice", x, chain.constant([i], np.int64, "start"),
                                   chain.constant([i + 1], np.int64, "stop"), axes) for i in range(n)]
                order = list(range(n - 1, -1, -1)) if node.attr("reverse", 0) else list(range(n))
                products: dict[int, Value] = {}
                running = None
                for i in order:
                    if node.attr("exclusive", 0):
                        one_shape = tuple(1 if k == axis else d for k, d in enumerate(dims))
                        products[i] = running if running is not None else chain.constant(
                            np.ones(one_shape, x.dtype.to_numpy()), "one")
                        running = slices[i] if running is None else chain.op("Mul", running, slices[i])
                    else:
                        running = slices[i] if running is None else chain.op("Mul", running, slices[i])
                        products[i] = running
                result = chain.op("Concat", *(products[i] for i in range(n)), axis=axis) if n > 1 else \
                    chain.op("Identity", products[0])
                chain.replace(node, result)
                unrolled += 1
        return PassResult(unrolled > 0, {"cumprods-unrolled": unrolled})
