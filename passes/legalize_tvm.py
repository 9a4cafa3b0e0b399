"""``legalize-tvm``: rewrite what TVM's relax ONNX importer cannot take into what it can.

TVM 0.27's importer (``tvm.relax.frontend.onnx.from_onnx``) refuses or mistranslates
graphs that onnxruntime runs: shapes computed at run time (``Shape → Gather → Concat →
Reshape``: "Node cannot handle ShapeExpr inputs", "Reshape requires the input new shape
to be Shape"), operators it has no converter for or whose converter is another domain's
(ONNX ``Attention`` reaches the com.microsoft converter: ``KeyError: 'num_heads'``), and
values whose type is missing. The group runs, in order:

1. ``bind-dims`` (only under ``edgec compile``, where the spec gives the batch, and only
   where the graph reads shapes): the inputs' symbolic batch dimension becomes the
   spec's batch; the model records it (``edgec.legalize-tvm.bound-batch``) and the tvm
   backend's module then takes that batch only, run a batch at a time;
2. then, until nothing changes (at most ``max-iterations`` rounds): ``infer-shapes``;
   ``widen-half`` (float16 MatMul, Conv, Gemm, Attention, Softmax computed in float32, as
   onnxruntime does);
   ``expand-functions`` (ops TVM lacks become their ONNX function bodies);
   ``lower-castlike`` (``CastLike(x, like)`` → ``Cast(x, to=dtype(like))``);
   ``lower-isinf`` (IsInf's detect_negative/detect_positive, which TVM ignores);
   ``guard-bitshift`` (once: out-of-range shift amounts as ONNX defines them);
   ``guard-float-mod`` (once: float Mod by an infinity); ``stable-softplus`` (Softplus
   and Mish without the cancellation of ``log(1 + exp(x))``); ``omit-empty-resize-inputs``
   (Paddle2ONNX's empty roi/scales beside sizes); ``unroll-rnn`` (LSTM, GRU and RNN over a
   sequence of known length as their steps); ``fold-empty-reductions``; ``lower-lpnorm``;
   ``unroll-cumprod``; ``widen-integer-pow``; ``expand-resize-axes``;
   ``fold-constants``; ``max-at-lowest`` (a -inf test of a max-reduction, which TVM
   starts at the lowest finite value); ``dce``. With
   every dimension known, ``Shape``/``Size`` fold, and the shape arithmetic behind
   Reshape, Expand, Tile, Slice, Resize, ConstantOfShape, Range and Reduce axes folds to
   the constants the importer needs; types become populated on the way.

Each of these is a pass of its own (``edgec opt -p expand-functions``), with a
docstring that says when it is legal; ``legalize-tvm`` is what the tvm candidate's
pipeline runs before the model is handed to TVM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import onnx

from edgec.ir.core import Model, Node, Value
from edgec.ir.types import DataType, Shape, TensorType
from edgec.passmgr.base import OptionError, Pass, PassContext, PassResult

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

_ONNX_DOMAINS = ("", "ai.onnx")


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
            if domain not in _ONNX_DOMAINS:
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
    if any(o.domain in _ONNX_DOMAINS and o.version > opset for o in function.opset_import):
        return None
    if any(n.domain not in _ONNX_DOMAINS for n in function.node):
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
                if node.op_type != "CastLike" or node.domain not in _ONNX_DOMAINS:
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
class MaxAtLowest(Pass):
    """``Equal(ReduceMax(x), -inf)`` → ``LessOrEqual(ReduceMax(x), lowest)``, ``lowest``
    the element type's most negative finite value.

    TVM 0.27 starts a max-reduction at the lowest finite value, not at -inf, so a row
    of -inf (a fully masked attention row; ONNX Attention's body tests for it) reduces
    to ``lowest`` and the comparison with -inf is false. Legal except where a row's
    maximum is exactly ``lowest`` while finite, which the rewritten test also counts as
    fully masked.
    """

    name: ClassVar[str] = "max-at-lowest"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        import numpy as np

        rewritten = 0
        for g in [model.graph, *model.graph.subgraphs()]:
            for node in list(g):
                if node.op_type != "Equal" or node.domain not in _ONNX_DOMAINS or len(node.inputs) != 2:
                    continue
                a, b = node.inputs
                if a is None or b is None:
                    continue
                if b.producer() is not None and b.producer().op_type == "ReduceMax":
                    a, b = b, a
                producer = a.producer()
                if producer is None or producer.op_type != "ReduceMax" or not b.is_constant():
                    continue
                c = b.const.numpy()
                if c.dtype.kind != "f" or c.size != 1 or not np.isneginf(c).all():
                    continue
                lowest = g.make_constant(np.full(c.shape, np.finfo(c.dtype).min, c.dtype), "lowest")
                compare = Node("LessOrEqual", [a, lowest], name=node.name,
                               outputs=[Value(None, node.output.type)])
                g.insert_before(node, compare)
                g.replace_value(node.output, compare.output)
                g.remove(node)
                rewritten += 1
        return PassResult(rewritten > 0, {"comparisons-rewritten": rewritten})


@dataclass(frozen=True)
class WidenHalf(Pass):
    """Compute float16 ``MatMul``, ``Attention``, ``Softmax``, ``Conv``, ``ConvTranspose``
    and ``Gemm`` in float32: their float16 inputs are cast to float32 and their float16
    outputs cast back.

    TVM 0.27 accumulates a float16 MatMul or Conv (and the MatMuls and Softmax of an
    expanded Attention) in float16; onnxruntime's CPU kernels and the ONNX reference
    accumulate in float32 and round once, which this rewrite spells out. Legal always: each output
    is the float16 rounding of a more precise result; only the error of float16
    intermediates goes away. Non-float16 inputs (boolean masks) are left as they are.
    """

    name: ClassVar[str] = "widen-half"
    ops: tuple[str, ...] = field(default=("MatMul", "Attention", "Softmax", "Conv", "ConvTranspose",
                                          "Gemm"), metadata={
        "help": "the op types computed in float32"})

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        widened = 0
        for g in [model.graph, *model.graph.subgraphs()]:
            for node in list(g):
                if node.op_type not in self.ops or node.domain not in _ONNX_DOMAINS:
                    continue
                half = [v is not None and v.dtype is DataType.FLOAT16 for v in node.inputs]
                if not any(half) or any(v is not None and (v.dtype is None or v.dtype is DataType.UNDEFINED)
                                        for v in node.inputs):
                    continue
                casts, inputs = [], []
                for v, is_half in zip(node.inputs, half):
                    if is_half:
                        cast = Node("Cast", [v], attributes={"to": int(DataType.FLOAT)})
                        casts.append(cast)
                        inputs.append(cast.output)
                    else:
                        inputs.append(v)
                outputs, backs = [], []
                for o in node.outputs:
                    if o.name and o.dtype is DataType.FLOAT16:
                        shape = o.type.shape if isinstance(o.type, TensorType) else None
                        wide = Value(None, TensorType(DataType.FLOAT, shape))
                        outputs.append(wide)
                        backs.append((o, Node("Cast", [wide], attributes={"to": int(DataType.FLOAT16)},
                                              outputs=[Value(None, o.type)])))
                    else:
                        outputs.append(Value(None, o.type) if o.name else Value(None))
                wide_node = Node(node.op_type, inputs, domain=node.domain,
                                 attributes=list(node.attributes.values()), name=node.name,
                                 outputs=outputs)
                g.insert_before(node, [*casts, wide_node, *(b for _, b in backs)])
                for old, new in zip(node.outputs, outputs):
                    replacement = next((b.output for o, b in backs if o is old), new)
                    if old.name:
                        g.replace_value(old, replacement)
                g.remove(node)
                widened += 1
        return PassResult(widened > 0, {"nodes-widened": widened})


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
                if node.op_type != "IsInf" or node.domain not in _ONNX_DOMAINS or not node.inputs:
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
class GuardBitShift(Pass):
    """``BitShift`` with the out-of-range shift amounts (negative, or at least the bit
    width) spelled out: ``Where(out_of_range, fill, BitShift(x, Where(out_of_range, 0, s)))``
    with ``fill`` 0 for LEFT and unsigned RIGHT, the sign (-1 or 0) for signed RIGHT.

    Legal always: it is what ONNX (opset 28's reference) defines for such shifts; TVM
    0.27 emits the machine shift, whose result for them is undefined. Shifts by a
    constant already in range are left alone.
    """

    name: ClassVar[str] = "guard-bitshift"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        import numpy as np

        guarded = 0
        for g in [model.graph, *model.graph.subgraphs()]:
            for node in list(g):
                if node.op_type != "BitShift" or node.domain not in _ONNX_DOMAINS or len(node.inputs) != 2:
                    continue
                x, amount = node.inputs
                if x is None or amount is None or x.dtype is None or amount.dtype is None \
                        or x.dtype is DataType.UNDEFINED or amount.dtype is DataType.UNDEFINED:
                    continue
                xt, st = np.dtype(DataType(x.dtype).to_numpy()), np.dtype(DataType(amount.dtype).to_numpy())
                width = xt.itemsize * 8
                if amount.is_constant():
                    values = amount.const.numpy()
                    if ((values >= 0) & (values < width)).all():
                        continue
                zero_s = g.make_constant(np.zeros((), st), "zero")
                width_s = g.make_constant(np.array(width, st), "width")
                below = Node("Less", [amount, zero_s])
                above = Node("GreaterOrEqual", [amount, width_s])
                out = Node("Or", [below.output, above.output])
                safe = Node("Where", [out.output, zero_s, amount])
                shift = Node("BitShift", [x, safe.output], attributes={"direction": node.attr("direction")},
                             name=node.name)
                nodes = [below, above, out, safe, shift]
                zero_x = g.make_constant(np.zeros((), xt), "zero")
                fill = zero_x
                direction = node.attr("direction")
                direction = direction.decode() if isinstance(direction, bytes) else direction
                if direction == "RIGHT" and xt.kind == "i":
                    negative = Node("Less", [x, zero_x])
                    sign = Node("Where", [negative.output, g.make_constant(np.array(-1, xt), "minus_one"),
                                          zero_x])
                    nodes += [negative, sign]
                    fill = sign.output
                result = Node("Where", [out.output, fill, shift.output], outputs=[Value(None, node.output.type)])
                nodes.append(result)
                g.insert_before(node, nodes)
                g.replace_value(node.output, result.output)
                g.remove(node)
                guarded += 1
        return PassResult(guarded > 0, {"bitshifts-guarded": guarded})


class _Chain:
    """Nodes built in order for a rewrite: ``chain.op("Add", a, b)`` returns the output."""

    def __init__(self, graph):
        self.graph = graph
        self.nodes: list[Node] = []

    def op(self, op_type: str, *inputs: Value, outputs: list[Value] | None = None, **attributes) -> Value:
        node = Node(op_type, list(inputs), attributes=attributes, outputs=outputs)
        self.nodes.append(node)
        return node.output

    def constant(self, value, dtype=None, name: str = "const") -> Value:
        import numpy as np

        if isinstance(dtype, str):  # constant(array, "name")
            dtype, name = None, dtype
        return self.graph.make_constant(np.array(value, dtype), name)


def _float_type(v: Value | None) -> DataType | None:
    if v is None or v.dtype not in (DataType.FLOAT16, DataType.FLOAT, DataType.DOUBLE):
        return None
    return v.dtype


# Where the series log1p(u) = u - u²/2 + u³/3 - u⁴/4 (u = exp(x)) takes over from
# log(1 + u), and above which softplus(x) is x: the series' truncation error (u⁴/5,
# relative) and log(1 + e^-x) / x stay below the type's rounding.
_SOFTPLUS_RANGE = {DataType.FLOAT: (-4.0, 20.0), DataType.DOUBLE: (-9.0, 40.0)}


@dataclass(frozen=True)
class StableSoftplus(Pass):
    """``Softplus(x)`` and ``Mish(x) = x·tanh(softplus(x))`` with softplus written so
    that it keeps its precision at both ends:
    ``Where(x > hi, x, Where(x < lo, u·(1 - u·(1/2 - u·(1/3 - u/4))), Log(1 + u)))``,
    ``u = Exp(x)`` (float16 computed in float32 and rounded once).

    TVM 0.27 computes ``log(exp(x) + 1)``: where ``exp(x)`` is small, ``1 + exp(x)``
    rounds off most of its digits (Mish(-9.98) comes out 1.3e-3 relative off), and
    where ``exp(x)`` overflows, softplus is infinite instead of ``x``. Legal always:
    each branch is softplus within the type's rounding where it is chosen.
    """

    name: ClassVar[str] = "stable-softplus"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        rewritten = 0
        for g in [model.graph, *model.graph.subgraphs()]:
            for node in list(g):
                if node.op_type not in ("Softplus", "Mish") or node.domain not in _ONNX_DOMAINS \
                        or not node.inputs:
                    continue
                dtype = _float_type(node.inputs[0])
                if dtype is None:
                    continue
                chain = _Chain(g)
                x = node.inputs[0]
                wide = DataType.FLOAT if dtype is DataType.FLOAT16 else dtype
                if wide is not dtype:
                    x = chain.op("Cast", x, to=int(wide))
                np_type = wide.to_numpy()
                lo, hi = _SOFTPLUS_RANGE[wide]
                u = chain.op("Exp", x)
                one = chain.constant(1, np_type, "one")
                # Horner: u·(1 - u·(1/2 - u·(1/3 - u·(1/4))))
                series = chain.constant(1 / 4, np_type, "c")
                for k in (3, 2, 1):
                    series = chain.op("Sub", chain.constant(1 / k, np_type, "c"), chain.op("Mul", u, series))
                series = chain.op("Mul", u, series)
                near = chain.op("Log", chain.op("Add", u, one))
                low = chain.op("Where", chain.op("Less", x, chain.constant(lo, np_type, "lo")), series, near)
                softplus = chain.op("Where", chain.op("Greater", x, chain.constant(hi, np_type, "hi")), x, low)
                result = softplus if node.op_type == "Softplus" else chain.op("Mul", x, chain.op("Tanh", softplus))
                if wide is not dtype:
                    result = chain.op("Cast", result, to=int(dtype))
                chain.nodes[-1].name = node.name
                g.insert_before(node, chain.nodes)
                result.type = node.output.type
                g.replace_value(node.output, result)
                g.remove(node)
                rewritten += 1
        return PassResult(rewritten > 0, {"softplus-rewritten": rewritten})


@dataclass(frozen=True)
class GuardFloatMod(Pass):
    """Float ``Mod(x, y)`` (``fmod=0``, the sign of y) with an infinite ``y`` spelled out:
    ``Where(isinf(y) ∧ finite(x), Where(x = 0 ∨ (x < 0) = (y < 0), x, y), Mod(x, y))``.

    TVM 0.27 computes ``x - floor(x / y)·y``, which is NaN for an infinite ``y``; ONNX
    (numpy's ``mod``) gives ``x`` when x and y have the same sign (or x is 0) and ``y``
    otherwise. Legal always: it is the definition; other elements keep TVM's Mod.
    """

    name: ClassVar[str] = "guard-float-mod"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        guarded = 0
        for g in [model.graph, *model.graph.subgraphs()]:
            for node in list(g):
                if node.op_type != "Mod" or node.domain not in _ONNX_DOMAINS or node.attr("fmod", 0) \
                        or len(node.inputs) != 2:
                    continue
                x, y = node.inputs
                dtype = _float_type(x)
                if dtype is None or _float_type(y) is not dtype:
                    continue
                chain = _Chain(g)
                zero = chain.constant(0, dtype.to_numpy(), "zero")
                x_finite = chain.op("Not", chain.op("Or", chain.op("IsInf", x), chain.op("IsNaN", x)))
                infinite_y = chain.op("And", chain.op("IsInf", y), x_finite)
                # Not Xor, not Equal: TVM compiles a boolean Equal to a float comparison.
                same_sign = chain.op("Not", chain.op("Xor", chain.op("Less", x, zero), chain.op("Less", y, zero)))
                keep_x = chain.op("Or", chain.op("Equal", x, zero), same_sign)
                at_infinity = chain.op("Where", keep_x, x, y)
                mod = chain.op("Mod", x, y, fmod=0)
                result = chain.op("Where", infinite_y, at_infinity, mod)
                chain.nodes[-1].name = node.name
                g.insert_before(node, chain.nodes)
                result.type = node.output.type
                g.replace_value(node.output, result)
                g.remove(node)
                guarded += 1
        return PassResult(guarded > 0, {"mods-guarded": guarded})


@dataclass(frozen=True)
class OmitEmptyResizeInputs(Pass):
    """``Resize(x, roi=[], scales=[], sizes)`` → ``Resize(x, "", "", sizes)``: a constant
    empty ``roi`` or ``scales`` becomes the absent input.

    Legal always: ONNX Resize defines an empty ``roi``/``scales`` as not given
    (Paddle2ONNX writes them so beside ``sizes``); TVM 0.27 counts the empty tensor as
    given and refuses "Only one of scales and sizes can be provided".
    """

    name: ClassVar[str] = "omit-empty-resize-inputs"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        omitted = 0
        for g in [model.graph, *model.graph.subgraphs()]:
            for node in g:
                if node.op_type != "Resize" or node.domain not in _ONNX_DOMAINS:
                    continue
                for index in (1, 2):
                    v = node.inputs[index] if index < len(node.inputs) else None
                    if v is not None and v.is_constant() and v.const.numpy().size == 0:
                        node.set_input(index, None)
                        omitted += 1
        return PassResult(omitted > 0, {"inputs-omitted": omitted})


# Each recurrent op: its gate count and its default activations (per direction).
_RECURRENT = {"LSTM": (4, ("Sigmoid", "Tanh", "Tanh")), "GRU": (3, ("Sigmoid", "Tanh")),
              "RNN": (1, ("Tanh",))}


@dataclass(frozen=True)
class UnrollRecurrent(Pass):
    """``LSTM``, ``GRU`` and ``RNN`` over a sequence of known length T → T steps of
    MatMul/Add/Sigmoid/Tanh/Mul per direction, as ONNX defines the cells, the input
    projection done once for the whole sequence (``G = X·Wᵀ + Wb``, plus ``Rb`` where
    the cell adds it unconditionally); Y, Y_h (and LSTM's Y_c) gathered by Concat.

    LSTM: ``g = G[t] + h·Rᵀ``; ``i, o, f = σ``, ``c̃ = tanh`` of its quarters;
    ``C = f·C + i·c̃``; ``h = o·tanh(C)``. GRU: ``z, r = σ(G[t] + h·Rᵀ)``;
    ``h̃ = tanh(G_h[t] + (r·h)·R_hᵀ + Rb_h)`` (or ``+ r·(h·R_hᵀ + Rb_h)`` with
    linear_before_reset); ``h = (1 - z)·h̃ + z·h``. RNN: ``h = tanh(G[t] + h·Rᵀ)``.

    TVM 0.27 has no converter for these (nor for Scan or Loop to write one with). Legal
    for ONNX's default cells: default activations, no clip, no input_forget, no
    peepholes, layout 0, no sequence_lens (or all equal to T), float32, T known, and the
    batch known where no initial state is given; the result is the same computation
    up to the rounding of the fused kernels. Other recurrent nodes are left as they are.
    """

    name: ClassVar[str] = "unroll-rnn"
    max_steps: int = field(default=512, metadata={
        "help": "the longest sequence unrolled (each step adds about 15 nodes a direction)"})

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        if (model.opset("") or 1) < 10:  # Slice takes its bounds as inputs from opset 10
            return PassResult(False, {"nodes-unrolled": 0})
        unrolled = 0
        for g in [model.graph, *model.graph.subgraphs()]:
            for node in list(g):
                if node.op_type in _RECURRENT and node.domain in _ONNX_DOMAINS and self._unroll(g, node):
                    unrolled += 1
        return PassResult(unrolled > 0, {"nodes-unrolled": unrolled})

    def _unroll(self, g, node: Node) -> bool:
        import numpy as np

        op = node.op_type
        gate_count, default_activations = _RECURRENT[op]
        inputs = list(node.inputs) + [None] * (8 - len(node.inputs))
        x, w, r, b, lengths, h0 = inputs[:6]
        c0 = inputs[6] if op == "LSTM" else None
        extra = inputs[7] if op == "LSTM" else inputs[6]  # LSTM's peepholes; nothing else
        if x is None or w is None or r is None or _float_type(x) is not DataType.FLOAT \
                or not isinstance(x.type, TensorType) or x.type.shape is None \
                or x.type.shape.dims is None or len(x.type.shape.dims) != 3:
            return False
        steps, batch = x.type.shape.dims[0], x.type.shape.dims[1]
        hidden = node.attr("hidden_size")
        if not isinstance(steps, int) or not 0 < steps <= self.max_steps or not isinstance(hidden, int):
            return False
        direction = node.attr("direction", "forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        directions = 2 if direction == "bidirectional" else 1
        activations = [a.decode() if isinstance(a, bytes) else a for a in node.attr("activations", []) or []]
        if activations and activations != list(default_activations) * directions:
            return False
        if node.attr("clip") is not None or node.attr("input_forget", 0) or node.attr("layout", 0) \
                or node.attr("activation_alpha") or node.attr("activation_beta") or extra is not None:
            return False
        if lengths is not None and (not lengths.is_constant() or not (lengths.const.numpy() == steps).all()):
            return False
        if (h0 is None or op == "LSTM" and c0 is None) and not isinstance(batch, int) \
                or not isinstance(x.type.shape.dims[2], int):
            return False
        linear_before_reset = op == "GRU" and bool(node.attr("linear_before_reset", 0))
        chain = _Chain(g)
        axis0 = chain.constant([0], np.int64, "axis0")
        last = chain.constant([-1], np.int64, "axis_last")

        def part(value: Value, start: int, stop: int, axes: Value) -> Value:
            return chain.op("Slice", value, chain.constant([start], np.int64, "start"),
                            chain.constant([stop], np.int64, "stop"), axes)

        def matrix(value: Value, d: int, rows: int, columns: int) -> Value:  # [D, rows, cols][d]ᵀ
            flat = chain.op("Reshape", part(value, d, d + 1, axis0),
                            chain.constant([rows, columns], np.int64, "shape"))
            return chain.op("Transpose", flat, perm=[1, 0])

        def state(initial: Value | None, d: int) -> Value:  # [1, B, H]
            if initial is not None:
                return part(initial, d, d + 1, axis0)
            return chain.constant(np.zeros((1, batch, hidden), np.float32), "zeros")

        gates = gate_count * hidden
        input_size = x.type.shape.dims[2]
        ys, hs, cs = [], [], []
        for d in range(directions):
            reverse = direction == "reverse" or d == 1
            weight = matrix(w, d, gates, input_size)
            recurrence = matrix(r, d, gates, hidden)
            projected = chain.op("MatMul", x, weight)  # [T, B, gates·H]
            hidden_bias = None  # GRU's Rb_h, added inside the reset gate's term
            if b is not None:
                biases = chain.op("Reshape", part(b, d, d + 1, axis0), chain.constant([2 * gates], np.int64, "shape"))
                input_bias, recurrent_bias = part(biases, 0, gates, axis0), part(biases, gates, 2 * gates, axis0)
                if op == "GRU":
                    input_bias = chain.op("Add", input_bias, chain.op("Concat", part(recurrent_bias, 0, 2 * hidden, axis0),
                                                                      chain.constant(np.zeros(hidden, np.float32), "zeros"),
                                                                      axis=0))
                    hidden_bias = part(recurrent_bias, 2 * hidden, gates, axis0)
                else:
                    input_bias = chain.op("Add", input_bias, recurrent_bias)
                projected = chain.op("Add", projected, input_bias)
            h = state(h0, d)
            c = state(c0, d) if op == "LSTM" else None
            outputs: list[Value | None] = [None] * steps
            for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
                step = part(projected, t, t + 1, axis0)  # [1, B, gates·H]
                if op == "LSTM":
                    pre = chain.op("Add", step, chain.op("MatMul", h, recurrence))
                    i, o, f, candidate = (part(pre, k * hidden, (k + 1) * hidden, last) for k in range(4))
                    i, o, f = (chain.op("Sigmoid", v) for v in (i, o, f))
                    c = chain.op("Add", chain.op("Mul", f, c), chain.op("Mul", i, chain.op("Tanh", candidate)))
                    h = chain.op("Mul", o, chain.op("Tanh", c))
                elif op == "RNN":
                    h = chain.op("Tanh", chain.op("Add", step, chain.op("MatMul", h, recurrence)))
                else:  # GRU
                    r_zr = part(recurrence, 0, 2 * hidden, last)
                    r_h = part(recurrence, 2 * hidden, gates, last)
                    zr = chain.op("Sigmoid", chain.op("Add", part(step, 0, 2 * hidden, last),
                                                      chain.op("MatMul", h, r_zr)))
                    z, reset = part(zr, 0, hidden, last), part(zr, hidden, 2 * hidden, last)
                    if linear_before_reset:
                        term = chain.op("MatMul", h, r_h)
                        if hidden_bias is not None:
                            term = chain.op("Add", term, hidden_bias)
                        term = chain.op("Mul", reset, term)
                    else:
                        term = chain.op("MatMul", chain.op("Mul", reset, h), r_h)
                        if hidden_bias is not None:
                            term = chain.op("Add", term, hidden_bias)
                    candidate = chain.op("Tanh", chain.op("Add", part(step, 2 * hidden, gates, last), term))
                    one = chain.constant(np.ones((), np.float32), "one")
                    h = chain.op("Add", chain.op("Mul", chain.op("Sub", one, z), candidate), chain.op("Mul", z, h))
                outputs[t] = h
            sequence = chain.op("Concat", *outputs, axis=0)  # [T, B, H]
            ys.append(chain.op("Reshape", sequence, chain.constant([steps, 1, -1, hidden], np.int64, "shape")))
            hs.append(h)
            cs.append(c)
        results = [chain.op("Concat", *ys, axis=1) if directions > 1 else ys[0],
                   chain.op("Concat", *hs, axis=0) if directions > 1 else hs[0]]
        if op == "LSTM":
            results.append(chain.op("Concat", *cs, axis=0) if directions > 1 else cs[0])
        g.insert_before(node, chain.nodes)
        for old, new in zip(node.outputs, results):
            if old.name and (old.has_uses() or old.is_graph_output()):
                new.type = old.type
                g.replace_value(old, new)
        g.remove(node, safe=False)
        return True


def _static_dims(v: Value | None) -> tuple[int, ...] | None:
    if v is None or not isinstance(v.type, TensorType) or v.type.shape is None or v.type.shape.dims is None:
        return None
    dims = tuple(v.type.shape.dims)
    return dims if all(isinstance(d, int) for d in dims) else None


def _constant(v: Value | None):
    return v.const.numpy() if v is not None and v.is_constant() else None


_REDUCTIONS = ("ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceProd", "ReduceMax",
               "ReduceMin", "ReduceLogSum", "ReduceLogSumExp", "ReduceMean")


@dataclass(frozen=True)
class FoldEmptyReductions(Pass):
    """A reduction over an axis of extent 0 → a constant of the output's shape holding the
    reduction's value over no elements: 0 (Sum, SumSquare, L1, L2), 1 (Prod), -inf
    (Max, LogSum, LogSumExp), +inf (Min), NaN (Mean); for integer types the type's
    lowest (Max) or highest (Min) value.

    Legal when the input's shape is known and the axes are constants: the output is
    then those values whatever the data (ONNX defines the empty reductions so); TVM
    0.27 returns whatever its loop leaves.
    """

    name: ClassVar[str] = "fold-empty-reductions"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        import numpy as np

        folded = 0
        for g in [model.graph, *model.graph.subgraphs()]:
            for node in list(g):
                if node.op_type not in _REDUCTIONS or node.domain not in _ONNX_DOMAINS or not node.inputs:
                    continue
                dims = _static_dims(node.inputs[0])
                if dims is None or 0 not in dims or node.output.dtype in (None, DataType.UNDEFINED):
                    continue
                opset = model.opset("") or 1
                axes_in_input = node.op_type == "ReduceSum" and opset >= 13 or opset >= 18
                if axes_in_input:
                    given = node.inputs[1] if len(node.inputs) > 1 else None
                    axes = _constant(given)
                    if given is not None and axes is None:
                        continue
                    axes = None if axes is None or axes.size == 0 else axes.tolist()
                    if axes is None and node.attr("noop_with_empty_axes", 0):
                        continue  # the identity, not a reduction
                else:
                    axes = node.attr("axes")
                axes = list(range(len(dims))) if axes is None else [a % len(dims) for a in axes]
                if all(dims[a] for a in axes):
                    continue
                keep = node.attr("keepdims", 1)
                shape = tuple(1 if i in axes else d for i, d in enumerate(dims) if keep or i not in axes)
                dtype = np.dtype(node.output.dtype.to_numpy())
                value = {"ReduceProd": 1, "ReduceMean": np.nan, "ReduceMax": -np.inf, "ReduceLogSum": -np.inf,
                         "ReduceLogSumExp": -np.inf, "ReduceMin": np.inf}.get(node.op_type, 0)
                if dtype.kind in "iu" and value in (np.inf, -np.inf):
                    value = np.iinfo(dtype).max if value > 0 else np.iinfo(dtype).min
                elif dtype.kind == "b":
                    value = node.op_type == "ReduceMin"
                elif dtype.kind not in "fiu" or isinstance(value, float) and np.isnan(value) and dtype.kind != "f":
                    continue
                constant = g.make_constant(np.full(shape, value, dtype), "empty_reduction")
                g.replace_value(node.output, constant)
                g.remove(node, safe=False)
                folded += 1
        return PassResult(folded > 0, {"reductions-folded": folded})


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
                if node.op_type != "LpNormalization" or node.domain not in _ONNX_DOMAINS or not node.inputs:
                    continue
                x, p, axis = node.inputs[0], node.attr("p", 2), node.attr("axis", -1)
                dtype = _float_type(x)
                if dtype is None or p not in (1, 2):
                    continue
                chain = _Chain(g)
                reduce = "ReduceL1" if p == 1 else "ReduceL2"
                if opset >= 18:
                    norm = chain.op(reduce, x, chain.constant([axis], np.int64, "axes"), keepdims=1)
                else:
                    norm = chain.op(reduce, x, axes=[axis], keepdims=1)
                zero = chain.constant(0, dtype.to_numpy(), "zero")
                result = chain.op("Where", chain.op("Equal", norm, zero), zero, chain.op("Div", x, norm))
                chain.nodes[-1].name = node.name
                g.insert_before(node, chain.nodes)
                result.type = node.output.type
                g.replace_value(node.output, result)
                g.remove(node)
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
                if node.op_type != "CumProd" or node.domain not in _ONNX_DOMAINS or len(node.inputs) != 2:
                    continue
                x, dims, axis = node.inputs[0], _static_dims(node.inputs[0]), _constant(node.inputs[1])
                if dims is None or axis is None or axis.size != 1 or not dims or x.dtype is None:
                    continue
                axis = int(axis.reshape(())) % len(dims)
                n = dims[axis]
                if not 0 < n <= self.max_extent:
                    continue
                chain = _Chain(g)
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
                chain.nodes[-1].name = node.name
                g.insert_before(node, chain.nodes)
                result.type = node.output.type
                g.replace_value(node.output, result)
                g.remove(node)
                unrolled += 1
        return PassResult(unrolled > 0, {"cumprods-unrolled": unrolled})


@dataclass(frozen=True)
class WidenIntegerPow(Pass):
    """``Pow`` that TVM 0.27 cannot build: an integer base (8 to 32 bits) is computed in
    float64 and cast back; an integer exponent of a float base is cast to the base's type.

    Legal: an integer power that fits the integer type is exact in float64 (53-bit
    significand, correctly rounded pow of exact operands); a float base raised to an
    integer exponent is that exponent converted to the float type (exact below 2^24,
    beyond which the power is 0, 1 or infinite anyway).
    """

    name: ClassVar[str] = "widen-integer-pow"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        widened = 0
        narrow_integers = (DataType.INT8, DataType.INT16, DataType.INT32, DataType.UINT8, DataType.UINT16,
                           DataType.UINT32)
        for g in [model.graph, *model.graph.subgraphs()]:
            for node in list(g):
                if node.op_type != "Pow" or node.domain not in _ONNX_DOMAINS or len(node.inputs) != 2:
                    continue
                base, exponent = node.inputs
                if base is None or exponent is None or exponent.dtype in (None, DataType.UNDEFINED):
                    continue
                chain = _Chain(g)
                if base.dtype in narrow_integers:
                    wide_base = chain.op("Cast", base, to=int(DataType.DOUBLE))
                    wide_exponent = chain.op("Cast", exponent, to=int(DataType.DOUBLE))
                    power = chain.op("Pow", wide_base, wide_exponent)
                    result = chain.op("Cast", power, to=int(base.dtype))
                elif _float_type(base) is not None and exponent.dtype is not base.dtype:
                    result = chain.op("Pow", base, chain.op("Cast", exponent, to=int(base.dtype)))
                else:
                    continue
                chain.nodes[-1].name = node.name
                g.insert_before(node, chain.nodes)
                result.type = node.output.type
                g.replace_value(node.output, result)
                g.remove(node)
                widened += 1
        return PassResult(widened > 0, {"pows-widened": widened})


@dataclass(frozen=True)
class ExpandResizeAxes(Pass):
    """``Resize`` with the ``axes`` attribute → the same Resize on every axis: ``scales``
    get 1 and ``sizes`` the input's extent on the other axes (``roi`` 0 and 1); with
    ``keep_aspect_ratio_policy``, ``sizes`` become the sizes the policy gives.

    Legal when the input's shape is known and scales/sizes/roi are constants (ONNX
    defines the other axes as unchanged), and for a policy only where the sizes it
    gives are exactly its scale times the input's (the interpolation uses that scale);
    TVM 0.27 reads scales and sizes as full-rank and ignores the policy.
    """

    name: ClassVar[str] = "expand-resize-axes"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        import numpy as np

        expanded = 0
        for g in [model.graph, *model.graph.subgraphs()]:
            for node in list(g):
                if node.op_type != "Resize" or node.domain not in _ONNX_DOMAINS or node.attr("axes") is None \
                        and node.attr("keep_aspect_ratio_policy", "stretch") in ("stretch", b"stretch"):
                    continue
                dims = _static_dims(node.inputs[0])
                policy = node.attr("keep_aspect_ratio_policy", "stretch")
                policy = policy.decode() if isinstance(policy, bytes) else policy
                if dims is None:
                    continue
                rank = len(dims)
                axes = [a % rank for a in (node.attr("axes") or range(rank))]
                inputs = list(node.inputs) + [None] * (4 - len(node.inputs))
                values = [_constant(v) if v is not None else None for v in inputs[1:4]]
                if any(v is None and given is not None for v, given in zip(values, inputs[1:4])):
                    continue
                roi, scales, sizes = values
                new = list(inputs)
                if roi is not None and roi.size:
                    full = np.concatenate([np.zeros(rank), np.ones(rank)]).astype(roi.dtype)
                    for i, a in enumerate(axes):
                        full[a], full[rank + a] = roi[i], roi[len(axes) + i]
                    new[1] = g.make_constant(full, "roi")
                if scales is not None and scales.size:
                    full = np.ones(rank, scales.dtype)
                    full[axes] = scales
                    new[2] = g.make_constant(full, "scales")
                if sizes is not None and sizes.size:
                    full = np.array(dims, sizes.dtype)
                    if policy != "stretch":
                        # One scale for every resized axis; the sizes it gives, rounded
                        # half up, are what the Resize means only where they are that
                        # scale exactly (the interpolation uses the scale).
                        ratios = [sizes[i] / dims[a] for i, a in enumerate(axes)]
                        scale = min(ratios) if policy == "not_larger" else max(ratios)
                        out = [int(scale * dims[a] + 0.5) for a in axes]
                        if any(o / dims[a] != scale for o, a in zip(out, axes)):
                            continue
                        full[axes] = out
                    else:
                        full[axes] = sizes
                    new[3] = g.make_constant(full, "sizes")
                elif policy != "stretch":
                    continue
                while new and new[-1] is None:
                    new.pop()
                node.set_inputs(new)
                node.attributes.pop("axes", None)
                node.attributes.pop("keep_aspect_ratio_policy", None)
                expanded += 1
        return PassResult(expanded > 0, {"resizes-expanded": expanded})


@dataclass(frozen=True)
class BindDims(Pass):
    """Give the graph inputs' symbolic leading dimension a fixed size (the batch).

    Legal when the artifact is only ever run at that batch: the spec's latency budget
    names it (``latency < 10ms at batch 4``), and ``edgec compile`` measures and ships
    the model at it. Other symbolic dimensions (sequence lengths) are left as they are.
    """

    name: ClassVar[str] = "bind-dims"
    batch: int = field(default=0, metadata={
        "help": "the size of the leading symbolic dimension; 0: the spec's batch (1 without a spec)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch < 0:
            raise OptionError("batch", f"must be >= 0 (0: the spec's batch), got {self.batch}")

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        batch = self.batch or _spec_batch(ctx) or 1
        bound = 0
        for v in model.graph.inputs:
            if v.is_initializer() or not isinstance(v.type, TensorType):
                continue
            shape = v.type.shape
            if shape is None or shape.dims is None or not shape.dims or isinstance(shape.dims[0], int):
                continue
            v.type = TensorType(v.type.dtype, Shape((batch, *shape.dims[1:]), shape.denotations))
            bound += 1
        return PassResult(bound > 0, {"inputs-bound": bound})


BOUND_BATCH_KEY = "edgec.legalize-tvm.bound-batch"


def _shape_reads_symbolic_input(model: Model) -> bool:
    """Whether binding the batch can help: a graph input has a symbolic leading
    dimension and the graph reads shapes (Shape, Size) that it could flow into."""
    symbolic = any(isinstance(v.type, TensorType) and v.type.shape is not None and v.type.shape.dims
                   and not isinstance(v.type.shape.dims[0], int)
                   for v in model.graph.inputs if not v.is_initializer())
    return symbolic and any(n.op_type in ("Shape", "Size") for n in model.graph)


def _spec_batch(ctx: PassContext) -> int | None:
    spec = ctx.spec
    latency = getattr(getattr(spec, "budget", None), "latency", None)
    batch = getattr(latency, "batch", None)
    return batch if isinstance(batch, int) and batch > 0 else None


@dataclass(frozen=True)
class LegalizeTVM(Pass):
    """Make a model importable by TVM's relax ONNX importer (see the module docstring).

    Every step is legal on its own (see each pass); the group changes no output beyond
    the rounding of the expanded function bodies.
    """

    name: ClassVar[str] = "legalize-tvm"
    bind_batch: bool = field(default=True, metadata={
        "help": "bind the inputs' symbolic batch dimension to the spec's batch, where the "
                "graph reads shapes (only with a spec; the module then takes that batch only)"})
    expand: tuple[str, ...] = field(default=DEFAULT_EXPANDED_OPS, metadata={
        "help": "the ops expand-functions expands"})
    max_iterations: int = field(default=4, metadata={
        "help": "rounds of infer-shapes, expand-functions, lower-castlike, fold-constants "
                "and dce at most"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_iterations < 1:
            raise OptionError("max-iterations", f"must be at least 1, got {self.max_iterations}")

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        from edgec.passes.dce import DeadCodeElimination
        from edgec.passes.fold_constants import FoldConstants
        from edgec.passes.infer_shapes import InferShapes

        stats: dict[str, int | float] = {}
        modified = False

        def step(p: Pass) -> bool:
            nonlocal model, modified
            result = p.run(model, ctx)
            if result.model is not None:
                model = result.model
            for key, value in result.stats.items():
                stats[f"{p.name}.{key}"] = stats.get(f"{p.name}.{key}", 0) + value
            modified |= result.modified
            return result.modified

        guarded_bitshifts = guarded_mods = False
        if self.bind_batch and ctx.spec is not None and _shape_reads_symbolic_input(model):
            if step(BindDims()):
                # The tvm backend records it: the module then takes that batch only, and
                # edgec runs it a batch at a time (BuildResult.batch).
                model.metadata_props[BOUND_BATCH_KEY] = str(_spec_batch(ctx) or 1)
        for _ in range(self.max_iterations):
            # Context-dependent function bodies need their inputs' types, and a body
            # may hold another op to expand (SoftmaxCrossEntropyLoss holds
            # NegativeLogLikelihoodLoss): infer, expand, and go round again.
            changed = step(InferShapes())
            changed |= step(WidenHalf())
            changed |= step(ExpandFunctions(ops=self.expand))
            changed |= step(LowerCastLike())
            changed |= step(LowerIsInf())
            if not guarded_bitshifts:  # once: its own output is a BitShift again
                guarded_bitshifts = step(GuardBitShift())
                changed |= guarded_bitshifts
            if not guarded_mods:  # once: its own output holds the Mod again
                guarded_mods = step(GuardFloatMod())
                changed |= guarded_mods
            changed |= step(StableSoftplus())
            changed |= step(OmitEmptyResizeInputs())
            changed |= step(UnrollRecurrent())
            changed |= step(FoldEmptyReductions())
            changed |= step(LowerLpNormalization())
            changed |= step(UnrollCumProd())
            changed |= step(WidenIntegerPow())
            changed |= step(ExpandResizeAxes())
            changed |= step(FoldConstants())
            changed |= step(MaxAtLowest())
            changed |= step(DeadCodeElimination())
            if not changed:
                break
        return PassResult(modified, stats, model=model)


__all__ = ["BindDims", "DEFAULT_EXPANDED_OPS", "ExpandFunctions", "ExpandResizeAxes", "FoldEmptyReductions",
           "GuardBitShift", "GuardFloatMod", "LowerLpNormalization", "UnrollCumProd", "WidenIntegerPow",
           "LegalizeTVM", "LowerCastLike", "LowerIsInf", "MaxAtLowest", "OmitEmptyResizeInputs",
           "StableSoftplus", "UnrollRecurrent", "WidenHalf"]
