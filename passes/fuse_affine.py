"""Per-channel Mul/Add by constants folded into Conv and Gemm, and MatMul + Add -> Gemm.

    Mul(Conv(x, W, b), s)   -> Conv(x, W·s, b·s)      s: scalar or per output channel
    Add(Conv(x, W, b), c)   -> Conv(x, W, b + c)      c: scalar or per output channel
    Mul(Gemm(A, B, C), s)   -> Gemm(A, B·s, C·s)      s: scalar or per column [1, N]
    Add(Gemm(A, B, C), c)   -> Gemm(A, B, β·C + c, β=1)   c: scalar or per column [1, N]
    Add(MatMul(A, B), c)    -> Gemm(A, B, c)          A and B 2-D, c scalar or [1, N]

Legal when: the weights and the Mul/Add operand are constants of the weight's
floating dtype; the operand, right-aligned against the producer's output, has size 1
on every axis except the channel axis (axis 1 for Conv, N for Gemm), where it has
size 1 or C, and its rank is at most the output's, so broadcasting neither changes
the output's shape nor mixes channels; Conv and Gemm biases are constants. MatMul + Add
needs A's rank known to be 2 (Gemm is 2-D only) and opset >= 11 (optional C).
"""

from __future__ import annotations

import numpy as np

from edgec.ir.core import Model
from edgec.rewrite import (Builder, Const, Match, Op, Rule, Var, attribute, constant_array,
                           rank_of)


def channel_vector(operand: np.ndarray, out_rank: int, axis: int, channels: int) -> np.ndarray | None:
    """``operand`` as a [channels] vector when it broadcasts against an output of rank
    ``out_rank`` along ``axis`` only; None when it would mix or add axes."""
    if operand.ndim > out_rank:
        return None
    shape = (1,) * (out_rank - operand.ndim) + operand.shape
    if any(d != 1 for i, d in enumerate(shape) if i != axis) or shape[axis] not in (1, channels):
        return None
    return np.broadcast_to(operand.reshape(-1), (channels,)).astype(np.float64)


def _conv_operand(match: Match) -> tuple[np.ndarray, np.ndarray, np.ndarray] | str:
    """(W, b, per-channel operand) of a Conv followed by Mul/Add, or the reason not."""
    w = match.constants["W"]
    if w.dtype.kind != "f" or w.ndim < 3:
        return "the Conv weight is not a floating tensor of rank >= 3"
    if match.constants["k"].dtype != w.dtype:
        return "the operand's dtype differs from the weight's"
    b = constant_array(match.values.get("b"))
    if match.values.get("b") is not None and (b is None or b.shape != (w.shape[0],)):
        return "the Conv bias is not a constant of shape [C]"
    vector = channel_vector(match.constants["k"], w.ndim, 1, w.shape[0])
    if vector is None:
        return "the operand does not broadcast along the output channels only"
    bias = np.zeros(w.shape[0]) if b is None else b.astype(np.float64)
    return w, bias, vector


def check_conv(match: Match, model: Model) -> str | None:
    found = _conv_operand(match)
    return found if isinstance(found, str) else None


def rewrite_conv_mul(match: Match, b: Builder):
    w, bias, s = _conv_operand(match)  # type: ignore[misc]
    conv = match.nodes["conv"]
    new_w = b.constant((w.astype(np.float64) * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype),
                       f"{match['W'].name}_scaled")
    new_b = b.constant((bias * s).astype(w.dtype), f"{conv.name or 'conv'}.bias_scaled")
    return b.op("Conv", [match["x"], new_w, new_b], dict(conv.attributes))


def rewrite_conv_add(match: Match, b: Builder):
    w, bias, c = _conv_operand(match)  # type: ignore[misc]
    conv = match.nodes["conv"]
    new_b = b.constant((bias + c).astype(w.dtype), f"{conv.name or 'conv'}.bias_shifted")
    return b.op("Conv", [match["x"], match["W"], new_b], dict(conv.attributes))


def _gemm_operand(match: Match) -> tuple[np.ndarray, np.ndarray, int] | str:
    """(B, per-column operand, N) of a Gemm followed by Mul/Add, or the reason not."""
    gemm = match.nodes["gemm"]
    w = match.constants["B"]
    if w.dtype.kind != "f" or w.ndim != 2:
        return "the Gemm weight is not a 2-D floating tensor"
    if match.constants["k"].dtype != w.dtype:
        return "the operand's dtype differs from the weight's"
    n = w.shape[0] if attribute(gemm, "transB", 0) else w.shape[1]
    c = match.values.get("C")
    if c is not None:
        array = constant_array(c)
        if array is None:
            return "the Gemm bias is not constant"
        if array.ndim > 2 or (array.ndim >= 1 and array.shape[-1] not in (1, n)):
            return "the Gemm bias does not broadcast along N"
    vector = channel_vector(match.constants["k"], 2, 1, n)
    if vector is None:
        return "the operand does not broadcast along Gemm's columns only"
    return w, vector, n


def check_gemm(match: Match, model: Model) -> str | None:
    found = _gemm_operand(match)
    return found if isinstance(found, str) else None


def rewrite_gemm_mul(match: Match, b: Builder):
    w, s, n = _gemm_operand(match)  # type: ignore[misc]
    gemm = match.nodes["gemm"]
    scale = s.reshape(-1, 1) if attribute(gemm, "transB", 0) else s.reshape(1, -1)
    inputs = [match["A"], b.constant((w.astype(np.float64) * scale).astype(w.dtype),
                                     f"{match['B'].name}_scaled")]
    c = constant_array(match.values.get("C"))
    if c is not None:
        inputs.append(b.constant((c.astype(np.float64) * s).astype(w.dtype),
                                 f"{gemm.name or 'gemm'}.bias_scaled"))
    return b.op("Gemm", inputs, dict(gemm.attributes))


def rewrite_gemm_add(match: Match, b: Builder):
    w, c_add, n = _gemm_operand(match)  # type: ignore[misc]
    gemm = match.nodes["gemm"]
    beta = float(attribute(gemm, "beta", 1.0))
    c = constant_array(match.values.get("C"))
    c = np.zeros(n) if c is None else beta * c.astype(np.float64)
    new_c = b.constant((c + c_add).astype(w.dtype), f"{gemm.name or 'gemm'}.bias_shifted")
    attrs = dict(gemm.attributes)
    attrs["beta"] = 1.0
    return b.op("Gemm", [match["A"], match["B"], new_c], attrs)


def check_matmul_add(match: Match, model: Model) -> str | None:
    if (model.opset("") or 0) < 11:
        return "Gemm's optional C needs opset >= 11"
    if rank_of(match["A"]) != 2:
        return "A is not known to be 2-D"
    w = match.constants["B"]
    if w.dtype not in (np.float32, np.float64, np.float16) or w.ndim != 2:
        return "B is not a 2-D float tensor"
    if match.constants["k"].dtype != w.dtype:
        return "the operand's dtype differs from B's"
    if channel_vector(match.constants["k"], 2, 1, w.shape[1]) is None:
        return "the operand does not broadcast along the columns only"
    return None


def rewrite_matmul_add(match: Match, b: Builder):
    w = match.constants["B"]
    c = channel_vector(match.constants["k"], 2, 1, w.shape[1])
    bias = b.constant(c.astype(w.dtype), f"{match['B'].name}_bias")  # type: ignore[union-attr]
    return b.op("Gemm", [match["A"], match["B"], bias])


CONV = Op("Conv", Var("x"), Const("W"), Var("b", optional=True), name="conv")
GEMM = Op("Gemm", Var("A"), Const("B"), Var("C", optional=True), name="gemm")

RULES = [
    Rule("conv-mul", Op("Mul", CONV, Const("k"), commutative=True), check_conv, rewrite_conv_mul),  # Conv·s -> Conv(W·s)
    Rule("conv-add", Op("Add", CONV, Const("k"), commutative=True), check_conv, rewrite_conv_add),  # Conv+c -> Conv(b+c)
    Rule("gemm-mul", Op("Mul", GEMM, Const("k"), commutative=True), check_gemm, rewrite_gemm_mul),  # Gemm·s -> Gemm(B·s)
    Rule("gemm-add", Op("Add", GEMM, Const("k"), commutative=True), check_gemm, rewrite_gemm_add),  # Gemm+c -> Gemm(C+c)
    Rule("matmul-add", Op("Add", Op("MatMul", Var("A"), Const("B")), Const("k"), commutative=True),
         check_matmul_add, rewrite_matmul_add),  # A·B + c -> Gemm(A, B, c)
]
