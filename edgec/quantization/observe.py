"""Run a model in onnxruntime with intermediate values exposed as outputs, and hand
every observed array to a callback — the calibration's view of the activations.

Values of the main graph are exposed as extra graph outputs (one session; batches of
samples when the model's leading input dimension is symbolic). Values inside If
branches cannot be graph outputs, so each branch is run as a model of its own: the
values it captures from the enclosing graph are exposed there, and the branch runs on
the runs whose condition selected it. Loop and Scan bodies are not observed (their
values change per iteration; calibrating them needs unrolling), and are not quantized.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from edgec.progress import Progress

Observer = Callable[[str, np.ndarray], None]

BATCH = 16


def session(proto: onnx.ModelProto, *, optimize: bool = True, threads: int = 0,
            base_dir: str | None = None) -> ort.InferenceSession:
    """A session on ``proto``; its external data (if any) is read from ``base_dir`` (the
    IR's ``model.base_dir``), never from the current directory."""
    options = ort.SessionOptions()
    if base_dir is not None:
        options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                         base_dir)
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def feed_batches(proto_inputs: list[onnx.ValueInfoProto], samples: dict[str, np.ndarray],
                 batch: int = BATCH) -> list[dict[str, np.ndarray]]:
    """Split samples (leading axis = sample) into feeds the model accepts: slices of the
    fixed leading dimension, or batches of up to ``batch`` where it is symbolic.

    Where every sample array has one axis more than its input's declared rank, each
    sample is a whole input (a model without a batch axis): it is fed as it is, one run
    per sample. A model that reads none of the samples' inputs runs once."""
    if not samples:
        return [{}] if not any(vi.name for vi in proto_inputs) else []
    ranks = {vi.name: len(vi.type.tensor_type.shape.dim) for vi in proto_inputs
             if vi.name in samples and vi.type.tensor_type.HasField("shape")}
    if len(ranks) == len(samples) and all(np.ndim(samples[k]) == r + 1 for k, r in ranks.items()):
        count = min(len(a) for a in samples.values())
        return [{k: v[i, ...] for k, v in samples.items()} for i in range(count)]  # 0-d stays an array
    count = min(len(a) for a in samples.values())
    size, fixed = batch, False
    for vi in proto_inputs:
        if vi.name not in samples:
            continue
        dims = vi.type.tensor_type.shape.dim
        if len(dims) and dims[0].HasField("dim_value"):
            size, fixed = max(1, dims[0].dim_value), True
            break
    # A fixed leading dimension takes whole slices only; a symbolic one any remainder.
    end = count - count % size if fixed else count
    return [{k: v[start:start + size] for k, v in samples.items()} for start in range(0, end, size)]


def run(proto: onnx.ModelProto, samples: dict[str, np.ndarray], *, optimize: bool = True,
        batch: int = BATCH, base_dir: str | None = None) -> list[np.ndarray]:
    """The model's outputs on every sample, concatenated along the leading axis."""
    sess = session(proto, optimize=optimize, base_dir=base_dir)
    names = [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    parts: list[list[np.ndarray]] = [[] for _ in names]
    for feed in feed_batches(list(proto.graph.input), {k: v for k, v in samples.items() if k in wanted}, batch):
        for i, out in enumerate(sess.run(names, feed)):
            parts[i].append(out)
    return [np.concatenate(p, axis=0) if p and np.ndim(p[0]) else np.asarray(p) for p in parts]


def observe(proto: onnx.ModelProto, samples: dict[str, np.ndarray], wanted: set[str],
            observer: Observer, *, progress: Progress | None = None, batch: int = BATCH,
            base_dir: str | None = None) -> None:
    """Call ``observer(name, array)`` for every value in ``wanted`` on every run."""
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [vi for vi in proto.graph.input if vi.name not in initializers]
    feeds = feed_batches(inputs, samples, batch)
    _observe_graph(proto, proto.graph, feeds, wanted, observer, progress, base_dir)


def _observe_graph(model: onnx.ModelProto, graph: onnx.GraphProto, feeds: list[dict],
                   wanted: set[str], observer: Observer, progress: Progress | None,
                   base_dir: str | None = None) -> None:
    defined = _defined(graph)
    here = [n for n in sorted(wanted & defined)]
    branches = []  # (If node, branch attr name, branch graph, captured names)
    for node in graph.node:
        if node.op_type != "If":
            continue
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH and _all_defined(attr.g) & wanted:
                branches.append((node, attr.name, attr.g, sorted(_captured(attr.g))))
    extra = set(here)
    for node, _, _, captured in branches:
        extra.add(node.input[0])
        extra.update(captured)
    outputs = [o.name for o in graph.output]
    exposed = [n for n in sorted(extra) if n not in outputs]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.CopyFrom(graph)
    for name in exposed:
        probe.graph.output.append(onnx.ValueInfoProto(name=name))
    # Only what is observed: a graph output of a type numpy lacks (float8, int4) could
    # not be fetched.
    names = [n for n in outputs if n in extra] + exposed
    if not names:  # nothing to observe (and onnxruntime reads no names as "every output")
        return
    sess = session(probe, optimize=False, base_dir=base_dir)
    input_names = {i.name for i in sess.get_inputs()}
    kept: list[dict[str, np.ndarray]] = []
    for done, feed in enumerate(feeds):
        results = dict(zip(names, sess.run(names, {k: v for k, v in feed.items() if k in input_names})))
        for name in here:
            observer(name, results[name])
        if branches:
            kept.append(results)
        if progress is not None:
            progress("calibrate", done + 1, len(feeds), graph.name)
    for node, attr_name, branch, captured in branches:
        take = attr_name == "then_branch"
        branch_feeds = [{c: r[c] for c in captured} for r in kept
                        if bool(np.asarray(r[node.input[0]]).reshape(-1)[0]) == take]
        if not branch_feeds:
            continue
        standalone = helper.make_graph(
            list(branch.node), f"{node.name or 'if'}.{attr_name}",
            [helper.make_tensor_value_info(c, helper.np_dtype_to_tensor_dtype(branch_feeds[0][c].dtype), None)
             for c in captured],
            list(branch.output), list(branch.initializer))
        _observe_graph(model, standalone, branch_feeds, wanted, observer, progress, base_dir)


def _defined(graph: onnx.GraphProto) -> set[str]:
    names = {vi.name for vi in graph.input} | {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(o for o in node.output if o)
    return names


def _all_defined(graph: onnx.GraphProto) -> set[str]:
    names = _defined(graph)
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                names |= _all_defined(sub)
    return names


def _captured(graph: onnx.GraphProto) -> set[str]:
    """Names a graph (or its subgraphs) reads but does not define."""
    defined = _defined(graph)
    read: set[str] = set()
    for node in graph.node:
        read.update(i for i in node.input if i)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                read |= _captured(sub)
    read.update(o.name for o in graph.output)
    return read - defined
