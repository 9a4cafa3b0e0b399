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
from typing import TYPE_CHECKING

import numpy as np

from edgec.ir.cost import ELEMENTWISE_COST, VIEW_OPS, ModelCost, NodeCost, model_cost

if TYPE_CHECKING:
    from edgec.dsl.spec import Target

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


# ---- GPUs (a target with `accelerator cuda`) ----------------------------------------
#
# A GPU runtime (TensorRT, onnxruntime's CUDA EP, TVM) runs one kernel per compute
# node: pointwise ops that follow a kernel (bias, ReLU/Clip, residual Add, GELU's
# Div/Erf/Add/Mul, Cast) are fused into its epilogue and cost nothing of their own.
# Each kernel costs the target's `launch` time plus max(compute, memory), where
#   compute = max(ops / (peak[precision] x GPU_EFFICIENCY[class]),
#                 K x GPU_REDUCTION_STEP_S[class])
#   memory  = bytes / (bandwidth x GPU_BANDWIDTH_EFFICIENCY)
# with K the node's reduction length. The K term is why a batch-1 kernel on a big GPU
# does not get faster with the precision's peak: its output tiles are too few to fill
# the SMs and each tile walks its K loop serially (measured on an H200: ResNet-18 ran
# in 0.47 ms at fp32 and 0.46 ms at fp16, 15x apart in peak). On a small GPU (a Jetson)
# the peak term binds first and fp16 is faster, as it is there; at larger batches too.
#
# The figures below were set against the H200 measurements in
# benchmarks/data/h200.json (torch, CUDA-graph replay, batch 1; see
# benchmarks/gpu_estimates.py, which prints model, precision, measured, estimate,
# error) and hold within 50 % there for ResNet-18, MobileNetV2 and the transformer at
# fp32 and fp16. They are one table for every model, not per-model corrections, but
# they come from one GPU: for another, they are assumptions.

# Default fixed cost per kernel on a CUDA GPU, seconds. h200.json: a CUDA graph of one
# tiny kernel replays in 5.2 us, each further tiny kernel adds 1.1 us; a kernel that
# does real work adds its fill, drain and its wait on the previous kernel's writes.
GPU_LAUNCH_S = 5.0e-6
GPU_EFFICIENCY = {
    "conv": 0.5,
    "depthwise": 0.05,
    "matmul": 0.3,
    "elementwise": 0.3,
    "other": 0.1,
}
# Seconds per element of a kernel's reduction (the K of a GEMM, Cin/group x kh x kw of a
# convolution): the K loop runs serially within each output tile, so a kernel takes at
# least K x this however many SMs it has - the floor a batch-1 kernel on a big GPU sits
# on. GEMM libraries split long K loops across blocks (split-K), convolutions less so.
GPU_REDUCTION_STEP_S = {
    "conv": 11e-9,
    "matmul": 5e-9,
}
GPU_BANDWIDTH_EFFICIENCY = 0.6
# Pointwise ops a GPU runtime fuses into the kernel that produces their input.
GPU_FUSED_OPS = frozenset(op for op, n in ELEMENTWISE_COST.items()
                          if op not in ("LayerNormalization", "GroupNormalization",
                                        "InstanceNormalization", "MeanVarianceNormalization",
                                        "LpNormalization", "Softmax", "LogSoftmax", "Hardmax",
                                        "DynamicQuantizeLinear")) | {"Cast"}


def launch_seconds(target: Target) -> float:
    """The fixed cost per kernel (GPU) or per node (CPU runtime) on ``target``: its
    ``launch`` field, else the default for its accelerator."""
    launch = getattr(target, "launch", None)
    if launch is not None:
        return launch.to("s")
    return GPU_LAUNCH_S if _is_gpu(target) else NODE_OVERHEAD_S


def _is_gpu(target: Target) -> bool:
    return target.accelerator is not None and target.accelerator.kind == "cuda"


@dataclass(frozen=True)
class Estimate:
    seconds: float
    compute_s: float
    memory_s: float
    nodes: int
    exact: bool          # False when shapes had to be guessed or ops were not modelled

    kernels: int | None = None   # GPU: kernels launched (fused nodes excluded)
    launch_s: float | None = None  # the fixed cost charged per kernel or node

    def to_json(self) -> dict:
        out = {"ms": self.seconds * 1e3, "compute_ms": self.compute_s * 1e3,
               "memory_ms": self.memory_s * 1e3, "nodes": self.nodes, "exact": self.exact,
               "label": "estimated"}
        if self.launch_s is not None:
            out["launch_us"] = self.launch_s * 1e6
        if self.kernels is not None:
            out["kernels"] = self.kernels
        return out


def _op_class(node: NodeCost) -> str:
    op = node.op_type
    if op in ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger"):
        return "conv"
    if op in ("MatMul", "Gemm", "QLinearMatMul", "MatMulInteger", "FusedMatMul", "Attention"):
        return "matmul"   # Attention (com.microsoft) is three GEMMs and a softmax
    if sum(node.ops.values()) and node.bytes and sum(node.ops.values()) / node.bytes < 1:
        return "elementwise"
    return "other"


def _peak(target: Target, precision: str) -> float:
    fp32 = target.peak_for("fp32")
    base = fp32.to("GFLOPS") * 1e9 if fp32 is not None else 10e9
    if precision in ("i8", "u8", "i4", "u4"):
        q = target.peak_for("int8")
        return q.to("GFLOPS") * 1e9 if q is not None and "int8" in target.fast_precisions else base
    if precision in ("f16", "bf16"):
        q = target.peak_for("fp16")
        return q.to("GFLOPS") * 1e9 if q is not None and "fp16" in target.fast_precisions else base
    return base


def estimate(model, target: Target, *, batch: int = 1, cost: ModelCost | None = None,
             depthwise_nodes: set[str] | None = None) -> Estimate:
    """The estimated latency of one run of ``model`` on ``target`` at ``batch``."""
    cost = cost or model_cost(model, dim_values=_batch_dims(model, batch))
    if depthwise_nodes is None:
        depthwise_nodes = {n.name or n.describe() for n in model.graph
                           if n.op_type == "Conv" and int(n.attr("group", 1)) > 1}
    bandwidth = target.bandwidth.to("GB/s") * 1e9 if target.bandwidth is not None \
        else DEFAULT_BANDWIDTH
    exact = cost.exact and not cost.unmodelled_ops
    if _is_gpu(target):
        return _estimate_gpu(model, target, cost, depthwise_nodes, bandwidth, batch, exact)
    overhead = launch_seconds(target)
    total = compute_total = memory_total = 0.0
    for node in cost.nodes:
        cls = "depthwise" if node.node in depthwise_nodes else _op_class(node)
        compute = sum(ops / (_peak(target, p) * EFFICIENCY[cls]) for p, ops in node.ops.items())
        memory = node.bytes / (bandwidth * BANDWIDTH_EFFICIENCY)
        compute_total += compute
        memory_total += memory
        if node.bytes or node.ops:
            total += max(compute, memory) + overhead
    return Estimate(total, compute_total, memory_total, len(cost.nodes), exact,
                    launch_s=overhead)




def _reduction_length(node) -> int:
    """K: how many products each output element sums (0 when unknown)."""
    def dims(value):
        if value is None:
            return None
        if value.const is not None and value.is_constant():
            return tuple(value.const.dims)
        shape = value.shape
        if shape is None or shape.dims is None or not all(isinstance(d, int) for d in shape.dims):
            return None
        return tuple(shape.dims)

    op = node.op_type
    if op in ("Conv", "ConvInteger", "ConvTranspose") and len(node.inputs) > 1:
        w = dims(node.inputs[1])
        return int(np.prod(w[1:])) if w else 0
    if op == "QLinearConv" and len(node.inputs) > 3:
        w = dims(node.inputs[3])
        return int(np.prod(w[1:])) if w else 0
    if op in ("MatMul", "MatMulInteger", "QLinearMatMul", "FusedMatMul"):
        a = dims(node.inputs[0])
        return a[-1] if a else 0
    if op == "Gemm":
        a = dims(node.inputs[0])
        if not a or len(a) != 2:
            return 0
        return a[0] if int(node.attr("transA", 0)) else a[1]
    if op == "Attention" and len(node.inputs) > 1:
        # Three GEMMs in sequence: the QKV projection (K = hidden in), Q·Kᵀ (K = head
        # size) and P·V (K = sequence length).
        x, w = dims(node.inputs[0]), dims(node.inputs[1])
        if not x or not w or len(x) != 3:
            return 0
        heads = int(node.attr("num_heads", 1)) or 1
        return w[0] + (w[1] // 3) // heads + x[1]
    return 0


def _estimate_gpu(model, target: Target, cost: ModelCost, depthwise_nodes: set[str],
                  bandwidth: float, batch: int, exact: bool) -> Estimate:
    """One kernel per compute node, pointwise followers fused (see GPU_EFFICIENCY)."""
    launch = launch_seconds(target)
    graph_nodes = list(model.graph)
    aligned = len(graph_nodes) == len(cost.nodes)
    produced_in_kernel: set[str] = set()   # values a kernel (or its epilogue) writes
    total = compute_total = memory_total = 0.0
    kernels = 0
    for index, node in enumerate(cost.nodes):
        ir_node = graph_nodes[index] if aligned else None
        outputs = [o.name for o in ir_node.outputs if o.name] if ir_node is not None else []
        sources = [v.name for v in ir_node.inputs if v is not None and not v.is_constant()] \
            if ir_node is not None else []
        if node.op_type in VIEW_OPS:
            if any(s in produced_in_kernel for s in sources):
                produced_in_kernel.update(outputs)
            continue
        if node.op_type in GPU_FUSED_OPS and any(s in produced_in_kernel for s in sources):
            produced_in_kernel.update(outputs)   # in the producer's epilogue
            continue
        if not (node.bytes or node.ops):
            continue
        cls = "depthwise" if node.node in depthwise_nodes else _op_class(node)
        compute = sum(ops / (_peak(target, p) * GPU_EFFICIENCY[cls])
                      for p, ops in node.ops.items())
        if ir_node is not None and cls in GPU_REDUCTION_STEP_S:
            compute = max(compute, _reduction_length(ir_node) * GPU_REDUCTION_STEP_S[cls])
        memory = node.bytes / (bandwidth * GPU_BANDWIDTH_EFFICIENCY)
        compute_total += compute
        memory_total += memory
        total += launch + max(compute, memory)
        kernels += 1
        produced_in_kernel.update(outputs)
    return Estimate(total, compute_total, memory_total, len(cost.nodes), exact,
                    kernels=kernels, launch_s=launch)


def _batch_dims(model, batch: int) -> dict[str, int]:
    dims = {}
    for v in model.graph.inputs:
        shape = v.shape
        if shape is not None and shape.dims and isinstance(shape.dims[0], str):
            dims[shape.dims[0]] = batch
    return dims
