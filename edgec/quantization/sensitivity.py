"""Per-layer sensitivity and mixed precision: which quantized layers hurt the metric
most, and the smallest set of them to keep in fp32 so a tolerance holds.

``layer_sensitivity`` scores every quantized layer's own SQNR in one batched run of the
fp32 model with each layer's QDQ group beside it (`local_sqnr`: seconds, where
quantizing one layer at a time and running the whole model for each took minutes);
``mixed_precision`` starts from the given (fastest) int8 configuration and returns to
fp32 the shortest prefix of the layers ranked by accuracy gained per latency lost that
holds the tolerance. Both calibrate once and reuse the ranges for every trial. The
planner calls them directly; the ``quantize-int8{fallback=per-layer}`` pass uses them too.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import onnx

from edgec.frontend import export_model, import_model
from edgec.ir.core import Model
from edgec.metrics import evaluate, higher_is_better
from edgec.progress import Progress
from edgec.quantization.arithmetic import run_exact
from edgec.quantization.observe import feed_batches, run, session
from edgec.quantization.qdq import (Calibration, QuantConfig, apply, calibrate, candidate_nodes,
                                    prepare, quantizable_graphs)


@dataclass
class MixedPrecisionReport:
    """What the fallback tried: the sensitivity ranking, each step's fp32 set and
    metric, and the layers that stayed fp32 in the end."""

    metric: str
    tolerance: object
    sensitivity: list[tuple[str, float]]
    steps: list[dict] = field(default_factory=list)
    kept_fp32: list[str] = field(default_factory=list)
    held: bool = False
    order: list[str] = field(default_factory=list)   # the order layers return to fp32
    latency: dict = field(default_factory=dict)       # measured fp32 and full-int8 ms
    # False when no configuration cheaper than fp32 (by the measured costs) held
    faster_than_fp32: bool = True

    def to_json(self) -> dict:
        return {"metric": self.metric, "tolerance": str(self.tolerance),
                "sensitivity": [[n, _finite(s)] for n, s in self.sensitivity],
                "steps": self.steps, "kept-fp32": self.kept_fp32, "held": self.held,
                "latency": self.latency, "faster-than-fp32": self.faster_than_fp32}


def _finite(x: float):
    return float(x) if np.isfinite(x) else ("inf" if x > 0 else "-inf")


class _Trials:
    """A BN-folded, calibrated copy of the model, and its fp32 reference outputs."""

    def __init__(self, model: Model, samples: dict[str, np.ndarray], config: QuantConfig,
                 eval_samples: dict[str, np.ndarray] | None, progress: Progress | None,
                 calibration: Calibration | None = None, exact: bool = False):
        self.base = _copy(model)
        # exact: score on the exact int8 path (the target accumulates in int32 where
        # this host's onnxruntime would saturate); the fp32 reference is run as usual.
        self.run = run_exact if exact else run
        prepare(self.base, config)
        self.config = config
        self.calibration = calibration or calibrate(self.base, samples, config, progress)
        self.eval_samples = eval_samples if eval_samples is not None else samples
        self.reference = run(export_model(model), self.eval_samples, base_dir=model.base_dir)

    def layers(self) -> list[str]:
        seen = dict.fromkeys(n.name for n in candidate_nodes(self.base, self.config) if n.name)
        return [n for n in seen if n not in set(self.config.exclude)]

    def outputs(self, config: QuantConfig) -> list[np.ndarray]:
        model = _copy(self.base)
        apply(model, self.calibration, config)
        if self.run is run:  # external weights resolve in the model's folder
            return run(export_model(model), self.eval_samples, base_dir=model.base_dir)
        return self.run(export_model(model), self.eval_samples)

    def score(self, config: QuantConfig, metric: str, tolerance, labels=None):
        return evaluate(metric, tolerance, self.reference, self.outputs(config), labels)


def _copy(model: Model) -> Model:
    return import_model(export_model(model), base_dir=model.base_dir, check=False)


def layer_sensitivity(model: Model, samples: dict[str, np.ndarray], metric: str = "sqnr", *,
                      config: QuantConfig = QuantConfig(),
                      eval_samples: dict[str, np.ndarray] | None = None,
                      labels: np.ndarray | None = None,
                      progress: Progress | None = None,
                      _trials: _Trials | None = None) -> list[tuple[str, float]]:
    """(node name, score) for every layer the policy quantizes, most sensitive first.

    With ``metric`` sqnr (what the fallback ranks by) the score is each layer's own
    SQNR: its int8 output against its fp32 output with both fed the fp32 model's
    activations, every layer at once in one batched run (`local_sqnr`). With any other
    metric it is that metric of the whole model with only that layer quantized, one
    run of the model per layer (slow: minutes on a large model)."""
    trials = _trials or _Trials(model, samples, config, eval_samples, progress)
    layers = trials.layers()
    higher = higher_is_better(metric)
    if metric == "sqnr":
        scores = local_sqnr(trials, config, eval_samples if eval_samples is not None else samples,
                            progress=progress)
        return sorted(((n, scores.get(n, float("inf"))) for n in layers),
                      key=lambda s: (s[1], s[0]))
    out = []
    for done, name in enumerate(layers):
        result = trials.score(replace(config, only=(name,), exclude=()), metric, 0, labels)
        out.append((name, float(result.value)))
        if progress is not None:
            progress("sensitivity", done + 1, len(layers), name)
    return sorted(out, key=lambda s: (s[1] if higher else -s[1], s[0]))


# Samples the local analysis runs on: each layer's error is averaged over every element
# of its output, so a few samples rank layers as well as many.
LOCAL_SAMPLES = 8


def local_sqnr(trials: _Trials, config: QuantConfig, samples: dict[str, np.ndarray], *,
               max_samples: int = LOCAL_SAMPLES, progress: Progress | None = None) -> dict[str, float]:
    """Every quantized layer's own SQNR in dB, from one batched run: the fp32 model,
    and beside it each layer's QDQ group (as the fully quantized model has it) reading
    the fp32 model's values, its output compared with the fp32 one in the graph itself
    (sums of squares), so only two scalars per layer leave onnxruntime."""
    full = _copy(trials.base)
    apply(full, trials.calibration, config)
    proto, probes = _local_model(export_model(trials.base), export_model(full))
    if not probes:
        return {}
    feeds = {k: v[:max_samples] for k, v in samples.items()}
    noise = dict.fromkeys(probes, 0.0)
    signal = dict.fromkeys(probes, 0.0)
    sess = session(proto, base_dir=trials.base.base_dir)
    names = [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    batches = feed_batches(list(proto.graph.input), {k: v for k, v in feeds.items() if k in wanted},
                           batch=2)
    for done, feed in enumerate(batches):
        results = dict(zip(names, sess.run(names, feed)))
        for layer, (noise_name, signal_name) in probes.items():
            noise[layer] += float(results[noise_name])
            signal[layer] += float(results[signal_name])
        if progress is not None:
            progress("sensitivity", done + 1, len(batches), "all layers at once")
    out = {}
    for layer in probes:
        n, s = noise[layer], signal[layer]
        out[layer] = float("inf") if n <= 0 else (10 * np.log10(s / n) if s > 0 else float("-inf"))
    return out


VALUE = "value:"  # key prefix of a quantized activation's own probe in `local_sqnr`


def _local_model(base: onnx.ModelProto, full: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    """``base`` (fp32) with, for each quantized node of ``full``, a copy of its QDQ group
    reading ``base``'s values, and for each quantized activation a copy of its
    QuantizeLinear/DequantizeLinear pair; two scalar outputs per probe: the sum of
    squares of its error and of its fp32 value. Probes of activations are keyed
    ``VALUE + name``."""
    from onnx import helper

    graph = full.graph
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    full_inits = {t.name: t for t in graph.initializer}
    base_defined = ({vi.name for vi in base.graph.input} | {t.name for t in base.graph.initializer}
                    | {o for n in base.graph.node for o in n.output})
    base_readers: dict[str, list[onnx.NodeProto]] = {}
    for n in base.graph.node:
        for i in n.input:
            base_readers.setdefault(i, []).append(n)
    full_defined = {o for n in graph.node for o in n.output}
    out = onnx.ModelProto()
    out.CopyFrom(base)
    del out.graph.output[:]
    copied: set[str] = set()
    probes: dict[str, tuple[str, str]] = {}

    def reference_of(name: str) -> str:
        # A Relu folded into the quantization of its input leaves its output as the
        # fp32 value the quantized one stands for.
        users = base_readers.get(name, [])
        if len(users) == 1 and users[0].op_type in ("Relu", "Clip") \
                and users[0].output[0] not in full_defined:
            return users[0].output[0]
        return name

    def add_probe(key: str, members: list[onnx.NodeProto], result: str, reference: str,
                  prefix: str) -> None:
        if reference not in base_defined:
            return
        inside = {o for m in members for o in m.output}
        new_nodes = []
        for m in members:
            inputs = []
            for name in m.input:
                if not name or name in inside:
                    inputs.append(prefix + name if name else name)
                elif name in full_inits and (name not in base_defined or name in copied
                                             or _differs(full_inits[name], base)):
                    if name not in copied:
                        t = onnx.TensorProto()
                        t.CopyFrom(full_inits[name])
                        t.name = "q/" + name
                        out.graph.initializer.append(t)
                        copied.add(name)
                    inputs.append("q/" + name)
                elif name in base_defined:
                    inputs.append(name)
                else:
                    return  # reads something only the quantized model has
            copy = onnx.NodeProto()
            copy.CopyFrom(m)
            del copy.input[:]
            copy.input.extend(inputs)
            del copy.output[:]
            copy.output.extend(prefix + o for o in m.output)
            copy.name = prefix + (m.name or m.op_type)
            new_nodes.append(copy)
        err = prefix + "error"
        new_nodes += [
            helper.make_node("Sub", [prefix + result, reference], [err], name=prefix + "Sub"),
            helper.make_node("ReduceSumSquare", [err], [prefix + "noise"], keepdims=0,
                             name=prefix + "noise"),
            helper.make_node("ReduceSumSquare", [reference], [prefix + "signal"], keepdims=0,
                             name=prefix + "signal")]
        out.graph.node.extend(new_nodes)
        out.graph.output.extend([onnx.ValueInfoProto(name=prefix + "noise"),
                                 onnx.ValueInfoProto(name=prefix + "signal")])
        probes[key] = (prefix + "noise", prefix + "signal")

    for index, node in enumerate(graph.node):
        if node.op_type == "QuantizeLinear" and node.input[0] not in full_inits:
            dq = next((r for r in readers.get(node.output[0], [])
                       if r.op_type == "DequantizeLinear"), None)
            if dq is not None and VALUE + node.input[0] not in probes:
                add_probe(VALUE + node.input[0], [node, dq], dq.output[0],
                          reference_of(node.input[0]), f"local{index}/")
            continue
        if node.op_type == "DequantizeLinear" or not node.name:
            continue
        group = []
        for name in node.input:
            dq = producer.get(name)
            if dq is not None and dq.op_type == "DequantizeLinear":
                group.append(dq)
                q = producer.get(dq.input[0])
                if q is not None and q.op_type == "QuantizeLinear":
                    group.append(q)
        if not group:
            continue  # not quantized
        result = node.output[0]
        q_out = next((r for r in readers.get(result, []) if r.op_type == "QuantizeLinear"), None)
        tail = []
        if q_out is not None:
            dq_out = next((r for r in readers.get(q_out.output[0], [])
                           if r.op_type == "DequantizeLinear"), None)
            if dq_out is not None:
                tail = [q_out, dq_out]
                result = dq_out.output[0]
        add_probe(node.name, [*reversed(group), node, *tail], result, reference_of(node.output[0]),
                  f"local{index}/")
    return out, probes


def _differs(tensor: onnx.TensorProto, base: onnx.ModelProto) -> bool:
    """An initializer of the quantized model that base holds under the same name with
    other contents (it never should: quantization names its constants afresh)."""
    other = next((t for t in base.graph.initializer if t.name == tensor.name), None)
    return other is None or other.SerializeToString() != tensor.SerializeToString()


def latency_costs(trials: _Trials, config: QuantConfig, feed: dict[str, np.ndarray], *,
                  threads: int = 0) -> tuple[dict[str, float], float, float]:
    """What returning each quantized layer to fp32 would cost in seconds, measured:
    both models are profiled once (`executed.profile`). A layer's cost is the time of
    its fp32 kernel (or of the fp32 kernel that absorbed it with its activation) less
    its int8 kernel's, or, where its fp32 kernel cannot be told apart, its int8 time
    times how much slower its op class ran in fp32 than in int8; plus a
    DequantizeLinear and a QuantizeLinear over its input at the seconds per element
    the model's own Q/DQ kernels took. A cost below 0 is a layer that runs faster in
    fp32 here. Also the measured seconds of the fp32 and of the fully quantized model."""
    from edgec.quantization.executed import profile

    full = _copy(trials.base)
    apply(full, trials.calibration, config)
    fp32 = profile(export_model(trials.base), feed, runs=3, threads=threads,
                   base_dir=trials.base.base_dir)
    int8 = profile(export_model(full), feed, runs=3, threads=threads, base_dir=full.base_dir)
    per_class_fp32: dict[str, float] = {}
    per_class_int8: dict[str, float] = {}
    for k in fp32.kernels:
        per_class_fp32[k.op] = per_class_fp32.get(k.op, 0.0) + k.microseconds
    q_seconds = q_elements = 0.0
    for k in int8.kernels:
        if k.precision == "transition":
            q_seconds += k.microseconds * 1e-6
            q_elements += k.elements
        elif k.precision == "int8":
            op = _float_op(k.op)
            per_class_int8[op] = per_class_int8.get(op, 0.0) + k.microseconds
    per_element = q_seconds / q_elements if q_elements else 0.0
    by_node = {}
    for k in int8.kernels:
        if k.precision == "int8":
            by_node.setdefault(_kernel_node(k.name), k)
    layers = trials.layers()
    fp32_time = _fp32_layer_times(trials.base, layers, fp32.node_time)
    costs = {}
    for name in layers:
        k = by_node.get(name)
        if k is None:
            costs[name] = 0.0
            continue
        if name in fp32_time:
            saved = fp32_time[name] - k.microseconds * 1e-6
        else:
            op = _float_op(k.op)
            ratio = (per_class_fp32.get(op, 0.0) / per_class_int8[op]
                     if per_class_int8.get(op) and per_class_fp32.get(op) else 1.0)
            saved = k.microseconds * 1e-6 * (ratio - 1.0)
        costs[name] = saved + 2 * k.elements * per_element
    return costs, fp32.seconds(), int8.seconds()


def _fp32_layer_times(base: Model, layers: list[str], node_time: dict[str, float]) -> dict[str, float]:
    """Each layer's fp32 kernel time, where the fp32 profile tells it: its own, or that
    of the one activation after it that onnxruntime fused into its kernel (an NCHWc
    Conv is named after the value it writes, the activation's output)."""
    quantized = set(layers)
    out = {}
    for g in quantizable_graphs(base):
        for node in g:
            if node.name not in quantized:
                continue
            if node.name in node_time:
                out[node.name] = node_time[node.name]
                continue
            readers = node.outputs[0].consumers() if node.outputs else []
            if len(readers) == 1 and readers[0].name not in quantized \
                    and readers[0].name in node_time and len(readers[0].inputs) <= 3:
                out[node.name] = node_time[readers[0].name]
    return out


def _float_op(op: str) -> str:
    return {"QLinearConv": "Conv", "QLinearMatMul": "MatMul", "MatMulIntegerToFloat": "MatMul",
            "QGemm": "Gemm", "QLinearAdd": "Add", "QLinearMul": "Mul",
            "QLinearConcat": "Concat", "QLinearSigmoid": "Sigmoid",
            "QLinearAveragePool": "AveragePool", "QLinearGlobalAveragePool": "GlobalAveragePool",
            "QLinearLeakyRelu": "LeakyRelu", "QLinearSoftmax": "Softmax"}.get(op, op)


def _kernel_node(kernel_name: str) -> str:
    from edgec.quantization.executed import source_name
    return source_name(kernel_name)


def mixed_precision(model: Model, samples: dict[str, np.ndarray], metric: str, tolerance, *,
                    config: QuantConfig = QuantConfig(),
                    eval_samples: dict[str, np.ndarray] | None = None,
                    labels: np.ndarray | None = None,
                    rank_metric: str = "sqnr",
                    progress: Progress | None = None,
                    exact: bool = False,
                    latency: bool = False,
                    threads: int = 0) -> tuple[QuantConfig, MixedPrecisionReport]:
    """``config`` (start from the fastest int8 configuration) with the fewest layers
    returned to fp32 that make ``metric`` hold ``tolerance`` (a number, or an object
    with ``value`` and ``unit`` like the spec's Quantity; "1%" style strings are
    accepted).

    Layers are ranked by accuracy gained per latency lost: the noise each one's int8
    form adds (its own SQNR, `local_sqnr`, as a noise-to-signal ratio) over what
    keeping it fp32 costs (`latency_costs`, measured, with ``latency``; otherwise every
    layer costs the same and the ranking is by sensitivity alone). The fp32 set is a
    prefix of that ranking, the shortest one that holds, found by trying 0, 1, 2, 4, ...
    layers and then bisecting (a handful of runs of the model). With ``latency``,
    prefixes whose summed cost would make the model slower than fp32 are not tried:
    when none within that holds, the report says so (``faster_than_fp32`` False).
    The returned config's ``exclude`` names the fp32 layers; the report says what each
    step scored. ``exact`` scores the trials on the exact int8 path
    (`arithmetic.run_exact`) instead of onnxruntime's int8 kernels."""
    tolerance = _tolerance(tolerance)
    trials = _Trials(model, samples, config, eval_samples, progress, exact=exact)
    layers = trials.layers()
    units: dict[str, tuple[str, ...]] = {name: (name,) for name in layers}
    if rank_metric == "sqnr":
        scores = local_sqnr(trials, config, eval_samples if eval_samples is not None else samples,
                            progress=progress)
        ranking = sorted(((n, scores.get(n, float("inf"))) for n in layers),
                         key=lambda s: (s[1], s[0]))
        noise = {key: _noise_ratio(score) for key, score in scores.items()}
        gain = _unit_gains(trials.base, layers, noise, units)
    else:
        ranking = layer_sensitivity(model, samples, rank_metric, config=config, labels=labels,
                                    eval_samples=eval_samples, progress=progress, _trials=trials)
        gain = {}
    report = MixedPrecisionReport(metric, tolerance, ranking)
    costs: dict[str, float] = {}
    budget = float("inf")
    if latency:
        feed = {k: v[:1] for k, v in samples.items()}
        costs, fp32_s, int8_s = latency_costs(trials, config, feed, threads=threads)
        budget = fp32_s - int8_s
        report.latency = {"fp32_ms": fp32_s * 1e3, "int8_ms": int8_s * 1e3}

    def unit_cost(unit: str) -> float:
        return sum(costs.get(n, 0.0) for n in units[unit]) if latency else float(len(units[unit]))

    # Layers measured faster in fp32 than in int8 here go back to fp32 whatever their
    # accuracy: they are the first units, always kept (the search starts after them).
    faster = sorted((n for n in layers if latency and costs.get(n, 0.0) < 0),
                    key=lambda n: (costs[n], n))
    if gain:
        # A floor on the cost: a unit measured as free (kernels too short to time) is
        # not ranked first for that alone.
        floor = max(budget / max(len(layers), 1) * 0.1, 1e-7) if latency and budget > 0 else 1e-7
        order = faster + sorted((u for u in gain if u not in faster),
                                key=lambda u: (-gain[u] / max(unit_cost(u), floor), u))
    else:
        order = faster + [name for name, _ in ranking if name not in faster]

    def fp32_nodes(k: int) -> list[str]:
        return list(dict.fromkeys(n for unit in order[:k] for n in units[unit]))

    def cost_of(nodes: list[str]) -> float:
        return sum(costs.get(n, 0.0) for n in nodes)

    start = len(faster)
    budget -= cost_of(faster)  # negative: returning those to fp32 makes it faster
    affordable = len(order)
    if latency and budget <= 0:
        # Measured no faster than fp32 already: no fallback will be (the planner, which
        # measures every candidate against fp32, then ships fp32); the search still
        # finds what holds the tolerance, for the report.
        report.faster_than_fp32 = False
    elif latency:
        for k in range(start + 1, len(order) + 1):
            if cost_of(fp32_nodes(k)) - cost_of(faster) >= budget:
                affordable = k - 1
                break
    report.order = order

    def trial(k: int) -> bool:
        kept = fp32_nodes(k)
        result = trials.score(replace(config, exclude=tuple(config.exclude) + tuple(kept)),
                              metric, tolerance, labels)
        report.steps.append({"fp32": kept, "units": k, "value": _finite(result.value),
                             "held": bool(result.held), "detail": result.detail,
                             **({"cost_ms": round(cost_of(kept) * 1e3, 3)} if latency else {})})
        if progress is not None:
            progress("mixed-precision", len(report.steps), None, result.detail)
        return bool(result.held)

    held_at = None
    failed_at = start - 1
    k = start
    while k <= affordable:
        if trial(k):
            held_at = k
            break
        failed_at = k
        step = max(k - start, 1)  # 0, 1, 2, 4, ... units past the always-kept ones
        k = min(k + step, affordable) if k < affordable else affordable + 1
    if held_at is not None:
        low, high = failed_at, held_at  # low fails, high holds
        while high - low > 1:
            mid = (low + high) // 2
            if trial(mid):
                high = mid
            else:
                low = mid
        held_at = high
    if held_at is None:
        kept = fp32_nodes(affordable if latency else len(order))
        report.kept_fp32 = kept
        report.faster_than_fp32 = report.faster_than_fp32 and affordable == len(order)
        return replace(config, exclude=tuple(config.exclude) + tuple(kept)), report
    report.kept_fp32, report.held = fp32_nodes(held_at), True
    chosen = replace(config, exclude=tuple(config.exclude) + tuple(report.kept_fp32))
    if latency:
        # The costs are per layer; islands also cost onnxruntime layout changes around
        # them, so the mix itself is measured and the report says when it is slower.
        from edgec.quantization.executed import profile

        mixed = _copy(trials.base)
        apply(mixed, trials.calibration, chosen)
        seconds = profile(export_model(mixed), {k: v[:1] for k, v in samples.items()}, runs=3,
                          threads=threads, base_dir=mixed.base_dir).seconds()
        report.latency["mixed_ms"] = seconds * 1e3
        report.faster_than_fp32 = seconds < report.latency["fp32_ms"] / 1e3
    return chosen, report


def _noise_ratio(sqnr_db: float) -> float:
    if np.isfinite(sqnr_db):
        return 10 ** (-sqnr_db / 10)
    return 0.0 if sqnr_db > 0 else 1e9


def _input_noise(value, noise: dict[str, float]) -> float:
    """The quantization noise of what a layer reads: the value's own, or, behind a
    Relu folded into its producer's quantization, the Relu's input's."""
    from edgec.quantization.qdq import is_relu

    if VALUE + (value.name or "") in noise:
        return noise[VALUE + value.name]
    writer = value.producer()
    if writer is not None and is_relu(writer) and writer.inputs[0] is not None:
        return noise.get(VALUE + (writer.inputs[0].name or ""), 0.0)
    return 0.0


def _unit_gains(base: Model, layers: list[str], noise: dict[str, float],
                units: dict[str, tuple[str, ...]]) -> dict[str, float]:
    """The units the fallback returns to fp32, and the noise each one removes.

    A layer alone (unit = the layer) removes the noise its own int8 arithmetic and
    weights add beyond its inputs' quantization. An activation's quantization goes
    only when its writer and every reader are fp32 (a Q/DQ pair serves them all), so
    its unit is those layers, and it removes that activation's own noise. ``units`` is
    filled in with each activation unit's layers."""
    from edgec.quantization.qdq import is_relu

    quantized = set(layers)
    values: dict[str, object] = {}
    for g in quantizable_graphs(base):
        for node in g:
            for v in list(node.inputs) + list(node.outputs):
                if v is not None and v.name:
                    values.setdefault(v.name, v)
    gains: dict[str, float] = {}
    for key, ratio in noise.items():
        if not key.startswith(VALUE):
            continue
        value = values.get(key[len(VALUE):])
        if value is None:
            continue
        members = []
        writer = value.producer()
        if writer is not None and writer.name in quantized:
            members.append(writer.name)
        readers = list(value.consumers())
        if len(readers) == 1 and is_relu(readers[0]) and readers[0].name not in quantized:
            readers = list(readers[0].outputs[0].consumers())  # a Relu folded into it
        members += [r.name for r in readers if r.name in quantized]
        if members:
            units[key] = tuple(dict.fromkeys(members))
            gains[key] = ratio
    for name in layers:
        node_noise = noise.get(name)
        if node_noise is None:
            continue
        node = next((n for g in quantizable_graphs(base) for n in g if n.name == name), None)
        inputs = [_input_noise(v, noise) for v in (node.inputs if node else ()) if v is not None]
        gains[name] = max(0.0, node_noise - max(inputs, default=0.0))
    return gains


@dataclass(frozen=True)
class _Tolerance:
    value: float
    unit: str | None = None

    def __str__(self) -> str:
        return f"{self.value:g}{' ' + self.unit if self.unit and self.unit != '%' else self.unit or ''}"


def _tolerance(t) -> object:
    if isinstance(t, str):
        text = t.strip()
        if text.endswith("%"):
            return _Tolerance(float(text[:-1]), "%")
        return _Tolerance(float(text.removesuffix("dB").strip()), "dB" if text.endswith("dB") else None)
    return t
