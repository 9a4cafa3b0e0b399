"""Helpers for the pruning tests: make the channels prune-channels would remove
exactly zero, so that removing them must leave the outputs unchanged."""

from __future__ import annotations

import numpy as np

from edgec.ir.core import Model
from edgec.passes.infer_shapes import InferShapes
from edgec.passmgr.base import PassContext
from edgec.passes.prune_channels import PruneChannels
from edgec.passes.prune_channels.layout import ChannelAnalysis
from edgec.passes.prune_channels.rewrite import ChannelRewrite


def zero_channels_to_prune(model: Model, sparsity: float, *, zero_after_bn: bool = True,
                           multiple_of: int = 1) -> int:
    """Zero, in place, the weights (and bias) of every channel that
    ``prune-channels{sparsity}`` would remove from ``model``; with ``zero_after_bn``
    also set BatchNormalization shifts so those channels stay exactly 0 after BN
    (else they are nonzero constants, which the pass must compensate); ``multiple_of``
    as the pass's option. Returns the
    number of channels zeroed."""
    InferShapes().run(model, PassContext())
    analysis = ChannelAnalysis(model)
    analysis.run()
    keep = PruneChannels(sparsity=sparsity, multiple_of=multiple_of).choose(analysis)
    rewrite = ChannelRewrite(model, analysis, keep, compensate=False)
    rewrite.compute_indices()
    zeroed = 0
    for node in analysis.nodes:
        out = node.outputs[0]
        idx = rewrite.indices(out)
        if idx is None:
            continue
        gone = np.setdiff1d(np.arange(analysis.layout[id(out)].size), idx)
        op = node.op_type
        if op in ("Conv", "Gemm", "MatMul"):
            w = node.inputs[1].const.numpy().copy()
            trans = op == "Gemm" and node.attributes.get("transB") is not None and node.attributes["transB"].value
            axis = 0 if op == "Conv" or trans else 1
            index = [slice(None)] * w.ndim
            index[axis] = gone
            w[tuple(index)] = 0
            node.inputs[1].const.set_numpy(w)
            if op != "MatMul" and len(node.inputs) > 2 and node.inputs[2] is not None:
                b = node.inputs[2].const.numpy().copy()
                b[..., gone] = 0
                node.inputs[2].const.set_numpy(b)
            zeroed += len(gone)
        elif op == "BatchNormalization" and zero_after_bn:
            gamma, beta, mean, var = (v.const.numpy().copy() for v in node.inputs[1:5])
            eps = node.attributes["epsilon"].value if "epsilon" in node.attributes else 1e-5
            beta[gone] = gamma[gone] * mean[gone] / np.sqrt(var[gone] + eps)  # BN(0) = 0
            node.inputs[2].const.set_numpy(beta)
    return zeroed
