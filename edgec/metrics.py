"""Accuracy metrics: how far a compiled model's outputs are from the fp32 model's.

Each metric compares candidate outputs with reference outputs (same inputs, leading
axis = sample, first output scored) and reports a score plus whether a spec tolerance
holds. Built-ins:

- ``top1-agreement``: the class (argmax over the last axis) agrees, *per position* for
  outputs with extra axes ([N, T, C]: one class per (n, t)); the score is the share of
  positions that agree, and the share of samples whose every position agrees is
  reported beside it (``figures``).
- ``sequence-agreement blank B``: the per-position classes, decoded as CTC decodes
  them (repeats merged, then the blank index B, default 0, dropped), are the same
  sequence; the score is the share of samples whose sequences are equal.
- ``iou threshold X`` / ``dice threshold X``: maps thresholded at X (default 0.5), the
  overlap of the candidate's with the fp32 model's, averaged over samples.
- ``accuracy`` (against labels), ``max-abs-error``, ``cosine-similarity``, ``sqnr``.

A metric is named by its text as a spec writes it, options included
(``"sequence-agreement blank 0"``, ``"iou threshold 0.3"``): `parse_metric` reads it.
Plugins add metrics through the ``edgec.metrics`` entry-point group: the entry point
names the metric and resolves to a callable ``(reference, candidate, labels) -> float``
plus an optional attribute ``higher_is_better`` (default True); docs/metrics.md has an
example.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edgec.diagnostics import Diagnostic, UsageError

# Options a built-in metric takes (written after its name: `metric iou threshold 0.3`)
# and their defaults.
METRIC_OPTIONS: dict[str, dict[str, float]] = {
    "sequence-agreement": {"blank": 0},
    "iou": {"threshold": 0.5},
    "dice": {"threshold": 0.5},
}


def parse_metric(text: str) -> tuple[str, dict[str, float]]:
    """A metric's name and options (defaults filled in) from its text: the name, then
    ``key value`` pairs (``"sequence-agreement blank 0"``). A `UsageError` names an
    option the metric does not take or a value that is not a number."""
    words = str(text).split()
    if not words:
        raise UsageError(Diagnostic.error("no metric named"))
    name, rest = words[0], words[1:]
    options = dict(METRIC_OPTIONS.get(name, {}))
    if len(rest) % 2:
        raise UsageError(Diagnostic.error(
            f"metric '{text}': options are 'key value' pairs (e.g. 'iou threshold 0.5')"))
    for key, value in zip(rest[0::2], rest[1::2]):
        if key not in options:
            takes = ", ".join(METRIC_OPTIONS.get(name, {})) or "no options"
            raise UsageError(Diagnostic.error(
                f"metric '{name}' has no option '{key}' (it takes: {takes})"))
        try:
            options[key] = float(value)
        except ValueError:
            options[key] = float("nan")
        if not np.isfinite(options[key]):
            raise UsageError(Diagnostic.error(
                f"metric '{name}': option '{key}' is a number, not '{value}'"))
    if "blank" in options:
        blank = options["blank"]
        if blank < 0 or blank != int(blank):
            raise UsageError(Diagnostic.error(
                f"metric '{name}': blank is a class index (0, 1, ...), not {blank:g}"))
        options["blank"] = int(blank)
    return name, options


def metric_name(text: str) -> str:
    """The metric's name without its options."""
    return str(text).split()[0] if str(text).split() else ""


@dataclass(frozen=True)
class MetricResult:
    metric: str
    value: float           # the score: agreement fraction, max abs error, cosine, dB
    reference_value: float  # the fp32 model's own score (1.0 agreement, 0 error, inf dB ...)
    held: bool
    detail: str            # e.g. "98.9 % agreement; tolerance allows a 1 % drop"
    # Other figures of the same comparison, e.g. {"per_position": 0.98, "per_sample":
    # 0.9} for top-1 agreement on a sequence output; the tolerance judges ``value``.
    figures: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"metric": self.metric, "value": _finite(self.value),
                "reference": _finite(self.reference_value), "held": self.held,
                "detail": self.detail,
                **({"figures": {k: _finite(v) if isinstance(v, float) else v
                                for k, v in self.figures.items()}} if self.figures else {})}


def _finite(x: float):
    return x if np.isfinite(x) else ("inf" if x > 0 else "-inf")


def _flat(outputs: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(o, dtype=np.float64).reshape(-1) for o in outputs])


def top1(outputs: np.ndarray) -> np.ndarray:
    """Class index per sample: argmax over everything but the sample axis (what labels
    name: one class per sample)."""
    o = np.asarray(outputs)
    return o.reshape(o.shape[0], -1).argmax(axis=-1) if o.ndim > 1 else o


def predictions(output: np.ndarray) -> np.ndarray:
    """Class per position, shape [samples, positions]: axes of size 1 (other than the
    sample axis) are dropped, the last remaining axis holds the classes (argmax over
    it), and the axes between are the positions ([N, T, C] -> [N, T]; [N, C] and
    [N, 1, C] -> [N, 1]). An integer or bool output already holds classes (a model
    that ends in ArgMax): its values are the predictions, one per position."""
    o = np.asarray(output)
    if o.ndim == 0:
        o = o.reshape(1)
    if o.dtype.kind in "iub" or o.ndim == 1:  # classes already, or one value per sample
        return o.reshape(o.shape[0], -1)
    kept = [d for d in o.shape[1:] if d != 1]
    if not kept:  # one class: its argmax is 0 everywhere (cannot_discriminate says so)
        return np.zeros((o.shape[0], 1), np.int64)
    o = o.reshape([o.shape[0]] + kept)
    return o.argmax(axis=-1).reshape(o.shape[0], -1)


def ctc_collapse(classes: np.ndarray, blank: int = 0) -> tuple[int, ...]:
    """The sequence CTC greedy decoding reads from one sample's per-position classes:
    runs of one class merged into one, then the blank class dropped
    ([0, 3, 3, 0, 3, 5, 5] -> (3, 3, 5))."""
    c = np.asarray(classes).reshape(-1)
    if c.size == 0:
        return ()
    keep = np.ones(c.shape, bool)
    keep[1:] = c[1:] != c[:-1]
    keep &= c != blank
    return tuple(int(x) for x in c[keep])


def _binary_maps(output: np.ndarray, threshold: float) -> np.ndarray:
    o = np.asarray(output)
    o = o.reshape(o.shape[0], -1) if o.ndim else o.reshape(1, 1)
    return o > threshold


def _overlap(reference: np.ndarray, candidate: np.ndarray, threshold: float, kind: str):
    """Per-sample IoU or Dice of the thresholded maps (1 where both are empty), and the
    pooled figure over all samples."""
    r, c = _binary_maps(reference, threshold), _binary_maps(candidate, threshold)
    inter = (r & c).sum(axis=1).astype(np.float64)
    if kind == "iou":
        whole = (r | c).sum(axis=1).astype(np.float64)
        scale = 1.0
    else:
        whole = (r.sum(axis=1) + c.sum(axis=1)).astype(np.float64)
        scale = 2.0
    per_sample = np.where(whole > 0, scale * inter / np.maximum(whole, 1), 1.0)
    pooled = float(scale * inter.sum() / whole.sum()) if whole.sum() else 1.0
    return per_sample, pooled


def _drop_text(tol_fraction: float) -> str:
    return f"tolerance allows a {tol_fraction * 100:g} % drop"


def evaluate(metric: str, tolerance, reference: list[np.ndarray], candidate: list[np.ndarray],
             labels: np.ndarray | None = None) -> MetricResult:
    """Score ``candidate`` against ``reference`` (lists of arrays, first output first;
    leading axis = sample) with the spec's metric (its text, options included) and
    tolerance (a dsl Quantity)."""
    text = metric
    metric, options = parse_metric(metric)
    if isinstance(tolerance, str):  # "1%", "30dB", "0.05" (pass options, the planner)
        tol_text = tolerance.strip()
        unit = "%" if tol_text.endswith("%") else ("dB" if tol_text.lower().endswith("db") else None)
        tol_unit, tol_value = unit, float(tol_text.rstrip("%").removesuffix("dB").removesuffix("db").strip())
    else:
        tol_unit = getattr(tolerance, "unit", None)
        tol_value = float(getattr(tolerance, "value", tolerance))
    tol_fraction = tol_value / 100 if tol_unit == "%" else tol_value
    if metric in ("top1-agreement", "sequence-agreement"):
        ref, cand = predictions(reference[0]), predictions(candidate[0])
        same = ref == cand
        samples, positions = same.shape
        per_position = float(np.mean(same)) if same.size else 1.0
        per_sample = float(np.mean(same.all(axis=1))) if samples else 1.0
        figures = {"per_position": per_position, "per_sample": per_sample,
                   "samples": samples, "positions": positions}
        if metric == "sequence-agreement":
            blank = options["blank"]
            equal = [ctc_collapse(a, blank) == ctc_collapse(b, blank) for a, b in zip(ref, cand)]
            value = float(np.mean(equal)) if equal else 1.0
            figures = {"sequence_agreement": value, **figures, "blank": blank}
            detail = (f"{value * 100:.2f} % of {samples} sequences agree with fp32 after CTC "
                      f"decoding (blank {blank}; per position: {per_position * 100:.2f} %); "
                      f"{_drop_text(tol_fraction)}")
        elif positions > 1:
            value = per_position
            detail = (f"{per_position * 100:.2f} % of {samples} x {positions} positions agree "
                      f"with fp32 (per sample, every position: {per_sample * 100:.2f} %); "
                      f"{_drop_text(tol_fraction)} per position")
        else:
            value = per_position
            figures = {}
            detail = f"{value * 100:.2f} % agreement with fp32; {_drop_text(tol_fraction)}"
        held = 1.0 - value <= tol_fraction + 1e-12
        return MetricResult(text, value, 1.0, bool(held), detail, figures)
    if metric in ("iou", "dice"):
        threshold = options["threshold"]
        per_sample, pooled = _overlap(reference[0], candidate[0], threshold, metric)
        value = float(per_sample.mean()) if per_sample.size else 1.0
        held = 1.0 - value <= tol_fraction + 1e-12
        name = "IoU" if metric == "iou" else "Dice"
        figures = {"mean_per_sample": value, "pooled": pooled,
                   "lowest_sample": float(per_sample.min()) if per_sample.size else 1.0,
                   "threshold": threshold, "samples": int(per_sample.size)}
        return MetricResult(text, value, 1.0, bool(held),
                            f"{name} {value:.4f} with fp32's map at threshold {threshold:g} "
                            f"(mean over {per_sample.size} samples; pooled {pooled:.4f}, "
                            f"lowest {figures['lowest_sample']:.4f}); "
                            f"{_drop_text(tol_fraction)}", figures)
    if metric == "accuracy":
        if labels is None:
            raise UsageError(Diagnostic.error("metric 'accuracy' needs labels in the spec"))
        ref = float(np.mean(top1(reference[0]) == labels[:len(reference[0])]))
        cand = float(np.mean(top1(candidate[0]) == labels[:len(candidate[0])]))
        held = ref - cand <= tol_fraction + 1e-12
        return MetricResult(metric, cand, ref, bool(held),
                            f"{cand * 100:.2f} % accuracy (fp32: {ref * 100:.2f} %); tolerance "
                            f"allows a {tol_fraction * 100:g} point drop")
    r, c = _flat(reference), _flat(candidate)
    if metric == "max-abs-error":
        err = float(np.max(np.abs(r - c))) if r.size else 0.0
        if tol_unit == "%":
            bound = tol_fraction * float(np.max(np.abs(r)) if r.size else 0.0)
            shown = f"{tol_value:g} % of max |fp32| = {bound:.3g}"
        else:
            bound, shown = tol_value, f"{tol_value:g}"
        return MetricResult(metric, err, 0.0, bool(err <= bound),
                            f"max abs error {err:.3g}; tolerance {shown}")
    if metric == "cosine-similarity":
        denom = float(np.linalg.norm(r) * np.linalg.norm(c))
        cos = float(np.dot(r, c) / denom) if denom else (1.0 if np.array_equal(r, c) else 0.0)
        held = 1.0 - cos <= tol_fraction + 1e-12
        return MetricResult(metric, cos, 1.0, bool(held),
                            f"cosine similarity {cos:.6f}; tolerance allows a {tol_fraction:g} drop")
    if metric == "sqnr":
        noise = float(np.sum((r - c) ** 2))
        signal = float(np.sum(r ** 2))
        db = float("inf") if noise == 0 else float(10 * np.log10(signal / noise)) if signal else float("-inf")
        return MetricResult(metric, db, float("inf"), bool(db >= tol_value),
                            f"SQNR {db:.1f} dB; floor {tol_value:g} dB")
    fn = plugin_metrics().get(metric)
    if fn is None:
        raise UsageError(Diagnostic.error(f"unknown metric '{metric}'"))
    value = float(fn(reference, candidate, labels))
    higher = getattr(fn, "higher_is_better", True)
    reference_value = float(fn(reference, reference, labels))
    drop = reference_value - value if higher else value - reference_value
    return MetricResult(metric, value, reference_value, bool(drop <= tol_value),
                        f"{metric} {value:.4g} (fp32: {reference_value:.4g}); tolerance {tol_value:g}")


BUILTIN_METRICS = ("top1-agreement", "accuracy", "max-abs-error", "cosine-similarity", "sqnr",
                   "sequence-agreement", "iou", "dice")


def higher_is_better(metric: str) -> bool:
    """Whether a larger score is better (all built-ins but max-abs-error; plugins say
    so with their ``higher_is_better`` attribute)."""
    metric = metric_name(metric)
    if metric in BUILTIN_METRICS:
        return metric != "max-abs-error"
    fn = plugin_metrics().get(metric)
    if fn is None:
        raise UsageError(Diagnostic.error(f"unknown metric '{metric}'"))
    return bool(getattr(fn, "higher_is_better", True))


_plugins: dict[str, Callable] | None = None


def plugin_metrics() -> dict[str, Callable]:
    """Metrics from the ``edgec.metrics`` entry points (failing ones are skipped)."""
    global _plugins
    if _plugins is None:
        _plugins = {}
        for ep in importlib.metadata.entry_points(group="edgec.metrics"):
            try:
                _plugins[ep.name] = ep.load()
            except (Exception, SystemExit):  # a broken plugin metric must not break the built-ins
                continue
    return _plugins


def format_value(metric: str, value) -> str:
    """A score as a person reads it, in the metric's unit: "99.72 %" agreement, "37.7 dB"
    SQNR, "0.999998" cosine, "0.9731" IoU; a plugin's score as a plain number."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "" if value is None else str(value)
    metric = metric_name(metric)
    if metric in ("top1-agreement", "accuracy", "sequence-agreement"):
        return f"{value * 100:.2f} %"
    if metric == "sqnr":
        return "identical (no noise)" if value == float("inf") else f"{value:.1f} dB"
    if metric == "cosine-similarity":
        return f"{value:.6f}"
    if metric in ("iou", "dice"):
        return f"{value:.4f}"
    return f"{value:.4g}"


def cannot_discriminate(metric: str, reference: list[np.ndarray]) -> str | None:
    """Why ``metric`` measures nothing on these samples, or None. A top-1 metric on
    samples where the fp32 model predicts one class everywhere (a random-weight model
    fed noise) reads 100 % for almost any candidate; so does sequence agreement where
    every sample decodes to the same sequence (all blank, say), and IoU or Dice where
    the fp32 model's map is on one side of the threshold everywhere."""
    text = metric
    name, options = parse_metric(metric)
    if not reference or not np.ndim(reference[0]) or not len(reference[0]):
        return None
    count = len(reference[0])
    advice = "give the spec representative data"
    if name in ("iou", "dice"):
        maps = _binary_maps(reference[0], options["threshold"])
        if maps.any() and not maps.all():
            return None
        side = "above" if maps.all() else "below"
        return (f"the fp32 model's map is {side} the threshold {options['threshold']:g} "
                f"everywhere on all {count} samples scored, so {name} cannot tell a good "
                f"candidate from a bad one on this data: {advice}, or set the threshold "
                f"('metric {name} threshold X') where the map changes")
    if count < 2:
        return None
    if name == "accuracy" or (name == "top1-agreement" and predictions(reference[0]).shape[1] == 1):
        classes = np.unique(top1(reference[0]))
        if len(classes) > 1:
            return None
        return (f"the fp32 model predicts class {int(classes[0])} for all {count} "
                f"samples scored, so {text} cannot tell a good candidate from a bad one on this "
                f"data: {advice}, or use metric sqnr or cosine-similarity")
    if name == "top1-agreement":
        classes = np.unique(predictions(reference[0]))
        if len(classes) > 1:
            return None
        return (f"the fp32 model predicts class {int(classes[0])} at every position of all "
                f"{count} samples scored, so {text} cannot tell a good candidate from a bad "
                f"one on this data: {advice}, or use metric sqnr or cosine-similarity")
    if name == "sequence-agreement":
        blank = options["blank"]
        decoded = {ctc_collapse(row, blank) for row in predictions(reference[0])}
        if len(decoded) > 1:
            return None
        only = decoded.pop()
        what = (f"an empty sequence (class {blank}, the blank, at every position)" if not only
                else f"the same sequence {list(only)[:8]}")
        return (f"the fp32 model decodes {what} for all {count} samples scored, so {text} "
                f"cannot tell a good candidate from a bad one on this data: {advice} (is the "
                f"blank index right? 'metric sequence-agreement blank N'), or use metric "
                f"top1-agreement (per position) or sqnr")
    return None
