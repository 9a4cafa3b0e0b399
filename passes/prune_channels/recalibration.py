"""Recalibration ("adaptive BN"): the pruned model's channel statistics re-matched to the
unpruned model's on calibration samples, layer by layer, without gradients."""

from __future__ import annotations

import numpy as np

import onnx

from edgec.frontend import export_model
from edgec.ir.core import Model
from edgec.passes.prune_channels.rewrite import ChannelRewrite
from edgec.passmgr.base import PassContext
from edgec.quantization.samples import calibration_samples


def recalibration_samples(model: Model, ctx: PassContext, calibration_data: str, count: int,
                          pass_name: str) -> dict[str, np.ndarray] | None:
    """Up to ``count`` samples: the spec's data under ``edgec compile``, else the file(s)
    ``calibration_data`` names; None without either (the pass is then data-free)."""
    if ctx.calibration_data is None and not calibration_data:
        return None
    samples = calibration_samples(model, ctx, calibration_data, pass_name)
    if count < 1 or min((len(v) for v in samples.values()), default=0) == 0:
        return None
    return {k: v[:count] for k, v in samples.items()}


def recalibrate(model: Model, reference: onnx.ModelProto, rewrite: ChannelRewrite,
                samples: dict[str, np.ndarray]) -> int:
    """Adaptive re-normalization ("adaptive BN"), layer by layer in graph order.

    Removing channels shifts the statistics of every later layer, which is most of
    the accuracy a pruned network loses before fine-tuning. For each Conv and Gemm
    with constant weights in the main graph, the output channel ``c`` that the
    unpruned model computed as channel ``k`` gets ``y' = a (y - mu) + mu_ref`` with
    ``a = sigma_ref / sigma``: its weights times ``a``, its bias ``a (b - mu) + mu_ref``,
    where ``mu, sigma`` are the channel's mean and standard deviation over the samples
    (and positions) in the pruned model as corrected so far, and ``mu_ref, sigma_ref``
    channel ``k``'s in the unpruned one. Layers are done one at a time because each
    correction changes what every later layer sees. Returns how many layers changed.
    """
    targets = []
    for node in model.graph:
        if node.domain not in ("", "ai.onnx") or node.op_type not in ("Conv", "Gemm") or len(node.inputs) < 2:
            continue
        w = node.inputs[1]
        if w is None or not w.is_constant() or w.const.numpy().dtype != np.float32:
            continue
        if node.op_type == "Gemm" and (node.attr("transA", 0) or float(node.attr("alpha", 1.0)) != 1.0
                                       or float(node.attr("beta", 1.0)) != 1.0):
            continue
        if len(node.inputs) > 2 and node.inputs[2] is not None and not node.inputs[2].is_constant():
            continue
        targets.append(node)
    if not targets:
        return 0
    names = [node.outputs[0].name for node in targets]
    reference_stats = dict(zip(names, _channel_statistics(reference, names, samples,
                                                          model.base_dir)))
    changed = 0
    for node in targets:
        out = node.outputs[0]
        mean_ref, std_ref = reference_stats[out.name]
        kept = rewrite.indices(out)
        if kept is not None:
            mean_ref, std_ref = mean_ref[kept], std_ref[kept]
        ((mean, std),) = _channel_statistics(export_model(model), [out.name], samples,
                                             model.base_dir)
        if mean.shape != mean_ref.shape:
            continue
        live = (std > 1e-6 * max(float(std_ref.max(initial=0.0)), 1e-12)) & (std_ref > 0)
        scale = np.where(live, std_ref / np.where(live, std, 1.0), 1.0)
        shift = mean_ref - scale * mean
        if np.allclose(scale, 1.0, rtol=1e-4) and np.allclose(shift, 0.0, atol=1e-6 * (1 + float(np.abs(mean_ref).max(initial=0.0)))):
            continue
        weight = node.inputs[1].const.numpy().astype(np.float64)
        if node.op_type == "Conv":
            weight = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
        elif node.attr("transB", 0):
            weight = weight * scale[:, None]
        else:
            weight = weight * scale[None, :]
        bias = (node.inputs[2].const.numpy().astype(np.float64)
                if len(node.inputs) > 2 and node.inputs[2] is not None else np.zeros(len(scale)))
        if bias.shape != scale.shape:
            continue  # a Gemm bias that broadcasts differently
        graph = model.graph
        node.set_input(1, graph.make_constant(weight.astype(np.float32), f"{node.inputs[1].name}_recalibrated"))
        new_bias = graph.make_constant((scale * bias + shift).astype(np.float32),
                                       f"{node.name or node.op_type}_bias_recalibrated")
        if len(node.inputs) > 2:
            node.set_input(2, new_bias)
        else:
            node.append_input(new_bias)
        changed += 1
    model.graph.remove_unused_initializers()
    return changed


def _channel_statistics(proto, names: list[str], samples: dict[str, np.ndarray],
                        base_dir: str | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-channel (axis 1) mean and standard deviation of each named value over the samples."""
    from edgec.quantization.observe import run

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    del probe.graph.output[:]
    probe.graph.output.extend([onnx.ValueInfoProto(name=name) for name in names])
    outputs = run(probe, samples, base_dir=base_dir)
    stats = []
    for array in outputs:
        axes = tuple(i for i in range(array.ndim) if i != 1)
        x = array.astype(np.float64)
        stats.append((x.mean(axis=axes), x.std(axis=axes)))
    return stats
