"""BatchNormalization folded into the Conv, ConvTranspose or Gemm that feeds it.

    Conv(x, W, b) ∘ BatchNormalization(s, t, m, v, eps)          -> Conv(x, W·k, (b - m)·k + t)
    ConvTranspose(x, W, b) ∘ BatchNormalization(s, t, m, v, eps) -> ConvTranspose(x, W·k, (b - m)·k + t)
    Gemm(A, B, C) ∘ BatchNormalization(s, t, m, v, eps)          -> Gemm(A, B·k, β·C·k + t - m·k, β=1)

with ``k = s / sqrt(v + eps)`` per output channel, computed in float64 and stored in
the weight's dtype. Legal when: the weights and every BN parameter are constants;
the BN runs in inference mode with one output (``training_mode`` 0, ``spatial`` 1);
every BN parameter has shape ``[C]`` with C the producer's output channels; the
weight is floating point; ConvTranspose has ``group`` 1 (its weight layout then puts
output channels on axis 1); Gemm's output is 2-D so BN's channel axis is Gemm's N.
Folding reorders floating-point operations: outputs change by rounding only (the
tests hold them to 1e-4 relative).
"""

from __future__ import annotations

import numpy as np

from edgec.ir.core import Model
from edgec.rewrite import Builder, Const, Match, Op, Rule, Var, attribute, constant_array


def _bn(producer: Op) -> Op:
    return Op("BatchNormalization", producer, Const("scale"), Const("shift"), Const("mean"),
              Const("var"), name="bn")


def _bn_factors(match: Match, channels: int) -> tuple[np.ndarray, np.ndarray] | str:
    """(k, t - m·k) per channel, or the reason the BN cannot fold."""
    bn = match.nodes["bn"]
    if attribute(bn, "training_mode", 0) != 0:
        return "BatchNormalization runs in training mode"
    if attribute(bn, "spatial", 1) != 1:
        return "BatchNormalization is not spatial"
    if any(o.name for o in bn.outputs[1:]):
        return "BatchNormalization has running-statistics outputs"
    params = [match.constants[k] for k in ("scale", "shift", "mean", "var")]
    if any(p.dtype.kind != "f" for p in params):
        return "BatchNormalization parameters are not floating point"
    if any(p.shape != (channels,) for p in params):
        return f"BatchNormalization parameters are not of shape [{channels}]"
    scale, shift, mean, var = (p.astype(np.float64) for p in params)
    eps = float(attribute(bn, "epsilon", 1e-5))
    k = scale / np.sqrt(var + eps)
    return k, shift - mean * k


def _float_weight(match: Match, name: str) -> np.ndarray | str:
    w = match.constants[name]
    if w.dtype.kind != "f":
        return "the weight is not floating point"
    return w


# --------------------------------------------------------------------------- conv-bn

def check_conv_bn(match: Match, model: Model) -> str | None:
    w = _float_weight(match, "W")
    if isinstance(w, str):
        return w
    if w.ndim < 3:
        return "the Conv weight has rank < 3"
    b = constant_array(match.values.get("b"))
    if match.values.get("b") is not None and (b is None or b.shape != (w.shape[0],)):
        return "the Conv bias is not a constant of shape [C]"
    factors = _bn_factors(match, w.shape[0])
    return factors if isinstance(factors, str) else None


def rewrite_conv_bn(match: Match, b: Builder):
    conv = match.nodes["conv"]
    w = match.constants["W"]
    k, t = _bn_factors(match, w.shape[0])  # type: ignore[misc]
    bias = constant_array(match.values.get("b"))
    bias = np.zeros(w.shape[0]) if bias is None else bias.astype(np.float64)
    k_w = k.reshape((-1,) + (1,) * (w.ndim - 1))
    new_w = b.constant((w.astype(np.float64) * k_w).astype(w.dtype), f"{match['W'].name}_bn")
    new_b = b.constant((bias * k + t).astype(w.dtype), f"{conv.name or 'conv'}.bias_bn")
    return b.op("Conv", [match["x"], new_w, new_b], {k: a for k, a in conv.attributes.items()})


# --------------------------------------------------------------------------- convtranspose-bn

def check_convtranspose_bn(match: Match, model: Model) -> str | None:
    w = _float_weight(match, "W")
    if isinstance(w, str):
        return w
    if attribute(match.nodes["conv"], "group", 1) != 1:
        return "ConvTranspose has group != 1"
    if w.ndim < 3:
        return "the ConvTranspose weight has rank < 3"
    b = constant_array(match.values.get("b"))
    if match.values.get("b") is not None and (b is None or b.shape != (w.shape[1],)):
        return "the ConvTranspose bias is not a constant of shape [C]"
    factors = _bn_factors(match, w.shape[1])
    return factors if isinstance(factors, str) else None


def rewrite_convtranspose_bn(match: Match, b: Builder):
    conv = match.nodes["conv"]
    w = match.constants["W"]
    k, t = _bn_factors(match, w.shape[1])  # type: ignore[misc]
    bias = constant_array(match.values.get("b"))
    bias = np.zeros(w.shape[1]) if bias is None else bias.astype(np.float64)
    k_w = k.reshape((1, -1) + (1,) * (w.ndim - 2))
    new_w = b.constant((w.astype(np.float64) * k_w).astype(w.dtype), f"{match['W'].name}_bn")
    new_b = b.constant((bias * k + t).astype(w.dtype), f"{conv.name or 'convtranspose'}.bias_bn")
    return b.op("ConvTranspose", [match["x"], new_w, new_b], dict(conv.attributes))


# --------------------------------------------------------------------------- gemm-bn

def gemm_output_columns(match: Match) -> int | None:
    """N of a Gemm whose B is the constant ``B``."""
    w = match.constants["B"]
    if w.ndim != 2:
        return None
    return w.shape[0] if attribute(match.nodes["gemm"], "transB", 0) else w.shape[1]


def check_gemm_bn(match: Match, model: Model) -> str | None:
    w = _float_weight(match, "B")
    if isinstance(w, str):
        return w
    n = gemm_output_columns(match)
    if n is None:
        return "the Gemm weight is not 2-D"
    if match.values.get("C") is not None and constant_array(match.values.get("C")) is None:
        return "the Gemm bias is not constant"
    c = constant_array(match.values.get("C"))
    if c is not None and (c.ndim > 2 or (c.ndim >= 1 and c.shape[-1] not in (1, n))):
        return "the Gemm bias does not broadcast along N"
    factors = _bn_factors(match, n)
    return factors if isinstance(factors, str) else None


def rewrite_gemm_bn(match: Match, b: Builder):
    gemm = match.nodes["gemm"]
    w = match.constants["B"]
    n = gemm_output_columns(match)
    k, t = _bn_factors(match, n)  # type: ignore[arg-type,misc]
    trans_b = attribute(gemm, "transB", 0)
    k_w = k.reshape(-1, 1) if trans_b else k.reshape(1, -1)
    beta = float(attribute(gemm, "beta", 1.0))
    c = constant_array(match.values.get("C"))
    c = np.zeros(n) if c is None else beta * c.astype(np.float64)
    new_w = b.constant((w.astype(np.float64) * k_w).astype(w.dtype), f"{match['B'].name}_bn")
    new_c = b.constant((c * k + t).astype(w.dtype), f"{gemm.name or 'gemm'}.bias_bn")
    attrs = dict(gemm.attributes)
    attrs["beta"] = 1.0
    return b.op("Gemm", [match["A"], new_w, new_c], attrs)


RULES = [
    # Conv(x, W, b) ∘ BN -> Conv(x, W·k, (b - m)·k + t)
    Rule("conv-bn", _bn(Op("Conv", Var("x"), Const("W"), Var("b", optional=True), name="conv")),
         check_conv_bn, rewrite_conv_bn),
    # ConvTranspose(x, W, b) ∘ BN -> ConvTranspose(x, W·k, (b - m)·k + t)
    Rule("convtranspose-bn", _bn(Op("ConvTranspose", Var("x"), Const("W"), Var("b", optional=True),
                                    name="conv")),
         check_convtranspose_bn, rewrite_convtranspose_bn),
    # Gemm(A, B, C) ∘ BN -> Gemm(A, B·k, β·C·k + t - m·k)
    Rule("gemm-bn", _bn(Op("Gemm", Var("A"), Const("B"), Var("C", optional=True), name="gemm")),
         check_gemm_bn, rewrite_gemm_bn),
]
