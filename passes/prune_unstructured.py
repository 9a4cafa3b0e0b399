"""Unstructured magnitude pruning: ``Conv(x, W) -> Conv(x, W * (|W| > t))``.

The smallest-magnitude weights of Conv, Gemm and MatMul are set to zero until the
requested fraction (``sparsity``) of them is zero: over all those weights at once
(``scope=global``, one threshold) or within each weight tensor (``scope=per-layer``).
Exactly ``floor(sparsity * n)`` elements are zero afterwards (ties broken by position),
counting zeros that were already there. Only the weight operand is pruned (Conv's W,
Gemm's B, MatMul's constant operand), never a bias, and only a float initializer
that is not a graph input and that no other kind of node reads.

The model keeps its shapes and its FLOPs: dense kernels multiply the zeros too. This
pays only with sparse kernels, or when the artifact is compressed for storage or
download (zeros compress; ``benchmarks/pruning.py`` measures the zipped size ratio).
Accuracy drops without fine-tuning; the pass does not assume by how much: the planner
measures it on the spec's data.

Stats: ``sparsity`` (global, achieved), ``sparsity.<node>`` per layer, ``weights-zeroed``
(newly zeroed elements), ``layers``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np

from edgec.ir.core import Model, Node, Value
from edgec.passmgr.base import OptionError, Pass, PassContext, PassResult

# Which input holds the weight: candidates in order, the first constant one wins.
_WEIGHT_INPUTS = {"Conv": (1,), "ConvTranspose": (1,), "Gemm": (1, 0), "MatMul": (1, 0)}


@dataclass(frozen=True)
class PruneUnstructured(Pass):
    """Zero the smallest-magnitude weights of Conv/Gemm/MatMul to a sparsity."""

    name: ClassVar[str] = "prune-unstructured"
    sparsity: float = field(default=0.5, metadata={"help": "fraction of weight elements that are zero afterwards"})
    scope: Literal["global", "per-layer"] = field(default="global", metadata={"help": "global (one threshold) or per-layer"})
    ops: tuple[str, ...] = field(default=("Conv", "Gemm", "MatMul"), metadata={"help": "op types whose weights are pruned"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.sparsity < 1.0:
            raise OptionError("sparsity", f"must be in [0, 1), got {self.sparsity}")
        unknown = set(self.ops) - set(_WEIGHT_INPUTS)
        if unknown:
            raise OptionError("ops", f"cannot prune {', '.join(sorted(unknown))}; "
                                     f"supported: {', '.join(sorted(_WEIGHT_INPUTS))}")

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        layers = prunable_weights(model, self.ops)
        if not layers:
            return PassResult(False, {"layers": 0})
        arrays = [w.const.numpy() for _, w in layers]
        if self.scope == "per-layer":
            masks = [_keep_mask(np.abs(a).ravel(), self.sparsity).reshape(a.shape) for a in arrays]
        else:
            flat = np.concatenate([np.abs(a).ravel() for a in arrays])
            keep = _keep_mask(flat, self.sparsity)
            bounds = np.cumsum([0] + [a.size for a in arrays])
            masks = [keep[bounds[i]:bounds[i + 1]].reshape(a.shape) for i, a in enumerate(arrays)]
        stats: dict[str, int | float] = {"layers": len(layers)}
        zeroed = total = zeros = 0
        for (node, w), a, mask in zip(layers, arrays, masks):
            pruned = np.where(mask, a, np.zeros_like(a))
            newly = int(np.count_nonzero(a) - np.count_nonzero(pruned))
            if newly:
                w.const.set_numpy(pruned)
                zeroed += newly
            layer_zeros = int(pruned.size - np.count_nonzero(pruned))
            zeros += layer_zeros
            total += pruned.size
            stats[f"sparsity.{node.name or w.name}"] = round(layer_zeros / pruned.size, 4)
        stats["sparsity"] = round(zeros / total, 4)
        stats["weights-zeroed"] = zeroed
        return PassResult(zeroed > 0, stats)


def prunable_weights(model: Model, ops: tuple[str, ...]) -> list[tuple[Node, Value]]:
    """(node, weight value) for each weight this pass may prune, each weight once."""
    found: dict[int, tuple[Node, Value]] = {}
    weight_slots: set[tuple[int, int]] = set()  # (id(node), input index)
    candidates: list[tuple[Node, Value]] = []
    for node in model.graph:
        if node.op_type not in ops or node.domain not in ("", "ai.onnx"):
            continue
        for i in _WEIGHT_INPUTS[node.op_type]:
            if i >= len(node.inputs):
                continue
            v = node.inputs[i]
            if v is not None and v.is_constant() and v.dtype is not None and v.dtype.is_floating:
                weight_slots.add((id(node), i))
                candidates.append((node, v))
                break
    for node, v in candidates:
        # A weight also read as something else (a bias, a shape, an activation) stays.
        if all((id(user), i) in weight_slots for user, i in v.uses()) and id(v) not in found:
            found[id(v)] = (node, v)
    return list(found.values())


def _keep_mask(magnitudes: np.ndarray, sparsity: float) -> np.ndarray:
    """True for the elements that stay: all but the floor(sparsity * n) smallest."""
    n = magnitudes.size
    k = int(np.floor(sparsity * n))
    keep = np.ones(n, dtype=bool)
    if k > 0:
        # A stable sort breaks ties by position, so the result is deterministic.
        order = np.argsort(magnitudes, kind="stable")
        keep[order[:k]] = False
    return keep
