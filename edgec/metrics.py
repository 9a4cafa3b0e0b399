"""Accuracy metrics: how far a compiled model's outputs are from the fp32 model's.

Each metric compares candidate outputs with reference outputs (same inputs) and
reports a score plus whether a spec tolerance holds. Built-ins: top1-agreement,
max-abs-error, cosine-similarity, sqnr, accuracy (against labels). Plugins add
metrics through the ``edgec.metrics`` entry-point group: the entry point names the
metric and resolves to a callable ``(reference, candidate, labels) -> float`` plus
an optional attribute ``higher_is_better`` (default True).
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgec.diagnostics import Diagnostic, UsageError


@dataclass(frozen=True)
class MetricResult:
    metric: str
    value: float           # the score: agreement fraction, max abs error, cosine, dB
    reference_value: float  # the fp32 model's own score (1.0 agreement, 0 error, inf dB ...)
    held: bool
    detail: str            # e.g. "98.9 % agreement; tolerance allows a 1 % drop"

    def to_json(self) -> dict:
        return {"metric": self.metric, "value": _finite(self.value),
                "reference": _finite(self.reference_value), "held": self.held,
                "detail": self.detail}


def _finite(x: float):
    return x if np.isfinite(x) else ("inf" if x > 0 else "-inf")


def _flat(outputs: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(o, dtype=np.float64).reshape(-1) for o in outputs])


def top1(outputs: np.ndarray) -> np.ndarray:
    """Class index per sample: argmax over the last axis, one row per sample."""
    o = np.asarray(outputs)
    return o.reshape(o.shape[0], -1).argmax(axis=-1) if o.ndim > 1 else o


def evaluate(metric: str, tolerance, reference: list[np.ndarray], candidate: list[np.ndarray],
             labels: np.ndarray | None = None) -> MetricResult:
    """Score ``candidate`` against ``reference`` (lists of arrays, first output first;
    leading axis = sample) with the spec's metric and tolerance (a dsl Quantity)."""
    if isinstance(tolerance, str):  # "1%", "30dB", "0.05" (pass options, the planner)
        text = tolerance.strip()
        unit = "%" if text.endswith("%") else ("dB" if text.lower().endswith("db") else None)
        tol_unit, tol_value = unit, float(text.rstrip("%").removesuffix("dB").removesuffix("db").strip())
    else:
        tol_unit = getattr(tolerance, "unit", None)
        tol_value = float(getattr(tolerance, "value", tolerance))
    tol_fraction = tol_value / 100 if tol_unit == "%" else tol_value
    if metric == "top1-agreement":
        agree = float(np.mean(top1(reference[0]) == top1(candidate[0])))
        held = 1.0 - agree <= tol_fraction + 1e-12
        return MetricResult(metric, agree, 1.0, bool(held),
                            f"{agree * 100:.2f} % agreement with fp32; tolerance allows a "
                            f"{tol_fraction * 100:g} % drop")
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


BUILTIN_METRICS = ("top1-agreement", "accuracy", "max-abs-error", "cosine-similarity", "sqnr")


def higher_is_better(metric: str) -> bool:
    """Whether a larger score is better (all built-ins but max-abs-error; plugins say
    so with their ``higher_is_better`` attribute)."""
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
    SQNR, "0.999998" cosine; a plugin's score as a plain number."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "" if value is None else str(value)
    if metric in ("top1-agreement", "accuracy"):
        return f"{value * 100:.2f} %"
    if metric == "sqnr":
        return "identical (no noise)" if value == float("inf") else f"{value:.1f} dB"
    if metric == "cosine-similarity":
        return f"{value:.6f}"
    return f"{value:.4g}"


def cannot_discriminate(metric: str, reference: list[np.ndarray]) -> str | None:
    """Why ``metric`` measures nothing on these samples, or None: a top-1 metric on
    samples where the fp32 model predicts one class for all of them (a random-weight
    model fed noise) reads 100 % for almost any candidate."""
    if metric not in ("top1-agreement", "accuracy") or not reference or len(reference[0]) < 2:
        return None
    classes = np.unique(top1(reference[0]))
    if len(classes) > 1:
        return None
    return (f"the fp32 model predicts class {int(classes[0])} for all {len(reference[0])} "
            f"samples scored, so {metric} cannot tell a good candidate from a bad one on this "
            "data: give the spec representative data, or use metric sqnr or cosine-similarity")
