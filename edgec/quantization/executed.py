"""What onnxruntime's CPU execution provider really runs in int8.

Two views, both read from onnxruntime itself rather than from a list kept by hand:

- `Int8Kernels` answers "does onnxruntime run this node in int8 when edgec wraps it in
  Q/DQ?" by probing: the node alone, quantized the way `edgec.quantization.qdq` would,
  optimized by onnxruntime (all graph optimizations) and read back. The node ran in
  int8 when no DequantizeLinear is left feeding anything but a graph output: the QDQ
  group became QLinearConv, QLinearAdd, MaxPool on uint8, ... Answers are cached per
  onnxruntime version (in memory, and in a JSON file under the edgec cache).
- `profile` runs a (quantized) model with onnxruntime's session profiling and reports,
  per node of the model given, the precision its kernel executed in, the Q/DQ
  transitions left on activations, and where the time went (int8 kernels, fp32
  kernels, transitions), from the kernels' own input types and timings.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort

from edgec.ir.core import Graph, Model, Node, Value
from edgec.ir.types import DataType, TensorType

INT_TYPES = frozenset({"uint8", "int8"})
TRANSITION_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


# --------------------------------------------------------------------------- probing


def node_signature(node: Node) -> str:
    """What decides whether onnxruntime fuses a node's QDQ group: its op, attributes
    and the kind of each input (absent, a small constant with its values, a constant
    tensor with its rank, or a run-time value with its type and rank)."""
    parts = [node.domain or "", node.op_type]
    for name in sorted(node.attributes):
        value = node.attributes[name].value
        parts.append(f"{name}={value!r}" if isinstance(value, (int, float, str, bytes, list))
                     else f"{name}:{type(value).__name__}")
    for v in node.inputs:
        if v is None:
            parts.append("-")
        elif v.is_constant():
            const = v.const
            if const.numel <= 8 and const.dtype != DataType.FLOAT:
                parts.append(f"c{const.dtype.name}{list(const.numpy().reshape(-1))}")
            else:
                parts.append(f"c{const.dtype.name}r{len(const.dims)}")
        else:
            rank = v.shape.rank if v.shape is not None else None
            parts.append(f"v{v.dtype.name if v.dtype else '?'}r{rank}")
    parts.append(f"o{len(node.outputs)}")
    return "|".join(parts)


def default_cache_file() -> str:
    base = os.environ.get("EDGEC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "edgec")
    return os.path.join(base, "int8-kernels", f"onnxruntime-{ort.__version__}.json")


class Int8Kernels:
    """Which nodes onnxruntime runs in int8 once edgec wraps them in Q/DQ, probed one
    node at a time and cached by `node_signature` per onnxruntime version."""

    _memory: dict[str, dict[str, bool]] = {}

    def __init__(self, cache_file: str | None = None, *, persist: bool = True):
        self.cache_file = cache_file or default_cache_file()
        self.persist = persist
        self.known = Int8Kernels._memory.setdefault(self.cache_file, {})
        if not self.known and os.path.exists(self.cache_file):
            try:
                with open(self.cache_file) as f:
                    data = json.load(f)
                if data.get("onnxruntime") == ort.__version__:
                    self.known.update({k: bool(v) for k, v in data.get("kernels", {}).items()})
            except (OSError, ValueError):
                pass  # an unreadable cache is probed again
        self.probed = 0

    def runs_int8(self, node: Node, opset: int = 17) -> bool:
        key = node_signature(node)
        if key not in self.known:
            self.known[key] = probe(node, opset)
            self.probed += 1
            self._save()
        return self.known[key]

    def _save(self) -> None:
        if not self.persist:
            return
        try:
            os.makedirs(os.path.dirname(self.cache_file), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.cache_file), suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump({"onnxruntime": ort.__version__, "kernels": self.known}, f,
                          indent=0, sort_keys=True)
            os.replace(tmp, self.cache_file)
        except OSError:
            pass  # a read-only cache: the answers stay in memory


def probe(node: Node, opset: int = 17) -> bool:
    """Does onnxruntime run ``node`` in int8 when edgec quantizes it alone?"""
    from edgec.frontend import export_model
    from edgec.quantization.qdq import Calibration, QuantConfig, apply

    if node.subgraphs():
        return False
    graph = Graph("probe")
    inputs: list[Value | None] = []
    for i, v in enumerate(node.inputs):
        if v is None:
            inputs.append(None)
        elif v.is_constant():
            inputs.append(graph.make_constant(v.const.numpy(), f"const{i}"))
        else:
            value = Value(f"input{i}", v.type if v.type is not None
                          else TensorType(DataType.FLOAT, None))
            graph.add_input(value)
            inputs.append(value)
    outputs = [Value(f"output{i}", o.type) for i, o in enumerate(node.outputs)]
    copy = Node(node.op_type, inputs, domain=node.domain, outputs=outputs, name="probe",
                attributes=list(node.attributes.values()))
    graph.append(copy)
    graph.outputs = list(outputs)
    model = Model(graph, opset_imports={"": max(opset, 13)})
    names = {v.name for v in [*inputs, *outputs] if v is not None}
    calibration = Calibration({n: (-1.0, 1.0) for n in names}, "minmax", 1)
    try:
        stats = apply(model, calibration, QuantConfig(ops=(node.op_type,), only=("probe",)))
        if not stats["nodes-quantized"]:
            return False
        optimized = optimized_model(export_model(model))
    except Exception:  # noqa: BLE001 - onnxruntime refusing the QDQ form means "no"
        return False
    return fused(optimized)


def optimized_model(proto: onnx.ModelProto, *,
                    level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> onnx.ModelProto:
    """``proto`` as onnxruntime's CPU EP rewrites it before running it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        options.optimized_model_filepath = path
        options.log_severity_level = 3
        ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return onnx.load(path)


def fused(optimized: onnx.ModelProto) -> bool:
    """True when every DequantizeLinear left reads a constant or feeds only graph
    outputs: the quantized node itself ran on integers."""
    graph = optimized.graph
    outputs = {o.name for o in graph.output}
    constants = {t.name for t in graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            readers[i].append(n)
    for n in graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] not in constants:
            if any(r.op_type not in TRANSITION_OPS for r in readers[n.output[0]]) or \
                    (n.output[0] not in outputs and not readers[n.output[0]]):
                return False
        if n.op_type == "DequantizeLinear" and n.input[0] in constants and readers[n.output[0]]:
            return False  # a weight dequantized for an fp32 kernel
    return True


# --------------------------------------------------------------------------- profiling


@dataclass
class ExecutedKernel:
    name: str          # onnxruntime's node name
    op: str            # the kernel's op type (QLinearConv, Conv, QuantizeLinear, ...)
    precision: str     # int8 | fp32 | transition | other
    microseconds: float
    elements: int      # elements of its first input


@dataclass
class ExecutionReport:
    """One model as onnxruntime executed it."""

    kernels: list[ExecutedKernel]
    # node of the model given -> int8 | fp32 | transition | fused (absorbed by another kernel)
    precision: dict[str, str] = field(default_factory=dict)
    transitions: int = 0     # QuantizeLinear/DequantizeLinear kernels on activations
    node_time: dict[str, float] = field(default_factory=dict)  # node -> seconds of its kernels

    def seconds(self, precision: str | None = None) -> float:
        return sum(k.microseconds for k in self.kernels
                   if precision is None or k.precision == precision) * 1e-6

    def share(self, precision: str) -> float:
        total = self.seconds()
        return self.seconds(precision) / total if total > 0 else 0.0

    def fp32_ops(self) -> list[tuple[str, float]]:
        """(op type, share of the run's time) of the kernels that ran in fp32."""
        by_op: dict[str, float] = defaultdict(float)
        for k in self.kernels:
            if k.precision == "fp32":
                by_op[k.op] += k.microseconds
        total = self.seconds() * 1e6 or 1.0
        return sorted(((op, us / total) for op, us in by_op.items()), key=lambda x: -x[1])

    def summary(self) -> dict:
        return {**self.to_json(per_node=False), **self.timing()}

    def timing(self) -> dict:
        """Where the time went (differs from run to run)."""
        return {"time_share": {p: round(self.share(p), 4) for p in ("int8", "fp32", "transition")},
                "fp32_ops": [[op, round(s, 4)] for op, s in self.fp32_ops()[:8]]}

    def to_json(self, per_node: bool = True) -> dict:
        """What ran in which precision (the same on every run)."""
        counts: dict[str, int] = defaultdict(int)
        for p in self.precision.values():
            counts[p] += 1
        return {"transitions": self.transitions, "nodes": dict(sorted(counts.items())),
                **({"per_node": dict(sorted(self.precision.items()))} if per_node else {})}


_INTEGER_KERNEL = re.compile(r"^(QLinear|QGemm|DynamicQuantize)|Integer")
_SUFFIX = re.compile(r"(_token_\d+|/duplicated|_nchwc|_kernel_time)+$")


def source_name(kernel_name: str) -> str:
    return _SUFFIX.sub("", kernel_name)


def _precision(op: str, types: list[str]) -> str:
    if op in TRANSITION_OPS:
        return "transition"
    if any(t in INT_TYPES for t in types):
        return "int8"
    if any(t in ("float", "float16", "double") for t in types):
        return "fp32"
    return "other"


def profile(proto: onnx.ModelProto, feed: dict[str, np.ndarray], *, runs: int = 3,
            threads: int = 0, base_dir: str | None = None) -> ExecutionReport:
    """Run ``proto`` ``runs`` times (after one warm-up) with onnxruntime's profiler and
    read back each kernel's type, input types and median time; map them onto the
    nodes of ``proto``."""
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "profile")
        options.log_severity_level = 3
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if threads:
            options.intra_op_num_threads = threads
        if base_dir is not None:
            options.add_session_config_entry(
                "session.model_external_initializers_file_folder_path", base_dir)
        session = ort.InferenceSession(proto.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}
        feed = {k: v for k, v in feed.items() if k in wanted}
        session.run(None, feed)
        for _ in range(runs):
            session.run(None, feed)
        with open(session.end_profiling()) as f:
            events = json.load(f)
        optimized = onnx.load(options.optimized_model_filepath, load_external_data=False)
    times: dict[str, list[float]] = defaultdict(list)
    info: dict[str, tuple[str, list[str], int]] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        name = e["name"][:-len("_kernel_time")]
        args = e.get("args", {})
        shapes = args.get("input_type_shape", [])
        types = [t for s in shapes for t in s]
        first = next((dims for s in shapes for t, dims in s.items()), [])
        info[name] = (args.get("op_name", ""), types, int(np.prod(first)) if first else 0)
        times[name].append(float(e.get("dur", 0)))
    kernels = []
    for name, durations in times.items():
        op, types, elements = info[name]
        # The first run is the warm-up: take the median of the rest.
        kept = durations[1:] if len(durations) > 1 else durations
        kernels.append(ExecutedKernel(name, op, _precision(op, types), statistics.median(kept),
                                      elements))
    report = ExecutionReport(kernels)
    constants = {t.name for t in optimized.graph.initializer}
    report.transitions = sum(1 for n in optimized.graph.node if n.op_type in TRANSITION_OPS
                             and n.input and n.input[0] not in constants)
    report.precision, report.node_time = _map_to_source(proto, optimized, kernels)
    return report


def _map_to_source(proto: onnx.ModelProto, optimized: onnx.ModelProto,
                   kernels: list[ExecutedKernel]) -> tuple[dict[str, str], dict[str, float]]:
    """Each node of ``proto`` -> the precision of the kernel that ran it, and the
    seconds of the kernels that ran it. A kernel is traced to its node by name
    (onnxruntime keeps a node's name, with suffixes, when it fuses its QDQ group), or
    by the value it writes (its NCHWc kernels are named after their output value);
    a node found neither way was absorbed into another kernel (a Relu into a Conv's
    activation, a BatchNormalization into its Conv) or folded away: "fused"."""
    names = {n.name: n.name or (n.output[0] if n.output else "") for n in proto.graph.node}
    writer_in_source = {o: (n.name or n.output[0]) for n in proto.graph.node for o in n.output}
    writer_in_optimized = {o: n for n in optimized.graph.node for o in n.output}
    precision: dict[str, str] = {}
    seconds: dict[str, float] = defaultdict(float)
    by_kernel = {k.name: k for k in kernels}

    def source(kernel_name: str) -> str | None:
        base = source_name(kernel_name)
        if base in names and base:
            return names[base]
        return writer_in_source.get(base)

    for k in kernels:
        node = source(k.name)
        if node is None:
            continue
        seconds[node] += k.microseconds * 1e-6
        if k.precision != "transition":
            precision.setdefault(node, k.precision)
    for n in proto.graph.node:
        if n.op_type in TRANSITION_OPS:
            continue
        name = n.name or (n.output[0] if n.output else "")
        if name in precision:
            continue
        runner = next((writer_in_optimized[o] for o in n.output if o in writer_in_optimized), None)
        if runner is None:
            runner = _writer_through_reader(n, proto, optimized, writer_in_optimized)
        kernel = by_kernel.get(runner.name) if runner is not None else None
        if kernel is not None:
            precision[name] = kernel.precision
        elif runner is not None and runner.op_type not in TRANSITION_OPS:
            # A node onnxruntime made without a name (HardSwish -> HardSigmoid, Mul):
            # named at run time, so traced by its op type.
            precision[name] = "int8" if _INTEGER_KERNEL.match(runner.op_type) else "fp32"
        else:
            precision[name] = "fused"
    return precision, dict(seconds)


def _writer_through_reader(node: onnx.NodeProto, proto: onnx.ModelProto, optimized: onnx.ModelProto,
                           writer: dict[str, onnx.NodeProto]) -> onnx.NodeProto | None:
    """The optimized node that writes what ``node`` wrote, found through a reader that
    kept its name (onnxruntime renames the values of the nodes it decomposes)."""
    by_name = {n.name: n for n in optimized.graph.node if n.name}
    for reader in proto.graph.node:
        kept = by_name.get(reader.name) if reader.name else None
        if kept is None or reader.op_type != kept.op_type:
            continue
        for index, name in enumerate(reader.input):
            if name in node.output and index < len(kept.input) and kept.input[index] in writer:
                return writer[kept.input[index]]
    return None
