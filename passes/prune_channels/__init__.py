"""Structured channel pruning: ``Conv(x, W[Cout]) -> Conv(x, W[keep])``, every reader rewritten.

Removes whole output channels of Conv (group 1), Gemm and MatMul (constant weight),
and rewrites every node that reads them so that the pruned model is an ordinary,
smaller ONNX model (fewer FLOPs on any runtime, no sparse kernels needed):

- the next Conv's / Gemm's / MatMul's input channels (weight columns);
- depthwise Convs (``group == C``, one input channel per group): their channels, bias
  and ``group``, and in turn their readers;
- BatchNormalization parameters, PRelu slopes, per-channel constant operands of
  Add/Sub/Mul/Div/Max/Min/Pow; elementwise activations, Clip with scalar bounds,
  Dropout, Cast, pooling (Max/Average/Lp, Global*) pass channels through;
- Add/Sub/Mul... of two computed branches (residual connections): both branches
  carry the same channels, so their producers' channels are tied;
- Concat along the channel axis (each input's channels at its offset);
- Flatten, and Reshape/Squeeze/Unsqueeze/Transpose whose shapes prove where the
  channel axis goes (``[N,C,H,W] -> [N,C*H*W]`` maps channel c to features
  ``c*H*W ... c*H*W+H*W-1``): a following Gemm loses those input features, a
  Reshape's shape constant is rewritten.

``sparsity`` is the fraction of output channels removed from **each** prunable group
(in blocks of ``multiple-of``, keeping at least ``min-channels``); a Conv -> Conv chain
with both ends pruned loses about ``1 - (1 - s)^2`` of its FLOPs (51 % at s = 0.3).

The package holds the pass's concerns, one module each:
`layout` (where each value's channels are; groups tied by union-find; what blocks a
group), `ranking` (which channels go, how many per group), `rewrite` (the smaller
model), `compensation` (removed channels' data-free means folded into consumer
biases, ``compensate``) and `recalibration` (``recalibrate``: with calibration data,
the spec's under ``edgec compile`` or ``calibration-data=FILE``, each Conv/Gemm output
channel gets back the unpruned model's mean and spread, layer by layer; it costs one
run of the model per layer on ``recalibration-samples`` samples).

Tolerance: removing a channel whose weights are all zero leaves the outputs unchanged
(within float rounding; up to the borders of a padded consumer Conv when the channel
was a nonzero constant). Otherwise accuracy drops without fine-tuning and the pass does
not assume by how much: the planner (and ``benchmarks/pruning.py``) measures it on the
spec's data (the trained digits model at 0.3: 97.5 % unpruned, 92.5 % recalibrated).

Stats: ``channels-removed``, ``removed.<node>`` per producer, ``groups-pruned``,
``groups-kept`` (could not be pruned), ``flops-before``, ``flops-after`` (from
`edgec.ir.cost`, multiply-add = 2), ``parameters-before``, ``parameters-after``,
``recalibrated`` (layers whose statistics were re-matched).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np

from edgec.frontend import export_model
from edgec.ir.core import Model
from edgec.ir.cost import model_cost, parameter_count
from edgec.passes.prune_channels.layout import ChannelAnalysis
from edgec.passes.prune_channels.ranking import choose_kept
from edgec.passes.prune_channels.recalibration import recalibrate, recalibration_samples
from edgec.passes.prune_channels.rewrite import ChannelRewrite
from edgec.passmgr.base import OptionError, Pass, PassContext, PassResult

__all__ = ["PruneChannels"]


@dataclass(frozen=True)
class PruneChannels(Pass):
    """Remove the least important output channels of Conv/Gemm/MatMul and rewrite their readers."""

    name: ClassVar[str] = "prune-channels"
    sparsity: float = field(default=0.3, metadata={"help": "fraction of channels removed from each group (overall, in blocks of multiple-of)"})
    criterion: Literal["l1", "l2"] = field(default="l1", metadata={"help": "l1 or l2 norm of a channel's weights"})
    min_channels: int = field(default=1, metadata={"help": "never leave a group with fewer channels"})
    compensate: bool = field(default=True, metadata={"help": "fold removed channels' mean into consumer biases"})
    multiple_of: int = field(default=8, metadata={"help": "kept channels are a multiple of this where a group's size is"})
    recalibrate: bool = field(default=True, metadata={
        "help": "with calibration data, re-match each Conv/Gemm output channel's mean and spread to the unpruned model's"})
    calibration_data: str = field(default="", metadata={"help": ".npz file/folder/glob when not under `edgec compile`"})
    recalibration_samples: int = field(default=32, metadata={"help": "samples used to recalibrate"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.sparsity < 1.0:
            raise OptionError("sparsity", f"must be in [0, 1), got {self.sparsity}")
        for option in ("min_channels", "multiple_of"):
            if getattr(self, option) < 1:
                raise OptionError(option.replace("_", "-"),
                                  f"must be at least 1, got {getattr(self, option)}")
        if self.recalibration_samples < 0:
            raise OptionError("recalibration-samples",
                              f"must be >= 0 (0: no recalibration), got {self.recalibration_samples}")

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        if self.sparsity == 0.0:
            return PassResult(False, {"channels-removed": 0})
        before = model_cost(model)  # runs infer-shapes when shapes are missing
        params_before = parameter_count(model)
        analysis = ChannelAnalysis(model)
        analysis.run()
        keep = self.choose(analysis)
        if not keep:
            return PassResult(False, {"channels-removed": 0, "groups-kept": analysis.group_count()})
        samples = (recalibration_samples(model, ctx, self.calibration_data,
                                         self.recalibration_samples, self.name)
                   if self.recalibrate else None)
        reference = export_model(model) if samples is not None else None
        rewrite = ChannelRewrite(model, analysis, keep, self.compensate)
        removed = rewrite.apply()
        recalibrated = recalibrate(model, reference, rewrite, samples) if samples is not None else 0
        after = model_cost(model, infer_shapes=False)
        stats: dict[str, int | float] = {
            "channels-removed": sum(removed.values()),
            "groups-pruned": len(keep),
            "groups-kept": analysis.group_count() - len(keep),
            "flops-before": before.flops, "flops-after": after.flops,
            "parameters-before": params_before, "parameters-after": parameter_count(model),
            "recalibrated": recalibrated,
        }
        for name, n in removed.items():
            stats[f"removed.{name}"] = n
        return PassResult(True, stats)

    def choose(self, analysis: ChannelAnalysis) -> dict[int, np.ndarray]:
        """Group root -> sorted channel indices kept, for the groups that lose channels."""
        return choose_kept(analysis, sparsity=self.sparsity, criterion=self.criterion,
                           multiple_of=self.multiple_of, min_channels=self.min_channels)
