"""Which channels go: ranking within each channel group, and how many each group loses.

A channel's importance is the L1 or L2 norm (``criterion``) of its weights, scaled by
``|gamma| / sqrt(var + eps)`` when a BatchNormalization follows (its scale after BN:
"network slimming"), normalized by the mean over the layer and summed over the
producers tied in the group. Ranking is per group, not global: without fine-tuning a
global ranking over layers of different scales can empty a thin layer, and a uniform
ratio gives a FLOP reduction the planner can reason about.

Each group loses ``floor(sparsity * size)`` channels, keeping at least
``min-channels``. Where a group's size is a multiple of ``multiple-of`` its kept count
is rounded up to a multiple (CPU kernels block channels by 8: a count off the block
ran slower than the unpruned layer), then whole blocks are given back while that
brings the channels removed over those groups closer to ``sparsity`` of them.
"""

from __future__ import annotations

import math

import numpy as np

from edgec.ir.core import Node
from edgec.passes.prune_channels.layout import ChannelAnalysis, constant_array, node_attr


def choose_kept(a: ChannelAnalysis, *, sparsity: float, criterion: str, multiple_of: int,
                min_channels: int) -> dict[int, np.ndarray]:
    """Group root -> sorted channel indices kept, for the groups that lose channels."""
    importance: dict[int, np.ndarray] = {}
    for node, leaf in a.sources:
        root = a.find(leaf)
        if root in a.blocked:
            continue
        score = channel_importance(node, criterion)
        mean = float(score.mean()) if score.size else 0.0
        score = score / mean if mean > 0 else score
        importance[root] = importance.get(root, 0) + score
    kept_count: dict[int, int] = {}
    rounded: list[int] = []
    for root in importance:
        size = a.size[root]
        kept = size - int(math.floor(sparsity * size))
        if multiple_of > 1 and size % multiple_of == 0:
            # CPU kernels block channels by 8 or 16 (onnxruntime's NCHWc): a count
            # off the block runs slower than the full layer did.
            kept = -(-kept // multiple_of) * multiple_of
            rounded.append(root)
        kept_count[root] = kept
    _apportion(a, kept_count, rounded, importance, sparsity, multiple_of, min_channels)
    keep = {}
    for root, score in importance.items():
        size = a.size[root]
        kept = kept_count[root]
        remove = min(size - kept, size - max(min_channels, 1))
        if remove <= 0:
            continue
        order = np.argsort(score, kind="stable")
        keep[root] = np.sort(order[remove:])
    return keep


def _apportion(a: ChannelAnalysis, kept: dict[int, int], rounded: list[int],
               importance: dict[int, np.ndarray], sparsity: float, m: int,
               min_channels: int) -> None:
    """Rounding each group's kept count up to a block of ``m`` keeps more channels than
    asked (16 channels at 0.3 keep 16, not 12). Give whole blocks back, one at a time,
    while that brings the channels removed over all rounded groups closer to
    ``sparsity`` of them, so the model as a whole loses the fraction asked for. Each
    block comes from the group whose next ``m`` channels are the least important
    (importance normalized by the group's mean, as for the ranking), which spares
    thin, busy layers."""
    target = sum(sparsity * a.size[r] for r in rounded)
    removed = sum(a.size[r] - kept[r] for r in rounded)

    def next_block(root: int) -> float:
        ordered = np.sort(importance[root])  # ascending: the first are removed
        start = a.size[root] - kept[root]
        return float(ordered[start:start + m].sum())

    while True:
        open_ = [r for r in rounded if kept[r] - m >= max(min_channels, m)]
        if not open_ or abs(removed + m - target) >= abs(removed - target):
            return
        root = min(open_, key=lambda r: (next_block(r), r))
        kept[root] -= m
        removed += m


def channel_importance(node: Node, criterion: str) -> np.ndarray:
    """Per output channel: weight norm, times the BN scale when a BN follows."""
    w = node.inputs[1].const.numpy().astype(np.float64)
    if node.op_type == "Conv":
        rows = w.reshape(w.shape[0], -1)
    elif node.op_type == "Gemm" and node_attr(node, "transB", 0):
        rows = w
    else:
        rows = w.T
    score = np.abs(rows).sum(axis=1) if criterion == "l1" else np.sqrt((rows ** 2).sum(axis=1))
    out = node.outputs[0]
    users = out.consumers()
    if len(users) == 1 and users[0].op_type == "BatchNormalization" and not out.is_graph_output():
        bn = users[0]
        gamma, var = constant_array(bn.inputs[1]), constant_array(bn.inputs[4])
        if gamma is not None and var is not None:
            eps = node_attr(bn, "epsilon", 1e-5)
            score = score * np.abs(gamma) / np.sqrt(var.astype(np.float64) + eps)
    return score
