"""LayerNormalization written in primitive ops, recognised as the one op (opset >= 17).

    d = x - ReduceMean(x, axes)
    y = d / Sqrt(ReduceMean(d ^ 2, axes) + eps) · γ + β   -> LayerNormalization(x, γ, β, axis, eps)

(also without ``+ β``, and without ``· γ + β``). Legal when: both ReduceMeans keep
dims and reduce the same trailing, contiguous axes (``axis`` is the first of them);
the exponent is the constant 2 and eps a positive constant scalar; γ and β are
constants whose shape, with leading 1s dropped, is the normalised shape (which must
be static) — a γ that broadcast across the leading axes would not be a LayerNorm
parameter; x is float32 or float64 (LayerNormalization computes in float32 at least,
which would change float16 results); the opset is >= 17. ReduceMean's axes are an
attribute before opset 18 and an input from 18 on; both are read.
"""

from __future__ import annotations

import numpy as np

from edgec.ir.core import Model
from edgec.ir.types import DataType
from edgec.rewrite import (Builder, Const, Match, Op, Rule, Var, attribute, axes_operand,
                           rank_of, scalar_equal, static_shape)


def _normalized(match: Match) -> tuple[int, tuple[int, ...]] | str:
    """(axis, normalised shape) or the reason the pattern is not a LayerNorm."""
    first, second = match.nodes["mean"], match.nodes["var"]
    for node in (first, second):
        if attribute(node, "keepdims", 1) != 1:
            return "a ReduceMean drops dims"
        if attribute(node, "noop_with_empty_axes", 0):
            return "a ReduceMean has noop_with_empty_axes"
    a, b = axes_operand(first), axes_operand(second)
    if not a or not b:
        return "ReduceMean axes are not constant"
    shape = static_shape(match["x"])
    rank = rank_of(match["x"])
    if rank is None:
        return "x's rank is unknown"
    a = sorted(x + rank if x < 0 else x for x in a)
    b = sorted(x + rank if x < 0 else x for x in b)
    if a != b:
        return "the two ReduceMeans reduce different axes"
    if a != list(range(rank - len(a), rank)):
        return "the reduced axes are not the trailing ones"
    x_shape = match["x"].shape
    dims = x_shape.dims[a[0]:] if x_shape is not None and x_shape.dims is not None else None
    if dims is None or not all(isinstance(d, int) for d in dims):
        return "the normalised shape is not static"
    del shape
    return a[0], tuple(int(d) for d in dims)  # type: ignore[arg-type]


def _parameter(match: Match, name: str, normalized: tuple[int, ...]) -> np.ndarray | None | str:
    if name not in match.constants:
        return None
    array = match.constants[name]
    shape = list(array.shape)
    while shape and shape[0] == 1 and len(shape) > len(normalized):
        shape.pop(0)
    if tuple(shape) != normalized:
        return f"{name} does not have the normalised shape"
    return array.reshape(normalized)


def check_layer_norm(match: Match, model: Model) -> str | None:
    if (model.opset("") or 0) < 17:
        return "the model's opset is below 17"
    if match["x"].dtype not in (DataType.FLOAT, DataType.DOUBLE):
        return "x is not float32 or float64"
    found = _normalized(match)
    if isinstance(found, str):
        return found
    eps = match.constants["eps"]
    if eps.size != 1 or not float(eps.reshape(())) > 0:
        return "eps is not a positive scalar"
    for name in ("gamma", "beta"):
        p = _parameter(match, name, found[1])
        if isinstance(p, str):
            return p
        if p is not None and p.dtype != match["x"].dtype.to_numpy():
            return f"{name}'s dtype differs from x's"
    return None


def rewrite_layer_norm(match: Match, b: Builder):
    axis, normalized = _normalized(match)  # type: ignore[misc]
    dtype = match["x"].dtype.to_numpy()
    gamma = _parameter(match, "gamma", normalized)
    beta = _parameter(match, "beta", normalized)
    name = match.root.name or "layer_norm"
    inputs = [match["x"], b.constant(np.ones(normalized, dtype) if gamma is None else gamma, f"{name}.scale")]
    if beta is not None:
        inputs.append(b.constant(beta, f"{name}.bias"))
    eps = float(match.constants["eps"].reshape(()))
    return b.op("LayerNormalization", inputs, {"axis": axis, "epsilon": eps})


def _normalize() -> Op:
    d = Op("Sub", Var("x"), Op("ReduceMean", Var("x"), name="mean", extra_inputs=True))
    variance = Op("ReduceMean", Op("Pow", d, Const("two", scalar_equal(2.0, 0.0))), name="var",
                  extra_inputs=True)
    return Op("Div", d, Op("Sqrt", Op("Add", variance, Const("eps"), commutative=True)))


RULES = [
    # (x - mean) / sqrt(var + eps) · γ + β -> LayerNormalization(x, γ, β)
    Rule("layer-norm", Op("Add", Op("Mul", _normalize(), Const("gamma"), commutative=True), Const("beta"),
                          commutative=True), check_layer_norm, rewrite_layer_norm),
    # (x - mean) / sqrt(var + eps) · γ -> LayerNormalization(x, γ)
    Rule("layer-norm", Op("Mul", _normalize(), Const("gamma"), commutative=True), check_layer_norm,
         rewrite_layer_norm),
    # (x - mean) / sqrt(var + eps) -> LayerNormalization(x, 1)
    Rule("layer-norm", _normalize(), check_layer_norm, rewrite_layer_norm),
]
