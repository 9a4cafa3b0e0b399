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
   ``widen-half`` (float16 MatMul, Attention, Softmax computed in float32, as onnxruntime does);
   ``expand-functions`` (ops TVM lacks become their ONNX function bodies);
   ``lower-castlike`` (``CastLike(x, like)`` → ``Cast(x, to=dtype(like))``);
   ``lower-isinf`` (IsInf's detect_negative/detect_positive, which TVM ignores);
   ``guard-bitshift`` (once: out-of-range shift amounts as ONNX defines them);
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
    "Swish",
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
    """Compute float16 ``MatMul``, ``Attention`` and ``Softmax`` in float32: their float16
    inputs are cast to float32 and their float16 outputs cast back.

    TVM 0.27 accumulates a float16 MatMul (and the MatMuls and Softmax of an expanded
    Attention) in float16; onnxruntime's CPU kernels and the ONNX reference accumulate
    in float32 and round once, which this rewrite spells out. Legal always: each output
    is the float16 rounding of a more precise result; only the error of float16
    intermediates goes away. Non-float16 inputs (boolean masks) are left as they are.
    """

    name: ClassVar[str] = "widen-half"
    ops: tuple[str, ...] = field(default=("MatMul", "Attention", "Softmax"), metadata={
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

        guarded_bitshifts = False
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
            changed |= step(FoldConstants())
            changed |= step(MaxAtLowest())
            changed |= step(DeadCodeElimination())
            if not changed:
                break
        return PassResult(modified, stats, model=model)


__all__ = ["BindDims", "DEFAULT_EXPANDED_OPS", "ExpandFunctions", "LegalizeTVM", "LowerCastLike",
           "GuardBitShift", "LowerIsInf", "MaxAtLowest", "WidenHalf"]
