"""Softmax written in primitive ops (as jax2tf, tf2onnx and hand-written exporters emit
it), recognised as one Softmax.

    e = Exp(x - ReduceMax(x, [a]));  e / ReduceSum(e, [a])      -> Softmax(x, axis=a)
    the same with Identity(ReduceMax(x, [a]))  (jax's stop_gradient on the max)

onnxruntime runs the five (or six) nodes as five kernels and does not fuse them; one
Softmax kernel saves the per-node cost that dominates small models (jax2tf-cnn: 0.92x
measured side by side). Legal when: both reductions are over the same single axis
(after normalising a negative one, which needs the rank), keep their dims (keepdims 1),
the subtracted max is x's own (the stable form: the unstable ``Exp(x) / ReduceSum``
overflows where Softmax does not, so it is left alone), x is known to be float32, and
the Softmax of the model's opset means the same: from opset 13 it is per axis; before
13 it flattens from ``axis`` on, which is the same only for the last axis. Every
intermediate is read only inside the formula (the driver checks it). Outputs agree with
the decomposed form to rounding (tests: 1e-6).
"""

from __future__ import annotations

from edgec.ir.core import Model
from edgec.ir.types import DataType
from edgec.rewrite import Builder, Match, Op, Rule, Var, attribute, axes_operand, rank_of


def _reduced_axis(node, rank: int | None) -> int | str:
    """The one axis ``node`` reduces over keeping dims, normalised; else why not."""
    if attribute(node, "keepdims", 1) != 1:
        return f"{node.op_type} drops the reduced axis"
    axes = axes_operand(node)
    if axes is None or len(axes) != 1:
        return f"{node.op_type} is not over one known axis"
    axis = axes[0]
    if axis < 0:
        if rank is None:
            return "the rank of x is unknown"
        axis += rank
    return axis


def check_softmax(match: Match, model: Model) -> str | None:
    x = match["x"]
    if x.dtype is not DataType.FLOAT:
        return "x is not known to be float32"
    if match["e"] is not match.nodes["exp"].outputs[0]:
        return "the sum is not of the exponentials divided"
    rank = rank_of(x)
    axes = [_reduced_axis(match.nodes[n], rank) for n in ("max", "sum")]
    for axis in axes:
        if isinstance(axis, str):
            return axis
    if axes[0] != axes[1]:
        return "the max and the sum reduce different axes"
    if (model.opset("") or 0) < 13 and (rank is None or axes[0] != rank - 1):
        return "before opset 13 Softmax flattens from its axis: only the last axis is the same"
    return None


def rewrite_softmax(match: Match, b: Builder):
    axis = _reduced_axis(match.nodes["max"], rank_of(match["x"]))
    return b.op("Softmax", [match["x"]], {"axis": axis})


def _pattern(stop_gradient: bool) -> Op:
    largest = Op("ReduceMax", Var("x"), name="max", extra_inputs=True)
    if stop_gradient:
        largest = Op("Identity", largest)
    exp = Op("Exp", Op("Sub", Var("x"), largest), name="exp")
    return Op("Div", exp, Op("ReduceSum", Var("e"), name="sum", extra_inputs=True))


RULES = [
    # Exp(x - max(x)) / Σ Exp(x - max(x)) -> Softmax(x)
    Rule("softmax", _pattern(stop_gradient=False), check_softmax, rewrite_softmax),
    # the same, the max behind jax's stop_gradient (an Identity)
    Rule("softmax", _pattern(stop_gradient=True), check_softmax, rewrite_softmax),
]
