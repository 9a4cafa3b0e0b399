"""The planner's search: which configurations to try, in which order, and which one wins.

A configuration is a precision (with its op-type policy), an optional pruning level
and a backend, expressed as pass-pipeline text appended to the base pipeline — so a
candidate is reproducible with ``edgec opt -p``. Candidates are tried in order of
expected cost to the model (least intrusive first): fp32; fp16 where the target runs
it fast; int8 on the compute-heavy ops; int8 everywhere; int8 in contiguous regions
(every node onnxruntime runs in int8); int8 with per-layer fp32 fallback from there;
then the same with pruning, at half and at the full allowed sparsity. An int8
configuration measured slower than fp32 is never chosen (`reject_slower_than_fp32`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edgec.backends import auto_backends, capabilities
from edgec.diagnostics import EdgecError

if TYPE_CHECKING:
    from edgec.dsl.spec import Spec, Target


@dataclass(frozen=True)
class Configuration:
    label: str            # what a person reads: "int8 (Conv, MatMul, Gemm) on ort"
    precision: str        # fp32 | fp16 | int8
    policy: str           # "" | "compute-ops" | "all-ops" | "contiguous" | "dynamic" |
    #                       "per-layer-fallback"; "+dynamic": LSTM/attention dynamic int8 too
    passes: str           # pipeline text run after the base pipeline ("" for none)
    backend: str          # a name in edgec.backends.backend_names()
    sparsity: float = 0.0

    @property
    def group(self) -> tuple:
        """Configurations that differ only in backend form a group: with backend auto
        the planner measures each and keeps the faster (DESIGN: auto uses whichever
        backend measured faster for this model on this target)."""
        return (self.precision, self.policy, self.sparsity)

    def to_json(self) -> dict:
        return {"label": self.label, "precision": self.precision, "policy": self.policy,
                "passes": self.passes, "backend": self.backend, "sparsity": self.sparsity}


@dataclass(frozen=True)
class Skipped:
    """A configuration the spec allows but that cannot be tried here, and why."""

    label: str
    reason: str


@dataclass
class Evaluation:
    """What trying one configuration gave."""

    config: Configuration
    latency_s: float | None = None        # at the spec's percentile
    latency_where: str | None = None      # host | rpc://... | estimated
    accuracy_value: float | None = None
    accuracy_held: bool | None = None
    accuracy_detail: str = ""
    accuracy_figures: dict | None = None      # the metric's other figures (per sample, ...)
    accuracy_scored_on: str | None = None     # module | onnx-proxy
    accuracy_scored_where: str | None = None  # host | rpc://...
    size_bytes: int | None = None
    budgets: list[dict] = field(default_factory=list)
    error: str | None = None              # the build or a pass failed
    stats: dict = field(default_factory=dict)
    tuned: bool = True

    @property
    def held(self) -> bool:
        return self.error is None and bool(self.budgets) and \
            all(b["status"] == "held" for b in self.budgets)

    def missed(self) -> list[dict]:
        return [b for b in self.budgets if b["status"] != "held"]

    def rejection(self) -> str:
        if self.error:
            return self.error
        return "; ".join(f"{b['name']} {b['status']}: {b['detail']}" for b in self.missed())


def _metric_text(metric: str) -> str:
    """A metric as a pass option's value: quoted when it has options ("iou threshold 0.3")."""
    return f'"{metric}"' if " " in metric else metric


def _tolerance_text(tolerance) -> str:
    value, unit = getattr(tolerance, "value", tolerance), getattr(tolerance, "unit", "")
    return f"{value:g}{unit or ''}"


def backend_pipeline(backend: str) -> str:
    """The default pass pipeline for ``backend``: with the pass options and final passes
    its capabilities ask for."""
    from edgec.passmgr import default_pipeline

    needs = capabilities(backend)
    return default_pipeline(needs.pass_options, needs.final_passes)


def _backends_for(backend_choice: str, skipped: list[Skipped]) -> list[str]:
    """The backends to try: those `auto` tries (cheap builds first), or the one named.
    A named backend that is unknown or broken is left to the build to report, where it
    is an error; a broken plugin that auto would have asked is a skipped line."""
    if backend_choice != "auto":
        return [backend_choice]
    names, broken = auto_backends()
    skipped += [Skipped(f"backend {name}", why) for name, why in broken]
    return names


def _precisions_of(backend: str) -> tuple[tuple[str, ...], dict[str, str]]:
    try:
        declared = capabilities(backend)
    except EdgecError:
        # Unknown or broken: planned as fp32 so that building it reports why.
        return ("fp32", "fp16", "int8"), {}
    return declared.precisions, dict(declared.precision_notes)


def configurations(spec: Spec, target: Target, backend_choice: str,
                   available_passes: set[str], model_ops: frozenset[str] | None = None,
                   ) -> tuple[list[Configuration], list[Skipped]]:
    """Every configuration the spec allows, cheapest first, and those skipped with why.
    Which backends run which precision is what each declares (`Capabilities`).
    ``model_ops``: the model's op types, every graph's (None: not known); the dynamic
    LSTM/attention candidates are offered only to a model that has an LSTM or the ops
    of an attention."""
    opt = spec.optimize
    precisions = opt.precisions
    skipped: list[Skipped] = []
    candidates = _backends_for(backend_choice, skipped)
    declared = {b: _precisions_of(b) for b in candidates}
    runs = {p: [b for b in candidates if p in declared[b][0]] for p in ("fp32", "fp16", "int8")}

    def no_kernels(precision: str) -> bool:
        if runs[precision]:
            return False
        notes = [(f"{b}: " if len(candidates) > 1 else "") + declared[b][1][precision]
                 for b in candidates if precision in declared[b][1]]
        reason = (f"the {backend_choice} backend has no {precision} kernels"
                  if backend_choice != "auto" else
                  f"no backend that auto tries has {precision} kernels")
        if notes:
            reason += f" ({'; '.join(notes)})"
        able = [b for b in auto_backends()[0] if precision in capabilities(b).precisions]
        if able and backend_choice != "auto":
            reason += f"; use backend {' or '.join(able)} or auto"
        skipped.append(Skipped(precision, reason))
        return True

    def need(pass_name: str, label: str) -> bool:
        if pass_name in available_passes:
            return True
        skipped.append(Skipped(label, f"the pass '{pass_name}' is not installed"))
        return False

    base: list[tuple[str, str, str, list[str]]] = []  # (label, precision, policy, passes)
    if "fp32" in precisions and not no_kernels("fp32"):
        base.append(("fp32", "fp32", "", []))
    if "fp16" in precisions and not no_kernels("fp16"):
        if "fp16" not in target.fast_precisions:
            skipped.append(Skipped("fp16", f"{target.name} does not run fp16 fast "
                                           f"(fast: {', '.join(target.fast_precisions)})"))
        elif need("convert-fp16", "fp16"):
            base.append(("fp16", "fp16", "", ["convert-fp16"]))
    if "int8" in precisions and not no_kernels("int8"):
        if need("quantize-int8", "int8"):
            # Written out, so that `edgec opt -p` (which has no target) reproduces it:
            # 7-bit weights only where the target's u8 x s8 pairs saturate.
            reduce = f"reduce-range={'true' if target.int8_saturates else 'false'}"
            base.append(("int8 (Conv, MatMul, Gemm)", "int8", "compute-ops",
                         [f"quantize-int8{{ops=Conv,MatMul,Gemm {reduce}}}"]))
            base.append(("int8 (all ops)", "int8", "all-ops", [f"quantize-int8{{ops=all {reduce}}}"]))
            # Every node onnxruntime runs in int8, in contiguous regions: the fastest
            # int8 form, and where the per-layer fallback starts.
            base.append(("int8 (contiguous regions)", "int8", "contiguous",
                         [f"quantize-int8{{placement=contiguous {reduce}}}"]))
            # LSTM and fused Attention have no int8 kernel in QDQ form; onnxruntime runs
            # them in int8 only as DynamicQuantizeLSTM / QAttention (quantize-dynamic).
            # Alone, and after each static policy; a model without either gives the same
            # model as the candidate before, which is then not built again.
            if may_have_lstm_or_attention(model_ops) and need("quantize-dynamic",
                                                               "int8 LSTM and attention"):
                dynamic = f"quantize-dynamic{{ops=LSTM,Attention {reduce}}}"
                static = [entry for entry in base if entry[1] == "int8"]
                base.append(("int8 (LSTM, attention; dynamic)", "int8", "dynamic", [dynamic]))
                for label, _, policy, passes in static:
                    base.append((f"{label} + dynamic LSTM, attention", "int8",
                                 f"{policy}+dynamic", [*passes, dynamic]))
            if opt.per_layer_fallback:
                # It starts from the calibration method the fully quantized model scores
                # best with (one observation of the model serves all three methods).
                tol = _tolerance_text(spec.accuracy.tolerance)
                base.append(("int8 with per-layer fp32 fallback", "int8", "per-layer-fallback",
                             [f"quantize-int8{{placement=contiguous calibration=auto fallback=per-layer "
                              f"metric={_metric_text(spec.accuracy.metric)} tolerance={tol} "
                              f"{reduce}}}"]))
    levels = [0.0]
    prune_pass = None
    if opt.pruning.sparsity is not None:
        full = opt.pruning.fraction
        prune_pass = "prune-channels" if opt.pruning.structured else "prune-unstructured"
        if need(prune_pass, f"pruning up to {full:.0%}"):
            levels += sorted({round(full / 2, 4), round(full, 4)})
    configs: list[Configuration] = []
    for sparsity in levels:
        for label, precision, policy, passes in base:
            backends = runs[precision]
            prune = [f"{prune_pass}{{sparsity={sparsity:g}}}"] if sparsity else []
            for backend in backends:
                text = ",".join([*prune, *passes, *(["dce"] if passes or prune else [])])
                name = label + (f", {sparsity:.0%} pruned" if sparsity else "") + f" on {backend}"
                configs.append(Configuration(name, precision, policy, text, backend, sparsity))
    return configs, skipped


def may_have_lstm_or_attention(ops: frozenset[str] | None) -> bool:
    """Whether quantize-dynamic{ops=LSTM,Attention} can change a model with these op
    types: an LSTM, a fused Attention, or the Softmax feeding a MatMul that fuse makes
    one of (``Softmax->MatMul``, see plan._op_types; a classifier's MatMul head and
    output Softmax are not one)."""
    return ops is None or bool(ops & {"LSTM", "Attention", "Softmax->MatMul"})


def reject_slower_than_fp32(evaluations: list[Evaluation]) -> Evaluation | None:
    """Mark every int8 evaluation measured slower than the fastest fp32 one (measured
    the same way, same place) as missing a "not slower than fp32" budget: int8 that
    runs slower than fp32 is never the one shipped. Returns that fp32 evaluation."""
    fp32 = [e for e in evaluations if e.config.precision == "fp32" and e.error is None
            and e.latency_s is not None and e.config.sparsity == 0]
    if not fp32:
        return None
    reference = min(fp32, key=lambda e: e.latency_s)
    for e in evaluations:
        if e.config.precision != "int8" or e.error is not None or e.latency_s is None \
                or e.latency_where != reference.latency_where:
            continue
        slower = e.latency_s > reference.latency_s
        e.budgets.append({
            "name": "not-slower-than-fp32", "status": "missed" if slower else "held",
            "detail": (f"{e.latency_s * 1e3:.3g} ms against {reference.config.label}'s "
                       f"{reference.latency_s * 1e3:.3g} ms ({e.latency_where})")})
    return reference


# A winner's first measurement is one timing, minutes from its rivals' on a machine that
# may be busy: on the crnn corpus model two candidates 0.63x and 0.55x fp32 apart (their
# medians over 15 interleaved rounds) were first measured in the wrong order. Rivals
# within this margin of the winner (or within its own measured spread, p90 against p50,
# up to RUNOFF_MAX_MARGIN) are timed again side by side before one is shipped.
RUNOFF_MARGIN = 0.15
RUNOFF_MAX_MARGIN = 0.30
RUNOFF_CONTENDERS = 3   # the winner and its closest rivals, at most


def runoff_margin(winner: Evaluation, spread: float | None = None) -> float:
    """How far behind the winner's first latency a rival may be and still contend:
    RUNOFF_MARGIN, or the winner's own ``spread`` ((p90 - p50) / p50 of its first
    measurement) where that is wider, up to RUNOFF_MAX_MARGIN."""
    return min(max(RUNOFF_MARGIN, spread or 0.0), RUNOFF_MAX_MARGIN)


def close_contenders(evaluations: list[Evaluation], winner: Evaluation, search: str,
                     margin: float) -> list[Evaluation]:
    """The winner and the rivals `choose` could have picked in its place (they hold every
    budget; with ``search first``, in the winner's group) whose latency, measured where
    the winner's was, is within ``margin`` of it: the RUNOFF_CONTENDERS fastest, winner
    first. Estimated latencies are not timed again: only measured ones contend."""
    if winner.latency_s is None or winner.latency_where == "estimated":
        return [winner]
    rivals = [e for e in evaluations if e is not winner and e.held
              and (search == "fastest" or e.config.group == winner.config.group)
              and e.latency_s is not None and e.latency_where == winner.latency_where
              and e.latency_s <= winner.latency_s * (1 + margin)]
    rivals.sort(key=lambda e: e.latency_s)
    return [winner, *rivals[:RUNOFF_CONTENDERS - 1]]


def choose(evaluations: list[Evaluation], search: str) -> tuple[Evaluation | None, Evaluation]:
    """(the configuration to ship or None if none holds every budget, the best one tried).

    With ``search first`` the first group (configurations that differ only in backend)
    holding every budget wins, and within it the fastest backend; with ``fastest`` the
    fastest that holds. When none holds, the best is the one with the fewest missed
    budgets, then the smallest latency."""
    holding = [e for e in evaluations if e.held]
    if holding:
        if search != "fastest":
            first_group = holding[0].config.group
            holding = [e for e in holding if e.config.group == first_group]
        winner = min(holding, key=lambda e: (e.latency_s is None, e.latency_s or 0.0))
        return winner, winner
    built = [e for e in evaluations if e.error is None] or evaluations
    best = min(built, key=lambda e: (len(e.missed()) if e.error is None else 99,
                                     e.latency_s if e.latency_s is not None else float("inf")))
    return None, best


def summary(evaluations: list[Evaluation], best: Evaluation, spec) -> list[str]:
    """What a person can act on when no configuration holds every budget."""
    lines = [f"best candidate: {best.config.label}"]
    for b in best.missed():
        lines.append(f"  misses {b['name']}: {b['detail']}")
    lat = spec.budget.latency
    if lat is not None:
        fast = [e for e in evaluations if e.latency_s is not None and e.latency_s <= lat.seconds
                and e.error is None]
        for e in fast:
            # Only when the tolerance is all it misses: relaxing it must be enough to ship.
            if e.accuracy_held is False and all(b["status"] == "held" for b in e.budgets
                                                if b["name"] != "accuracy"):
                lines.append(f"{e.config.label} meets {lat.limit} ({e.latency_s * 1e3:.3g} ms, "
                             f"{e.latency_where}) but {e.accuracy_detail}: relax the tolerance "
                             "to ship it")
                break
    accurate = [e for e in evaluations if e.accuracy_held and e.latency_s is not None]
    if lat is not None and accurate and not any(e.held for e in evaluations):
        quickest = min(accurate, key=lambda e: e.latency_s)
        if quickest.latency_s > lat.seconds:
            lines.append(f"the fastest configuration within the tolerance is "
                         f"{quickest.config.label} at {quickest.latency_s * 1e3:.3g} ms "
                         f"({quickest.latency_where}): the latency budget would have to be "
                         f"{quickest.latency_s / lat.seconds:.2f}x larger")
    return lines
