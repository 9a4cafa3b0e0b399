"""Mixed precision: the smallest set of quantized layers to keep in fp32 so a
tolerance holds, ranked by accuracy gained per latency lost.

``mixed_precision`` starts from the given (fastest) int8 configuration and returns to
fp32 the shortest prefix of the fallback's units (`_Plan`) that holds the tolerance:
units ranked by the noise they remove (`sensitivity.local_sqnr`) per second of latency
they add (`latency_costs`, measured), searched by doubling then bisecting
(`_shortest_holding_prefix`). It calibrates once and reuses the ranges for every trial.
The planner calls it directly; the ``quantize-int8{fallback=per-layer}`` pass uses it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from edgec.frontend import export_model
from edgec.ir.core import Model
from edgec.progress import Progress
from edgec.quantization.observe import feed_batches
from edgec.metrics import higher_is_better
from edgec.quantization.qdq import QuantConfig, apply, calibrate, quantizable_graphs
from edgec.quantization.sensitivity import VALUE, Trials, copy_model, layer_sensitivity, local_sqnr

# What ``calibration=auto`` chooses from, in order of preference on a tie.
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


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
    calibration: str = ""                              # the method the trials used
    calibration_scores: dict = field(default_factory=dict)  # method -> metric, with auto

    def to_json(self) -> dict:
        return {"metric": self.metric, "tolerance": str(self.tolerance),
                "sensitivity": [[n, _finite(s)] for n, s in self.sensitivity],
                "steps": self.steps, "kept-fp32": self.kept_fp32, "held": self.held,
                "latency": self.latency, "faster-than-fp32": self.faster_than_fp32,
                "calibration": self.calibration, "calibration-scores": self.calibration_scores}


def _finite(x: float):
    return float(x) if np.isfinite(x) else ("inf" if x > 0 else "-inf")


def _first_feed(trials: Trials, samples: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One run's inputs to profile with: the first row of batch-leading samples, or the
    first whole feed of per-sample ones (edgec.data's layouts, told apart by rank)."""
    return feed_batches(list(export_model(trials.base).graph.input), samples, batch=1)[0]


def latency_costs(trials: Trials, config: QuantConfig, feed: dict[str, np.ndarray], *,
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

    full = copy_model(trials.base)
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
    methods = CALIBRATION_METHODS if config.calibration == "auto" else (config.calibration,)
    trials = Trials(model, samples, replace(config, calibration=methods[0]), eval_samples, progress,
                    exact=exact)
    config, scores = best_calibration(trials, samples, config, metric, tolerance, labels, progress)
    layers = trials.layers()
    ranking, gain, units = _rank(trials, model, samples, config, rank_metric, eval_samples, labels,
                                 progress)
    report = MixedPrecisionReport(metric, tolerance, ranking, calibration=config.calibration,
                                  calibration_scores=scores)
    plan = _Plan(units, latency=latency)
    if latency:
        plan.costs, fp32_s, int8_s = latency_costs(trials, config, _first_feed(trials, samples),
                                                   threads=threads)
        plan.budget = fp32_s - int8_s
        report.latency = {"fp32_ms": fp32_s * 1e3, "int8_ms": int8_s * 1e3}
    plan.order_units(layers, ranking, gain)
    report.order = plan.order
    affordable, report.faster_than_fp32 = plan.affordable()

    def excluded(nodes: list[str]) -> QuantConfig:
        return replace(config, exclude=tuple(config.exclude) + tuple(nodes))

    def trial(k: int) -> bool:
        kept = plan.fp32_nodes(k)
        result = trials.score(excluded(kept), metric, tolerance, labels)
        report.steps.append({"fp32": kept, "units": k, "value": _finite(result.value),
                             "held": bool(result.held), "detail": result.detail,
                             **({"cost_ms": round(plan.cost_of(kept) * 1e3, 3)} if latency else {})})
        if progress is not None:
            progress("mixed-precision", len(report.steps), None, result.detail)
        return bool(result.held)

    held_at = _shortest_holding_prefix(trial, plan.start, affordable)
    if held_at is None:
        report.kept_fp32 = plan.fp32_nodes(affordable if latency else len(plan.order))
        report.faster_than_fp32 = report.faster_than_fp32 and affordable == len(plan.order)
        return excluded(report.kept_fp32), report
    report.kept_fp32, report.held = plan.fp32_nodes(held_at), True
    chosen = excluded(report.kept_fp32)
    if latency:
        # The costs are per layer; islands also cost onnxruntime layout changes around
        # them, so the mix itself is measured and the report says when it is slower.
        seconds = _measured_seconds(trials, chosen, _first_feed(trials, samples), threads)
        report.latency["mixed_ms"] = seconds * 1e3
        report.faster_than_fp32 = seconds < report.latency["fp32_ms"] / 1e3
    return chosen, report


def best_calibration(trials: Trials, samples: dict[str, np.ndarray], config: QuantConfig,
                     metric: str, tolerance, labels: np.ndarray | None = None,
                     progress: Progress | None = None) -> tuple[QuantConfig, dict[str, float]]:
    """``config`` with the calibration method its fully quantized form scores best
    with (``metric`` against fp32 on the trials' evaluation samples), and each method's
    score, when ``config.calibration`` is ``auto``; ``trials`` then holds that method's
    ranges. Otherwise ``config`` unchanged and no scores. The methods are tried in
    CALIBRATION_METHODS order and the first of equal scores is kept: MinMax clips
    nothing, so a clipping method must do better to be chosen."""
    if config.calibration != "auto":
        return config, {}
    tolerance = _tolerance(tolerance)
    higher = higher_is_better(metric)
    scores: dict[str, float] = {}
    best: tuple[str, object] | None = None
    for method in CALIBRATION_METHODS:
        candidate = replace(config, calibration=method)
        if method != trials.config.calibration or trials.calibration.method != method:
            trials.calibration = calibrate(trials.base, samples, candidate, progress)
        value = float(trials.score(candidate, metric, tolerance, labels).value)
        scores[method] = value
        if best is None or (value > scores[best[0]] if higher else value < scores[best[0]]):
            best = (method, trials.calibration)
        if progress is not None:
            progress("calibration-choice", len(scores), len(CALIBRATION_METHODS), f"{method}: {value:.4g}")
    method, ranges = best
    trials.calibration = ranges
    trials.config = replace(trials.config, calibration=method)
    return replace(config, calibration=method), scores


def _rank(trials: Trials, model: Model, samples: dict[str, np.ndarray], config: QuantConfig,
          rank_metric: str, eval_samples: dict[str, np.ndarray] | None, labels: np.ndarray | None,
          progress: Progress | None):
    """The sensitivity ranking (most sensitive layer first), the noise each fallback
    unit removes (empty unless ranked by sqnr: then the order is the ranking's), and
    the units: each layer alone, and, with sqnr, each activation with its writer and
    readers (`_unit_gains`)."""
    layers = trials.layers()
    units: dict[str, tuple[str, ...]] = {name: (name,) for name in layers}
    if rank_metric != "sqnr":
        ranking = layer_sensitivity(model, samples, rank_metric, config=config, labels=labels,
                                    eval_samples=eval_samples, progress=progress, trials=trials)
        return ranking, {}, units
    scores = local_sqnr(trials, config, eval_samples if eval_samples is not None else samples,
                        progress=progress)
    ranking = sorted(((n, scores.get(n, float("inf"))) for n in layers), key=lambda s: (s[1], s[0]))
    noise = {key: _noise_ratio(score) for key, score in scores.items()}
    return ranking, _unit_gains(trials.base, layers, noise, units), units


@dataclass
class _Plan:
    """The fallback's units in the order they return to fp32, what each costs, and the
    latency budget: seconds the fully quantized model is faster than fp32 by (infinite
    without ``latency``, when every layer costs 1)."""

    units: dict[str, tuple[str, ...]]
    latency: bool
    costs: dict[str, float] = field(default_factory=dict)  # per layer, seconds
    budget: float = float("inf")
    order: list[str] = field(default_factory=list)
    faster: list[str] = field(default_factory=list)  # measured faster in fp32: always fp32

    @property
    def start(self) -> int:
        """Units always returned to fp32: the search starts after them."""
        return len(self.faster)

    def unit_cost(self, unit: str) -> float:
        if self.latency:
            return sum(self.costs.get(n, 0.0) for n in self.units[unit])
        return float(len(self.units[unit]))

    def cost_of(self, nodes: list[str]) -> float:
        return sum(self.costs.get(n, 0.0) for n in nodes)

    def fp32_nodes(self, k: int) -> list[str]:
        """The layers of the first ``k`` units."""
        return list(dict.fromkeys(n for unit in self.order[:k] for n in self.units[unit]))

    def order_units(self, layers: list[str], ranking: list[tuple[str, float]],
                    gain: dict[str, float]) -> None:
        """Layers measured faster in fp32 than in int8 here first, whatever their
        accuracy; then the units by noise removed per second of latency added (with
        ``gain``), or the layers in ``ranking`` order."""
        costs = self.costs
        self.faster = sorted((n for n in layers if self.latency and costs.get(n, 0.0) < 0),
                             key=lambda n: (costs[n], n))
        if gain:
            # A floor on the cost: a unit measured as free (kernels too short to time)
            # is not ranked first for that alone.
            floor = (max(self.budget / max(len(layers), 1) * 0.1, 1e-7)
                     if self.latency and self.budget > 0 else 1e-7)
            self.order = self.faster + sorted(
                (u for u in gain if u not in self.faster),
                key=lambda u: (-gain[u] / max(self.unit_cost(u), floor), u))
        else:
            self.order = self.faster + [name for name, _ in ranking if name not in self.faster]

    def affordable(self) -> tuple[int, bool]:
        """The most units the search may return to fp32 (more would make the model
        slower than fp32, by the measured costs), and whether any prefix is cheaper
        than fp32 at all."""
        budget = self.budget - self.cost_of(self.faster)  # the always-fp32 ones save time
        if self.latency and budget <= 0:
            # Measured no faster than fp32 already: no fallback will be (the planner,
            # which measures every candidate against fp32, then ships fp32); the search
            # still finds what holds the tolerance, for the report.
            return len(self.order), False
        if self.latency:
            for k in range(self.start + 1, len(self.order) + 1):
                if self.cost_of(self.fp32_nodes(k)) - self.cost_of(self.faster) >= budget:
                    return k - 1, True
        return len(self.order), True


def _shortest_holding_prefix(holds, start: int, stop: int) -> int | None:
    """The least k in [start, stop] with ``holds(k)``, holding being monotone in k:
    tries start, start + 1, start + 2, start + 4, ... (stop last), then bisects between
    the last that failed and the first that held. None when none up to stop holds."""
    held_at = None
    failed_at = start - 1
    k = start
    while k <= stop:
        if holds(k):
            held_at = k
            break
        failed_at = k
        step = max(k - start, 1)  # start, then 1, 2, 4, ... units past it
        k = min(k + step, stop) if k < stop else stop + 1
    if held_at is None:
        return None
    low, high = failed_at, held_at  # low fails, high holds
    while high - low > 1:
        mid = (low + high) // 2
        if holds(mid):
            high = mid
        else:
            low = mid
    return high


def _measured_seconds(trials: Trials, config: QuantConfig, feed: dict[str, np.ndarray],
                      threads: int) -> float:
    """The profiled seconds of the model quantized by ``config`` (`executed.profile`)."""
    from edgec.quantization.executed import profile

    mixed = copy_model(trials.base)
    apply(mixed, trials.calibration, config)
    return profile(export_model(mixed), feed, runs=3, threads=threads,
                   base_dir=mixed.base_dir).seconds()


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
