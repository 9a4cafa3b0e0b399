"""fp16 conversion with fp32 islands: ``y: f32 = Op(x: f32, W: f32)`` ->
``y: f16 = Op(x: f16, W: f16)`` for ops that compute safely in fp16, with Casts where
fp16 and fp32 regions meet.

Float initializers read only by fp16 ops are stored as fp16 (half the bytes); a graph
input or output keeps its fp32 type (a Cast at the boundary), so the interface is
unchanged unless ``keep-io-types=false``. Ops outside the fp16 list (reductions and
exponentials that overflow 65504, ops whose output type is an attribute, control flow
and anything unknown), the ``keep-fp32`` op types and the ``exclude`` node names stay
fp32. With calibration data (``edgec compile``, or ``calibration-data=``), any op
whose observed output exceeds ``overflow-margin`` x 65504 stays fp32 too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from edgec.frontend import export_model
from edgec.ir.core import Graph, Model, Node, Value
from edgec.ir.shape_inference import infer_types
from edgec.ir.types import DataType, TensorType
from edgec.passmgr.base import OptionError, Pass, PassContext, PassResult
from edgec.quantization.observe import observe

FP16_MAX = 65504.0
# Ops that compute safely in fp16: every float input and output is the same type T.
FP16_OPS = frozenset({
    "Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Sub", "Mul", "Div", "Neg", "Abs",
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
    "Erf", "Gelu", "Clip", "Max", "Min", "Sqrt", "Reciprocal", "Softmax", "LogSoftmax",
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization",
    "InstanceNormalization", "LayerNormalization", "Transpose", "Reshape", "Flatten",
    "Squeeze", "Unsqueeze", "Concat", "Split", "Slice", "Gather", "Identity", "Pad",
    "Where", "Expand", "Tile", "DepthToSpace", "SpaceToDepth", "Dropout", "ReduceMean",
    "ReduceMax", "ReduceMin", "Floor", "Ceil", "Round", "Sign", "Shape", "Size",
})
# Inputs that must stay fp32 whatever T is (op type -> input indices).
FLOAT32_INPUTS = {"Resize": (2,), "LayerNormalization": ()}
# Outputs whose type is not T (op type -> output indices): LayerNormalization's Mean
# and InvStdDev are U, fp32 for the default stash_type.
FLOAT32_OUTPUTS = {"LayerNormalization": (1, 2)}
DEFAULT_KEEP = ("Exp", "Pow", "ReduceSum", "ReduceSumSquare", "ReduceProd", "ReduceL2",
                "ReduceLogSumExp", "CumSum", "Range")


@dataclass(frozen=True)
class ConvertFp16(Pass):
    """fp16 weights and compute, with fp32 islands where fp16 would overflow."""

    name: ClassVar[str] = "convert-fp16"
    keep_fp32: tuple[str, ...] = field(default=DEFAULT_KEEP, metadata={"help": "op types kept fp32"})
    exclude: tuple[str, ...] = field(default=(), metadata={"help": "node names kept fp32"})
    keep_io_types: bool = field(default=True, metadata={"help": "graph inputs/outputs stay fp32"})
    calibration_data: str = field(default="", metadata={"help": ".npz to find overflowing ops (optional)"})
    overflow_margin: float = field(default=0.5, metadata={"help": "fraction of 65504 an fp16 value may reach"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.overflow_margin <= 1.0:
            raise OptionError("overflow-margin", f"must be in (0, 1], got {self.overflow_margin}")

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        # Which values are float must be known: intermediate values may be untyped.
        infer_types(model, ctx.diagnostics)
        overflowing = self._overflowing(model, ctx)
        graph = model.graph
        half = [n for n in graph if self._fp16(n, overflowing)]
        if not half:
            return PassResult(False, {"fp16-nodes": 0})
        half_ids = {id(n) for n in half}
        stats = {"fp16-nodes": len(half), "fp32-nodes": len(graph) - len(half), "casts": 0,
                 "initializers-fp16": 0, "overflow-islands": len(overflowing)}
        converted: dict[int, Value] = {}   # fp32 value -> its fp16 version (cast or converted)
        # 1) every float output of an fp16 node becomes fp16.
        for node in half:
            for k, out in enumerate(node.outputs):
                if out.dtype == DataType.FLOAT and k not in FLOAT32_OUTPUTS.get(node.op_type, ()):
                    out.type = TensorType(DataType.FLOAT16, out.shape)
        # 2) fp16 nodes read fp16 versions of their fp32 inputs.
        for node in half:
            for i, v in enumerate(node.inputs):
                if v is None or v.dtype != DataType.FLOAT or i in FLOAT32_INPUTS.get(node.op_type, ()):
                    continue
                if id(v) not in converted:
                    converted[id(v)] = self._to_half(model, graph, v, half_ids, stats)
                node.set_input(i, converted[id(v)])
        # 3) fp32 readers (and graph outputs) of fp16 values read a Cast back.
        for node in half:
            for out in node.outputs:
                if out.dtype != DataType.FLOAT16:
                    continue
                readers = [(n, i) for n, i in out.uses() if id(n) not in half_ids]
                if readers or (out.is_graph_output() and self.keep_io_types):
                    back = self._cast(graph, out, DataType.FLOAT, after=node)
                    stats["casts"] += 1
                    for n, i in readers:
                        n.set_input(i, back)
                    if out.is_graph_output() and self.keep_io_types:
                        graph.hand_over_outputs(out, back, "_fp16")
        graph.remove_unused_initializers()
        return PassResult(True, stats)

    def _fp16(self, node: Node, overflowing: set[str]) -> bool:
        if node.domain not in ("", "ai.onnx") or node.op_type not in FP16_OPS:
            return False
        if node.op_type in self.keep_fp32 or node.name in self.exclude or node.subgraphs():
            return False
        if any(o.name in overflowing for o in node.outputs):
            return False
        floats = [v for v in list(node.inputs) + list(node.outputs) if v is not None and v.dtype == DataType.FLOAT]
        return bool(floats)

    def _to_half(self, model: Model, graph: Graph, v: Value, half_ids: set[int], stats: dict) -> Value:
        if v.is_constant() and all(id(n) in half_ids for n in v.consumers()):
            v.const.set_numpy(v.const.numpy().astype(np.float16))
            v.type = TensorType(DataType.FLOAT16, v.shape)
            stats["initializers-fp16"] += 1
            return v
        if v.is_constant():
            stats["initializers-fp16"] += 1
            return graph.make_constant(v.const.numpy().astype(np.float16), f"{v.name}_fp16")
        stats["casts"] += 1
        producer = v.producer()
        return self._cast(graph, v, DataType.FLOAT16, after=producer if producer is not None and producer.graph is graph else None)

    @staticmethod
    def _cast(graph: Graph, v: Value, to: DataType, after: Node | None) -> Value:
        out = Value(None, TensorType(to, v.shape))
        cast = Node("Cast", [v], attributes={"to": int(to)}, outputs=[out],
                    name=graph.unique_name(f"{v.name}_Cast"))
        if after is not None:
            graph.insert_after(after, cast)
        else:
            first = next(iter(graph), None)
            graph.insert_before(first, cast) if first is not None else graph.append(cast)
        return out

    def _overflowing(self, model: Model, ctx: PassContext) -> set[str]:
        """Outputs whose observed magnitude is too close to fp16's limit."""
        samples = ctx.calibration_data
        if samples is None and self.calibration_data:
            from edgec.quantization.samples import calibration_samples
            samples = calibration_samples(model, ctx, self.calibration_data, self.name)
        if samples is None:
            return set()
        proto = export_model(model)
        initializers = {t.name for t in proto.graph.initializer}
        missing = [vi.name for vi in proto.graph.input if vi.name not in initializers and vi.name not in samples]
        if missing:  # the model cannot run on these samples: no overflow check
            ctx.diagnostics.warning(f"convert-fp16: calibration data lacks inputs {missing}; "
                                    "ops are not checked for fp16 overflow")
            return set()
        names = {o.name for n in model.graph for o in n.outputs if o.dtype == DataType.FLOAT and o.name}
        found: set[str] = set()
        limit = FP16_MAX * self.overflow_margin

        def check(name: str, array: np.ndarray) -> None:
            if array.dtype.kind == "f" and array.size and float(np.abs(array).max()) > limit:
                found.add(name)

        observe(proto, {k: v[:32] for k, v in samples.items()}, names, check,
                base_dir=model.base_dir)
        return found
