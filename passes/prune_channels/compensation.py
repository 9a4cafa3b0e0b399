"""Bias compensation: a removed channel's mean still reached its consumer.

That mean, times the consumer's weights, is folded into the consumer's bias (Conv B,
Gemm C; MatMul has no bias and gets none). The means are data-free: from
BatchNormalization statistics (a BN's output has mean ``beta`` and standard deviation
``|gamma|``), carried through ReLU/Clip with Gaussian formulas and exactly through
affine ops. A channel whose weights are all zero is a constant and is carried exactly,
so removing it leaves the outputs unchanged (up to the borders of a padded consumer
Conv, where the constant would have met zero padding).
"""

from __future__ import annotations

import math

import numpy as np

from edgec.ir.core import Node, Value
from edgec.passes.prune_channels.layout import (BINARY, POOLS, ChannelAnalysis, constant_array,
                                                node_attr, value_dims)

# Unary functions that map a constant channel exactly.
EXACT_UNARY = {
    "Relu": lambda m, n: np.maximum(m, 0), "Sigmoid": lambda m, n: 1 / (1 + np.exp(-m)),
    "Tanh": lambda m, n: np.tanh(m), "Identity": lambda m, n: m, "Dropout": lambda m, n: m,
    "Cast": lambda m, n: m, "Neg": lambda m, n: -m, "Abs": lambda m, n: np.abs(m),
    "Exp": lambda m, n: np.exp(m), "Sqrt": lambda m, n: np.sqrt(m),
    "LeakyRelu": lambda m, n: np.where(m < 0, m * node_attr(n, "alpha", 0.01), m),
}


def relu_mean(m: np.ndarray, s: np.ndarray) -> np.ndarray:
    """E[max(X, 0)] for X ~ N(m, s^2); exact for s = 0."""
    safe = np.where(s > 0, s, 1.0)
    z = m / safe
    cdf = 0.5 * (1 + np.vectorize(math.erf, otypes=[float])(z / math.sqrt(2))) if z.size else z
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return np.where(s > 0, m * cdf + safe * pdf, np.maximum(m, 0))


class ChannelMeans:
    """Per-channel mean and standard deviation of each tracked value, estimated without
    data (NaN where unknown; a standard deviation of 0 marks an exact constant)."""

    def __init__(self, analysis: ChannelAnalysis):
        self.a = analysis
        self.mean: dict[int, np.ndarray] = {}
        self.std: dict[int, np.ndarray] = {}

    def removed_contribution(self, node: Node, w: np.ndarray, in_axis: int,
                             i_in: np.ndarray | None) -> np.ndarray | None:
        """What the removed input channels (all but ``i_in``) of linear ``node`` with
        weights ``w`` added to each of its outputs on average (full width); None when
        nothing is known or nothing was added."""
        x = node.inputs[0]
        if i_in is None or id(x) not in self.mean:
            return None
        gone = np.setdiff1d(np.arange(self.a.layout[id(x)].size), i_in)
        m = np.nan_to_num(self.mean[id(x)][gone], nan=0.0)
        if not np.any(m != 0):
            return None
        wg = np.take(w, gone, axis=in_axis).astype(np.float64)
        if node.op_type == "Conv":  # every tap of the kernel sees the channel's mean
            return wg.reshape(wg.shape[0], wg.shape[1], -1).sum(-1) @ m
        return np.tensordot(wg, m, axes=([in_axis], [0]))

    def propagate(self) -> None:
        """The means and spreads of every tracked value, in graph order."""
        for node in self.a.nodes:
            out = node.outputs[0]
            if id(out) not in self.a.layout or self.a.layout[id(out)].size == 0:
                continue
            stats = self._node_stats(node)
            if stats is not None:
                self.mean[id(out)], self.std[id(out)] = stats

    def _in(self, v: Value | None, size: int):
        if v is not None and id(v) in self.mean:
            return self.mean[id(v)], self.std[id(v)]
        nan = np.full(size, np.nan)
        return nan, nan

    def _node_stats(self, node: Node):
        op, out = node.op_type, node.outputs[0]
        lay = self.a.layout[id(out)]
        n = lay.size
        x = node.inputs[0]
        if op in ("Conv", "Gemm", "MatMul"):
            return self._producer_stats(node, n)
        m, s = self._in(x, n)
        if op == "BatchNormalization":
            g, beta, rm, rv = (constant_array(v).astype(np.float64) for v in node.inputs[1:5])
            scale = g / np.sqrt(rv + node_attr(node, "epsilon", 1e-5))
            m = np.where(np.isnan(m), rm, m)
            s = np.where(np.isnan(s), np.sqrt(rv), s)
            return scale * (m - rm) + beta, np.abs(scale) * s
        if op == "Relu":
            return relu_mean(m, s), np.where(s > 0, s, 0.0)  # std: a bound, not exact
        if op == "Clip":
            lo = constant_array(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
            hi = constant_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
            if (len(node.inputs) > 1 and node.inputs[1] is not None and lo is None) or (
                    len(node.inputs) > 2 and node.inputs[2] is not None and hi is None):
                return None
            lo = float(lo.reshape(-1)[0]) if lo is not None else node_attr(node, "min", -np.inf)
            hi = float(hi.reshape(-1)[0]) if hi is not None else node_attr(node, "max", np.inf)
            mean = m.copy()
            if np.isfinite(lo):
                mean = mean + relu_mean(lo - m, s)
            if np.isfinite(hi):
                mean = mean - relu_mean(m - hi, s)
            return mean, np.minimum(s, (hi - lo) / 2 if np.isfinite(hi - lo) else s)
        if op in EXACT_UNARY:
            exact = s == 0
            mean = np.where(exact, EXACT_UNARY[op](np.where(exact, m, 0), node), np.nan)
            if op in ("Identity", "Dropout", "Cast"):
                return m, s
            return mean, np.where(exact, 0.0, np.nan)
        if op in POOLS:
            return m, s
        if op in BINARY:
            return self._binary_stats(node, n)
        if op == "Concat":
            axis, od = node_attr(node, "axis", 0), value_dims(out)
            axis = axis - len(od) if axis >= 0 else axis
            if axis != lay.axis:
                return None
            parts = [self._in(v, value_dims(v)[axis]) for v in node.inputs]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        if op in ("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose"):
            factor = n // len(m) if len(m) else 1
            return np.repeat(m, factor), np.repeat(s, factor)
        return None

    def _producer_stats(self, node: Node, n: int):
        """A Conv/Gemm/MatMul output's channel means: exact for all-zero weights (the
        bias), else the statistics of the BatchNormalization that reads it."""
        op, out = node.op_type, node.outputs[0]
        w = node.inputs[1].const.numpy().astype(np.float64)
        if op == "Conv":
            rows = w.reshape(w.shape[0], -1)
        elif op == "Gemm" and node_attr(node, "transB", 0):
            rows = w
        else:
            rows = w.T
        b = constant_array(node.inputs[2]) if op != "MatMul" and len(node.inputs) > 2 else None
        if b is None:
            bias = np.zeros(n)
        else:
            b = np.asarray(b, np.float64)
            bias = np.full(n, b.reshape(-1)[0]) if b.size == 1 else b.reshape(-1, n).mean(axis=0)
        if op == "Gemm":
            bias = bias * node_attr(node, "beta", 1.0)
        mean, std = np.full(n, np.nan), np.full(n, np.nan)
        if op == "Conv" and node_attr(node, "group", 1) != 1:  # depthwise: constants stay constant
            m, s = self._in(node.inputs[0], n)
            mult = n // len(m) if len(m) else 1
            m, s = np.repeat(m, mult), np.repeat(s, mult)
            const = s == 0
            mean[const] = m[const] * rows[const].sum(axis=1) + bias[const]
            std[const] = 0.0
        zero = ~rows.any(axis=1)
        mean[zero], std[zero] = bias[zero], 0.0
        users = out.consumers()
        if len(users) == 1 and users[0].op_type == "BatchNormalization":
            rm, rv = constant_array(users[0].inputs[3]), constant_array(users[0].inputs[4])
            unknown = np.isnan(mean)
            mean[unknown] = rm[unknown]
            std[unknown] = np.sqrt(rv[unknown])
        return mean, std

    def _binary_stats(self, node: Node, n: int):
        op = node.op_type
        vals = []
        for v in node.inputs[:2]:
            if v is not None and id(v) in self.a.layout:
                vals.append(self._in(v, n))
            else:
                c = constant_array(v)
                if c is None:
                    vals.append((np.full(n, np.nan), np.full(n, np.nan)))
                    continue
                c = c.astype(np.float64)
                if c.size == 1:
                    vec = np.full(n, float(c.reshape(-1)[0]))
                elif c.size == n:
                    vec = c.reshape(-1)
                else:
                    vals.append((np.full(n, np.nan), np.full(n, np.nan)))
                    continue
                vals.append((vec, np.zeros(n)))
        (m1, s1), (m2, s2) = vals
        exact = (s1 == 0) & (s2 == 0)
        with np.errstate(all="ignore"):
            if op == "Add":
                return m1 + m2, np.sqrt(s1 ** 2 + s2 ** 2)
            if op == "Sub":
                return m1 - m2, np.sqrt(s1 ** 2 + s2 ** 2)
            if op == "Mul":
                return np.where(s2 == 0, m1 * m2, np.where(s1 == 0, m1 * m2, np.nan)), np.where(
                    s2 == 0, s1 * np.abs(m2), np.where(s1 == 0, s2 * np.abs(m1), np.nan))
            if op == "Div":
                return np.where(s2 == 0, m1 / m2, np.nan), np.where(s2 == 0, s1 / np.abs(m2), np.nan)
            fn = {"Max": np.maximum, "Min": np.minimum, "Pow": np.power,
                  "PRelu": lambda a, b: np.where(a < 0, a * b, a)}[op]
            return np.where(exact, fn(m1, m2), np.nan), np.where(exact, 0.0, np.nan)
