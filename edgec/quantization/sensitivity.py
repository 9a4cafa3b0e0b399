"""Per-layer sensitivity and mixed precision: which quantized layers hurt the metric
most, and the smallest set of them to keep in fp32 so a tolerance holds.

``layer_sensitivity`` quantizes one layer at a time (everything else fp32) and scores
the metric against the fp32 model's outputs; ``mixed_precision`` starts from the full
int8 configuration and returns the most sensitive layers to fp32, one at a time, until
the tolerance holds. Both calibrate once and reuse the ranges for every trial. The
planner calls them directly; the ``quantize-int8{fallback=per-layer}`` pass uses them too.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from edgec.frontend import export_model, import_model
from edgec.ir.core import Model
from edgec.metrics import evaluate, higher_is_better
from edgec.progress import Progress
from edgec.quantization.arithmetic import run_exact
from edgec.quantization.observe import run
from edgec.quantization.qdq import (Calibration, QuantConfig, apply, calibrate, candidate_nodes,
                                    prepare)


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

    def to_json(self) -> dict:
        return {"metric": self.metric, "tolerance": str(self.tolerance),
                "sensitivity": [[n, _finite(s)] for n, s in self.sensitivity],
                "steps": self.steps, "kept-fp32": self.kept_fp32, "held": self.held}


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
    """(node name, score) for every layer the policy quantizes, most sensitive first:
    the score is ``metric`` of the model with only that layer quantized, against the
    fp32 model's outputs on ``eval_samples`` (default: the calibration ``samples``)."""
    trials = _trials or _Trials(model, samples, config, eval_samples, progress)
    layers = trials.layers()
    scores = []
    for done, name in enumerate(layers):
        result = trials.score(replace(config, only=(name,), exclude=()), metric, 0, labels)
        scores.append((name, float(result.value)))
        if progress is not None:
            progress("sensitivity", done + 1, len(layers), name)
    higher = higher_is_better(metric)
    return sorted(scores, key=lambda s: (s[1] if higher else -s[1], s[0]))


def mixed_precision(model: Model, samples: dict[str, np.ndarray], metric: str, tolerance, *,
                    config: QuantConfig = QuantConfig(),
                    eval_samples: dict[str, np.ndarray] | None = None,
                    labels: np.ndarray | None = None,
                    rank_metric: str = "sqnr",
                    progress: Progress | None = None,
                    exact: bool = False) -> tuple[QuantConfig, MixedPrecisionReport]:
    """The full int8 configuration with the most sensitive layers (ranked by
    ``rank_metric``, one at a time) returned to fp32 until ``metric`` holds
    ``tolerance`` (a number, or an object with ``value`` and ``unit`` like the spec's
    Quantity; "1%" style strings are accepted). The returned config's ``exclude``
    names the fp32 layers; the report says what each step scored. ``exact`` scores the
    trials on the exact int8 path (`arithmetic.run_exact`) instead of onnxruntime's
    int8 kernels."""
    tolerance = _tolerance(tolerance)
    trials = _Trials(model, samples, config, eval_samples, progress, exact=exact)
    ranking = layer_sensitivity(model, samples, rank_metric, config=config, labels=labels,
                                progress=progress, _trials=trials)
    report = MixedPrecisionReport(metric, tolerance, ranking)
    kept: list[str] = []
    candidates = [name for name, _ in ranking]
    for step in range(len(candidates) + 1):
        trial = replace(config, exclude=tuple(config.exclude) + tuple(kept))
        result = trials.score(trial, metric, tolerance, labels)
        report.steps.append({"fp32": list(kept), "value": _finite(result.value),
                             "held": bool(result.held), "detail": result.detail})
        if progress is not None:
            progress("mixed-precision", step + 1, len(candidates) + 1, result.detail)
        if result.held:
            report.kept_fp32, report.held = list(kept), True
            return trial, report
        if step < len(candidates):
            kept.append(candidates[step])
    report.kept_fp32 = list(kept)
    return replace(config, exclude=tuple(config.exclude) + tuple(kept)), report


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
