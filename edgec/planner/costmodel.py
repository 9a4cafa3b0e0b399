"""Latency estimates for targets that are not at hand, from the target's description.

Per node: ``max(ops / (peak × efficiency), bytes / bandwidth)`` plus a fixed dispatch
overhead, summed over the graph (a roofline with per-op-class efficiencies). Peaks
come from the target description per precision (fp32, fp16, int8); integer ops use
the int8 peak, fp16 ops the fp16 peak only where the target lists fp16 as fast.

The efficiencies and the overhead are fitted on this host (x86-64, onnxruntime CPU
EP) by ``benchmarks/costmodel.py``, which predicts the host's own latency from the
host's own description, measures it, and prints the error. Every figure this module
produces is an estimate and is labelled "estimated" wherever it is shown.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgec.ir.cost import ModelCost, NodeCost, model_cost

# Fraction of the described peak compute a runtime reaches per op class, fitted on
# this host (2-core x86-64, onnxruntime 1.32 CPU EP, the default pipeline) by a grid
# search minimising the worst error over ResNet-18, MobileNetV2, the transformer
# encoder and the digits model (benchmarks/costmodel.py prints the result). The host's
# described peak is cores x clock x FMA width, which onnxruntime's convolutions reach;
# for other targets these are assumptions carried over, not measurements.
EFFICIENCY = {
    "conv": 1.0,
    "depthwise": 0.2,
    "matmul": 0.7,
    "elementwise": 0.05,
    "other": 0.05,
}
# Fraction of the memory bandwidth streaming ops reach.
BANDWIDTH_EFFICIENCY = 0.6
# Per-node dispatch cost of a CPU runtime, seconds (fitted as above).
NODE_OVERHEAD_S = 5.0e-6
# When a target does not say its bandwidth.
DEFAULT_BANDWIDTH = 20e9


@dataclass(frozen=True)
class Estimate:
    seconds: float
    compute_s: float
    memory_s: float
    nodes: int
    exact: bool          # False when shapes had to be guessed or ops were not modelled

    def to_json(self) -> dict:
        return {"ms": self.seconds * 1e3, "compute_ms": self.compute_s * 1e3,
                "memory_ms": self.memory_s * 1e3, "nodes": self.nodes, "exact": self.exact,
                "label": "estimated"}


def _op_class(node: NodeCost) -> str:
    op = node.op_type
    if op in ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger"):
        return "conv"
    if op in ("MatMul", "Gemm", "QLinearMatMul", "MatMulInteger", "FusedMatMul"):
        return "matmul"
    if sum(node.ops.values()) and node.bytes and sum(node.ops.values()) / node.bytes < 1:
        return "elementwise"
    return "other"


def _peak(target, precision: str) -> float:
    fp32 = target.peak_for("fp32")
    base = fp32.to("GFLOPS") * 1e9 if fp32 is not None else 10e9
    if precision in ("i8", "u8", "i4", "u4"):
        q = target.peak_for("int8")
        return q.to("GFLOPS") * 1e9 if q is not None and "int8" in target.fast_precisions else base
    if precision in ("f16", "bf16"):
        q = target.peak_for("fp16")
        return q.to("GFLOPS") * 1e9 if q is not None and "fp16" in target.fast_precisions else base
    return base


def estimate(model, target, *, batch: int = 1, cost: ModelCost | None = None,
             depthwise_nodes: set[str] | None = None) -> Estimate:
    """The estimated latency of one run of ``model`` on ``target`` at ``batch``."""
    cost = cost or model_cost(model, dim_values=_batch_dims(model, batch))
    if depthwise_nodes is None:
        depthwise_nodes = {n.name or n.describe() for n in model.graph
                           if n.op_type == "Conv" and int(n.attr("group", 1)) > 1}
    bandwidth = target.bandwidth.to("GB/s") * 1e9 if target.bandwidth is not None \
        else DEFAULT_BANDWIDTH
    total = compute_total = memory_total = 0.0
    for node in cost.nodes:
        cls = "depthwise" if node.node in depthwise_nodes else _op_class(node)
        compute = sum(ops / (_peak(target, p) * EFFICIENCY[cls]) for p, ops in node.ops.items())
        memory = node.bytes / (bandwidth * BANDWIDTH_EFFICIENCY)
        compute_total += compute
        memory_total += memory
        if node.bytes or node.ops:
            total += max(compute, memory) + NODE_OVERHEAD_S
    return Estimate(total, compute_total, memory_total, len(cost.nodes),
                    cost.exact and not cost.unmodelled_ops)


def _batch_dims(model, batch: int) -> dict[str, int]:
    dims = {}
    for v in model.graph.inputs:
        shape = v.shape
        if shape is not None and shape.dims and isinstance(shape.dims[0], str):
            dims[shape.dims[0]] = batch
    return dims
