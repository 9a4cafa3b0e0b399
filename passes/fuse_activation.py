"""GELU (erf and tanh forms), SiLU and HardSwish written in primitive ops, recognised as one op.

    x · 0.5 · (1 + erf(x / √2))                        -> Gelu(x)                      opset >= 20
    x · 0.5 · (1 + tanh(√(2/π) · (x + 0.044715 · x³)))  -> Gelu(x, approximate="tanh")  opset >= 20
    x · Sigmoid(x)                                     -> Swish(x)                     opset 24 (*)
    x · HardSigmoid(x, α=1/6, β=1/2)                   -> HardSwish(x)                 opset >= 14
    x · Clip(x + 3, 0, 6) / 6                          -> HardSwish(x)                 opset >= 14

The products may be written in any order and grouping the exporters use (Mul and
Add match both operand orders; ``/ c`` and ``· 1/c`` both match). Legal when: the
constants are scalars equal to the formula's within 1e-6 relative (1e-4 for the
rounded √(2/π) and 0.044715 the tanh form is usually written with), x is known
to be float32 (the one type onnxruntime's CPU kernels of all four ops take), and the model's default-domain opset has the op (the ``fuse`` pass can raise
it when asked). Every intermediate is read only inside the formula.
(*) onnxruntime 1.32 has a Swish kernel for opset 24 only, so silu fires only there.
"""

from __future__ import annotations

import math


from edgec.ir.core import Model
from edgec.ir.types import DataType
from edgec.rewrite import Builder, Const, Match, Op, Rule, Var, attribute, scalar_equal

def _mul(a, b, name=None) -> Op:
    return Op("Mul", a, b, commutative=True, name=name)


def _add(a, b) -> Op:
    return Op("Add", a, b, commutative=True)


def _scalar(name: str, value: float, tolerance: float = 1e-6) -> Const:
    return Const(name, scalar_equal(value, tolerance))


def _scaled_x(divisor: float, tolerance: float = 1e-6) -> list[Op]:
    """x / d and x · (1/d)."""
    return [Op("Div", Var("x"), _scalar("d", divisor, tolerance)),
            _mul(Var("x"), _scalar("d", 1.0 / divisor, tolerance))]


def _half_x_times(bracket: Op) -> list[Op]:
    """x · 0.5 · bracket in the three groupings exporters write."""
    half = _scalar("half", 0.5)
    return [_mul(_mul(Var("x"), bracket), half),
            _mul(_mul(Var("x"), half), bracket),
            _mul(Var("x"), _mul(bracket, half))]


def _erf_brackets() -> list[Op]:
    return [_add(Op("Erf", inner), _scalar("one", 1.0)) for inner in _scaled_x(math.sqrt(2.0))]


def _tanh_brackets() -> list[Op]:
    cube = [Op("Pow", Var("x"), _scalar("three", 3.0)), _mul(_mul(Var("x"), Var("x")), Var("x"))]
    out = []
    for x3 in cube:
        inner = _add(Var("x"), _mul(x3, _scalar("c", 0.044715, 1e-4)))
        out.append(_add(Op("Tanh", _mul(inner, _scalar("k", math.sqrt(2.0 / math.pi), 1e-4))),
                        _scalar("one", 1.0)))
    return out


# onnxruntime 1.32 registers its Swish kernel for opset 24 only: at 25 and later a
# model holding Swish does not load, so silu is not rewritten there.
SWISH_OPSETS = range(24, 25)


def needs_opset(version: int, last: int | None = None):
    def check(match: Match, model: Model) -> str | None:
        opset = model.opset("") or 0
        if opset < version:
            return f"the model's opset is below {version}"
        if last is not None and opset > last:
            return f"onnxruntime has no kernel for the op at opset {opset}"
        if match["x"].dtype is not DataType.FLOAT:
            return "x is not known to be float32"
        return None
    return check


def check_hard_sigmoid(match: Match, model: Model) -> str | None:
    reason = needs_opset(14)(match, model)
    if reason:
        return reason
    hs = match.nodes["hs"]
    alpha, beta = float(attribute(hs, "alpha", 0.2)), float(attribute(hs, "beta", 0.5))
    if abs(alpha - 1.0 / 6.0) > 1e-6 or abs(beta - 0.5) > 1e-6:
        return "HardSigmoid's alpha/beta are not 1/6 and 1/2"
    return None


def _gelu(approximate: str):
    def rewrite(match: Match, b: Builder):
        attrs = {} if approximate == "none" else {"approximate": approximate}
        return b.op("Gelu", [match["x"]], attrs)
    return rewrite


def _unary(op_type: str):
    def rewrite(match: Match, b: Builder):
        return b.op(op_type, [match["x"]])
    return rewrite


_CLIP = Op("Clip", _add(Var("x"), _scalar("three", 3.0)), _scalar("lo", 0.0), _scalar("hi", 6.0))
_HARD_SWISH_CLIP = [Op("Div", _mul(Var("x"), _CLIP), _scalar("six", 6.0)),
                    _mul(_mul(Var("x"), _CLIP), _scalar("six", 1.0 / 6.0)),
                    _mul(Var("x"), Op("Div", _CLIP, _scalar("six", 6.0))),
                    _mul(Var("x"), _mul(_CLIP, _scalar("six", 1.0 / 6.0)))]

RULES = [
    # x · 0.5 · (1 + erf(x/√2)) -> Gelu(x)
    *[Rule("gelu-erf", p, needs_opset(20), _gelu("none")) for b in _erf_brackets() for p in _half_x_times(b)],
    # x · 0.5 · (1 + tanh(√(2/π)(x + 0.044715x³))) -> Gelu(x, tanh)
    *[Rule("gelu-tanh", p, needs_opset(20), _gelu("tanh")) for b in _tanh_brackets() for p in _half_x_times(b)],
    # x · σ(x) -> Swish(x)
    Rule("silu", _mul(Var("x"), Op("Sigmoid", Var("x"))), needs_opset(SWISH_OPSETS.start, SWISH_OPSETS.stop - 1), _unary("Swish")),
    # x · HardSigmoid(x; 1/6, 1/2) -> HardSwish(x)
    Rule("hardswish", _mul(Var("x"), Op("HardSigmoid", Var("x"), name="hs")), check_hard_sigmoid,
         _unary("HardSwish")),
    # x · Clip(x + 3, 0, 6) / 6 -> HardSwish(x)
    *[Rule("hardswish", p, needs_opset(14), _unary("HardSwish")) for p in _HARD_SWISH_CLIP],
]
