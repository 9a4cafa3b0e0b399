"""A zero Pad folded into the Conv or AveragePool after it (and a -inf Pad into MaxPool).

    Conv(Pad(x, p, 0), W, b)                    -> Conv(x, W, b, pads = pads + p)
    AveragePool(Pad(x, p, 0))                   -> AveragePool(x, pads = p, count_include_pad = 1)
    MaxPool(Pad(x, p, -inf))                    -> MaxPool(x, pads = pads + p)

Legal when: Pad's mode is ``constant`` and its pads (and value, and axes) are
constants; it pads no batch or channel axis and no pad is negative; the consumer's
``auto_pad`` is NOTSET. AveragePool must have no pads of its own (its
count_include_pad would then change meaning) and ``ceil_mode`` 0; MaxPool needs the
pad value -inf (what its own padding means), ``ceil_mode`` 0 and one output.
"""

from __future__ import annotations

import numpy as np

from edgec.ir.core import Model
from edgec.rewrite import Builder, Match, Op, Rule, Var, attribute, constant_array, rank_of


def pad_amounts(match: Match, model: Model, rank: int | None) -> tuple[list[int], float] | str:
    """(spatial pads in Conv's [begins..., ends...] order, pad value), or a reason."""
    pad = match.nodes["pad"]
    if attribute(pad, "mode", b"constant") not in (b"constant", "constant"):
        return "Pad's mode is not constant"
    inputs = pad.inputs
    if (model.opset("") or 0) < 11:
        pads = attribute(pad, "pads")
        value = float(attribute(pad, "value", 0.0))
        axes = None
    else:
        pads_array = constant_array(inputs[1] if len(inputs) > 1 else None)
        if pads_array is None:
            return "Pad's pads are not constant"
        pads = [int(p) for p in pads_array.reshape(-1)]
        value = 0.0
        if len(inputs) > 2 and inputs[2] is not None:
            v = constant_array(inputs[2])
            if v is None or v.size != 1:
                return "Pad's value is not a constant scalar"
            value = float(v.reshape(()))
        axes = None
        if len(inputs) > 3 and inputs[3] is not None:
            a = constant_array(inputs[3])
            if a is None:
                return "Pad's axes are not constant"
            axes = [int(x) for x in a.reshape(-1)]
    if rank is None:
        return "the input's rank is unknown"
    if axes is not None:
        if len(pads) != 2 * len(axes):
            return "Pad's pads do not match its axes"
        full = [0] * (2 * rank)
        for i, axis in enumerate(axes):
            axis = axis + rank if axis < 0 else axis
            if not 0 <= axis < rank:
                return "Pad's axes are out of range"
            full[axis], full[axis + rank] = pads[i], pads[i + len(axes)]
        pads = full
    if len(pads) != 2 * rank:
        return "Pad's pads do not match the input rank"
    if any(p < 0 for p in pads):
        return "Pad crops (negative pads)"
    if pads[0] or pads[1] or pads[rank] or pads[rank + 1]:
        return "Pad pads the batch or channel axis"
    spatial = pads[2:rank] + pads[rank + 2:]
    return spatial, value


def _own_pads(node, spatial_rank: int) -> list[int]:
    return list(attribute(node, "pads", [0] * (2 * spatial_rank)))


def _auto_pad_notset(node) -> bool:
    return attribute(node, "auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")


def check_pad_conv(match: Match, model: Model) -> str | None:
    conv = match.root
    w = constant_array(conv.inputs[1])
    rank = w.ndim if w is not None else rank_of(match["x"])
    found = pad_amounts(match, model, rank)
    if isinstance(found, str):
        return found
    if found[1] != 0.0:
        return "Pad's value is not 0"
    if not _auto_pad_notset(conv):
        return "Conv uses auto_pad"
    return None


def _merged_pads(match: Match, model: Model, node, rank: int) -> list[int]:
    spatial, _ = pad_amounts(match, model, rank)  # type: ignore[misc]
    own = _own_pads(node, rank - 2)
    return [a + b for a, b in zip(own, spatial)]


def rewrite_pad_conv(match: Match, b: Builder):
    conv = match.root
    w = constant_array(conv.inputs[1])
    rank = w.ndim if w is not None else rank_of(match["x"])
    attrs = dict(conv.attributes)
    attrs["pads"] = _merged_pads(match, b.model, conv, rank)  # type: ignore[arg-type]
    return b.op("Conv", [match["x"], *conv.inputs[1:]], attrs)


def _pool_rank(match: Match) -> int | None:
    kernel = attribute(match.root, "kernel_shape")
    return None if kernel is None else len(kernel) + 2


def check_pad_average_pool(match: Match, model: Model) -> str | None:
    pool = match.root
    found = pad_amounts(match, model, _pool_rank(match))
    if isinstance(found, str):
        return found
    if found[1] != 0.0:
        return "Pad's value is not 0"
    if not _auto_pad_notset(pool):
        return "AveragePool uses auto_pad"
    if any(_own_pads(pool, len(attribute(pool, "kernel_shape")))):
        return "AveragePool has pads of its own"
    if attribute(pool, "ceil_mode", 0):
        return "AveragePool uses ceil_mode"
    return None


def rewrite_pad_average_pool(match: Match, b: Builder):
    pool = match.root
    attrs = dict(pool.attributes)
    attrs["pads"] = _merged_pads(match, b.model, pool, _pool_rank(match))  # type: ignore[arg-type]
    attrs["count_include_pad"] = 1
    return b.op("AveragePool", [match["x"]], attrs)


def check_pad_max_pool(match: Match, model: Model) -> str | None:
    pool = match.root
    found = pad_amounts(match, model, _pool_rank(match))
    if isinstance(found, str):
        return found
    if found[1] != -np.inf:
        return "Pad's value is not -inf"
    if not _auto_pad_notset(pool):
        return "MaxPool uses auto_pad"
    if attribute(pool, "ceil_mode", 0):
        return "MaxPool uses ceil_mode"
    if len(pool.outputs) > 1 and pool.outputs[1].name:
        return "MaxPool's indices are used"
    return None


def rewrite_pad_max_pool(match: Match, b: Builder):
    pool = match.root
    attrs = dict(pool.attributes)
    attrs["pads"] = _merged_pads(match, b.model, pool, _pool_rank(match))  # type: ignore[arg-type]
    return b.op("MaxPool", [match["x"]], attrs)


PAD = Op("Pad", Var("x"), name="pad", extra_inputs=True)

RULES = [
    # Conv(Pad(x, p, 0)) -> Conv(x, pads + p)
    Rule("pad-conv", Op("Conv", PAD, extra_inputs=True), check_pad_conv, rewrite_pad_conv),
    # AveragePool(Pad(x, p, 0)) -> AveragePool(x, pads = p, count_include_pad = 1)
    Rule("pad-pool", Op("AveragePool", PAD), check_pad_average_pool, rewrite_pad_average_pool),
    # MaxPool(Pad(x, p, -inf)) -> MaxPool(x, pads + p)
    Rule("pad-pool", Op("MaxPool", PAD), check_pad_max_pool, rewrite_pad_max_pool),
]
