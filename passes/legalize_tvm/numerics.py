"""Ops that TVM 0.27 imports but computes with other numerics than ONNX defines:
``widen-half`` (float16 accumulation), ``stable-softplus`` (cancellation),
``guard-float-mod`` and ``guard-bitshift`` (results at infinite or out-of-range
operands), ``widen-integer-pow`` (integer powers it cannot build) and ``max-at-lowest``
(a max-reduction that starts at the lowest finite value)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from edgec.ir.core import Model, Node, Value
from edgec.ir.types import DataType, TensorType
from edgec.passmgr.base import Pass, PassContext, PassResult

from .common import ONNX_DOMAINS, Chain, float_type


# Ops that, computed in float32 on float16-representable operands and rounded to float16,
# give the float16 result bit for bit (float32 has more than 2·11 + 2 significand bits,
# so one float32 rounding then one float16 rounding is the float16 rounding of
# +, -, ·, / and data movement); Cast stands for a float16-to-float16 Cast only.
_EXACT_WHEN_WIDE = ("Add", "Sub", "Mul", "Div", "Neg", "Where", "Identity", "Cast", "Reshape",
                    "Transpose", "Squeeze", "Unsqueeze", "Flatten")


def _half_inputs(node: Node) -> list[bool] | None:
    """Which of ``node``'s inputs are float16; None where one input's type is unknown."""
    if any(v is not None and (v.dtype is None or v.dtype is DataType.UNDEFINED) for v in node.inputs):
        return None
    return [v is not None and v.dtype is DataType.FLOAT16 for v in node.inputs]


@dataclass(frozen=True)
class WidenHalf(Pass):
    """Compute float16 ``MatMul``, ``Attention``, ``Softmax``, ``Conv``, ``ConvTranspose``
    and ``Gemm`` in float32: their float16 inputs are cast to float32 and their float16
    outputs cast back. Where float16 values pass from one such op to another through
    ``carry`` ops only (Add, Mul, Where, a float16-to-float16 Cast, Reshape, Transpose, ...:
    the Softmax -> Cast -> Where -> MatMul of an expanded Attention), those ops are
    computed in float32 too and the values between them stay float32: the chain rounds to
    float16 once, where its result leaves it.

    TVM 0.27 accumulates a float16 MatMul or Conv (and the MatMuls and Softmax of an
    expanded Attention) in float16; onnxruntime's CPU kernels and the ONNX reference
    accumulate in float32 and round once, which this rewrite spells out. onnxruntime's CPU
    provider also runs float16 nodes it has no float16 kernel for in float32 (its
    insert-cast transformer) and drops the float32 -> float16 -> float32 casts between
    them. Legal always: each widened op alone is the float16 rounding of a more precise
    result (``carry`` ops alone are bit-identical: float32 has more than twice float16's
    significand bits); a chain kept wide skips the float16 rounding of values inside it,
    so its result is closer to the exact one than the graph as written, by at most those
    roundings. Non-float16 inputs (boolean masks) are left as they are.
    """

    name: ClassVar[str] = "widen-half"
    ops: tuple[str, ...] = field(default=("MatMul", "Attention", "Softmax", "Conv", "ConvTranspose",
                                          "Gemm"), metadata={
        "help": "the op types computed in float32"})
    carry: tuple[str, ...] = field(default=_EXACT_WHEN_WIDE, metadata={
        "help": "op types computed in float32 where they pass float16 values between two of ops"})

    def _candidate(self, node: Node, types: tuple[str, ...]) -> bool:
        if node.op_type not in types or node.domain not in ONNX_DOMAINS:
            return False
        half = _half_inputs(node)
        if half is None or not any(half):
            return False
        if types is self.carry:
            # Every output float16 (Cast: only float16 to float16).
            return all(o.dtype is DataType.FLOAT16 for o in node.outputs) and (
                node.op_type != "Cast" or node.attr("to") == int(DataType.FLOAT16))
        return True

    def _chains(self, g, core: list[Node]) -> set[Node]:
        """The ``carry`` nodes on a path of carry nodes from one core node to another."""
        core_set = set(core)
        carry = {n for n in g if n not in core_set and self._candidate(n, self.carry)}

        def reach(start: list[Node], step) -> set[Node]:
            seen: set[Node] = set()
            todo = [m for n in start for m in step(n) if m in carry]
            while todo:
                n = todo.pop()
                if n not in seen:
                    seen.add(n)
                    todo += [m for m in step(n) if m in carry]
            return seen

        def consumers(n: Node) -> list[Node]:
            return [c for o in n.outputs if o.dtype is DataType.FLOAT16 for c in o.consumers()]

        def producers(n: Node) -> list[Node]:
            return [v.producer() for v in n.inputs
                    if v is not None and v.dtype is DataType.FLOAT16 and v.producer() is not None]

        return reach(core, consumers) & reach(core, producers)

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        widened = kept_wide = 0
        for g in [model.graph, *model.graph.subgraphs()]:
            core = [n for n in g if self._candidate(n, self.ops)]
            if not core:
                continue
            chain = self._chains(g, core)
            widen = set(core) | chain
            wide_of: dict[Value, Value] = {}  # a cast-back float16 value -> its float32 value
            backs: list[Node] = []
            for node in list(g):
                if node not in widen:
                    continue
                casts, inputs = [], []
                for v, is_half in zip(node.inputs, _half_inputs(node)):
                    if is_half and v in wide_of:
                        inputs.append(wide_of[v])
                        kept_wide += 1
                    elif is_half:
                        cast = Node("Cast", [v], attributes={"to": int(DataType.FLOAT)})
                        casts.append(cast)
                        inputs.append(cast.output)
                    else:
                        inputs.append(v)
                outputs, node_backs = [], []
                for o in node.outputs:
                    if o.name and o.dtype is DataType.FLOAT16:
                        shape = o.type.shape if isinstance(o.type, TensorType) else None
                        wide = Value(None, TensorType(DataType.FLOAT, shape))
                        outputs.append(wide)
                        node_backs.append((o, Node("Cast", [wide], attributes={"to": int(DataType.FLOAT16)},
                                                   outputs=[Value(None, o.type)])))
                    else:
                        outputs.append(Value(None, o.type) if o.name else Value(None))
                wide_node = Node(node.op_type, inputs, domain=node.domain,
                                 attributes=list(node.attributes.values()), name=node.name, outputs=outputs)
                if node.op_type == "Cast":  # float16 to float16: float32 to float32 now
                    wide_node.set_attr("to", int(DataType.FLOAT))
                g.insert_before(node, [*casts, wide_node, *(b for _, b in node_backs)])
                for old, new in zip(node.outputs, outputs):
                    back = next((b for o, b in node_backs if o is old), None)
                    if back is not None:
                        wide_of[back.output] = new
                        backs.append(back)
                    if old.name:
                        g.replace_value(old, back.output if back is not None else new)
                g.remove(node)
                widened += 1
            for back in backs:  # read only inside a chain: not needed
                if not back.output.has_uses() and not back.output.is_returned():
                    g.remove(back)
        return PassResult(widened > 0, {"nodes-widened": widened, "values-kept-wide": kept_wide})


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
                if node.op_type not in ("Softplus", "Mish") or node.domain not in ONNX_DOMAINS \
                        or not node.inputs:
                    continue
                dtype = float_type(node.inputs[0])
                if dtype is None:
                    continue
                chain = Chain(g)
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
                chain.replace(node, result)
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
                if node.op_type != "Mod" or node.domain not in ONNX_DOMAINS or node.attr("fmod", 0) \
                        or len(node.inputs) != 2:
                    continue
                x, y = node.inputs
                dtype = float_type(x)
                if dtype is None or float_type(y) is not dtype:
                    continue
                chain = Chain(g)
                zero = chain.constant(0, dtype.to_numpy(), "zero")
                x_finite = chain.op("Not", chain.op("Or", chain.op("IsInf", x), chain.op("IsNaN", x)))
                infinite_y = chain.op("And", chain.op("IsInf", y), x_finite)
                # Not Xor, not Equal: TVM compiles a boolean Equal to a float comparison.
                same_sign = chain.op("Not", chain.op("Xor", chain.op("Less", x, zero), chain.op("Less", y, zero)))
                keep_x = chain.op("Or", chain.op("Equal", x, zero), same_sign)
                at_infinity = chain.op("Where", keep_x, x, y)
                mod = chain.op("Mod", x, y, fmod=0)
                result = chain.op("Where", infinite_y, at_infinity, mod)
                chain.replace(node, result)
                guarded += 1
        return PassResult(guarded > 0, {"mods-guarded": guarded})


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
                if node.op_type != "Pow" or node.domain not in ONNX_DOMAINS or len(node.inputs) != 2:
                    continue
                base, exponent = node.inputs
                if base is None or exponent is None or exponent.dtype in (None, DataType.UNDEFINED):
                    continue
                chain = Chain(g)
                if base.dtype in narrow_integers:
                    wide_base = chain.op("Cast", base, to=int(DataType.DOUBLE))
                    wide_exponent = chain.op("Cast", exponent, to=int(DataType.DOUBLE))
                    power = chain.op("Pow", wide_base, wide_exponent)
                    result = chain.op("Cast", power, to=int(base.dtype))
                elif float_type(base) is not None and exponent.dtype is not base.dtype:
                    result = chain.op("Pow", base, chain.op("Cast", exponent, to=int(base.dtype)))
                else:
                    continue
                chain.replace(node, result)
                widened += 1
        return PassResult(widened > 0, {"pows-widened": widened})


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
                if node.op_type != "Equal" or node.domain not in ONNX_DOMAINS or len(node.inputs) != 2:
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
                if node.op_type != "BitShift" or node.domain not in ONNX_DOMAINS or len(node.inputs) != 2:
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
