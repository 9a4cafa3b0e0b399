"""Static int8 quantization in QDQ form: ``y = Conv(x, W, b)`` ->
``y = DQ(Q(Conv(DQ(Q(x)), DQ(W_s8), DQ(b_s32))))``, which onnxruntime fuses into
QLinearConv (likewise QLinearMatMul / MatMulIntegerToFloat, QGemm, QLinearAdd, ...).

Ranges come from calibration on the spec's data (MinMax, percentile or KL entropy; with
``calibration=auto`` the one whose fully quantized model scores best on ``metric``
against fp32, each from one calibration run: stat ``calibration-chosen.<method>``);
weights are int8 symmetric per output channel, activations u8 asymmetric per tensor.
The op-type policy picks what is quantized: ``ops=Conv,MatMul,Gemm`` (default) or
``ops=all``; ``placement=contiguous`` instead quantizes every node onnxruntime runs in
int8 (asked of onnxruntime), in regions joined to a Conv/MatMul/Gemm.
BatchNormalization after a quantized Conv is folded into it first, and
Relu/Clip(0, ·) after a quantized op is folded into its output quantization. If
branches are quantized too; Loop and Scan bodies are left fp32. With
``fallback=per-layer`` the pass ranks layers by accuracy gained per latency lost (each
layer's own SQNR from one batched run, over its cost measured by profiling) and
returns the shortest prefix of them to fp32 that makes ``metric`` hold ``tolerance``
on the calibration data
(samples beyond ``samples`` are the evaluation set when there are any).
Weights take 7 bits where the target's u8 x s8 kernels saturate full-range pairs (x86
without VNNI), 8 where they accumulate in int32, unless ``reduce-range`` says (stat
``weight-bits``); with 8-bit weights on a host whose onnxruntime saturates them, the
fallback's trials run on the exact int8 path. A model below opset 13 (per-channel
Q/DQ) is first converted to opset 13 with onnx's version converter (stat
``opset-converted-from``); if that fails the pass says why.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from typing import ClassVar, Literal

import numpy as np

from edgec.diagnostics import EdgecError
from edgec.ir.core import Model
from edgec.ir.shape_inference import infer_types
from edgec.metrics import BUILTIN_METRICS, metric_name, parse_metric, plugin_metrics
from edgec.passmgr.base import OptionError, Pass, PassContext, PassError, PassResult
from edgec.quantization.arithmetic import needs_exact_path, weight_range
from edgec.quantization.qdq import ALL_OPS, QuantConfig, candidate_nodes, quantize_static
from edgec.quantization.options import check_exclusions
from edgec.quantization.samples import calibration_samples
from edgec.quantization.fallback import mixed_precision


@dataclass(frozen=True)
class QuantizeInt8(Pass):
    """Static int8 (QDQ) quantization calibrated on the spec's data."""

    name: ClassVar[str] = "quantize-int8"
    calibration: Literal["minmax", "percentile", "entropy", "auto"] = field(default="minmax", metadata={"help": "minmax, percentile, entropy, or auto: the one whose fully quantized model scores best on `metric` (one calibration run each)"})
    percentile: float = field(default=99.99, metadata={"help": "kept percentile for calibration=percentile"})
    ops: tuple[str, ...] = field(default=("Conv", "MatMul", "Gemm"),
                                 metadata={"help": "op types to quantize, or 'all'"})
    per_channel: bool = field(default=True, metadata={"help": "per-output-channel weight scales"})
    symmetric_activations: bool = field(default=False, metadata={"help": "s8 symmetric activations instead of u8 asymmetric"})
    exclude: tuple[str, ...] = field(default=(), metadata={"help": "node names kept fp32"})
    reduce_range: bool | None = field(default=None, metadata={"help": "true: 7-bit weights, false: 8-bit; unset: what the target's int8 kernels need (7-bit where u8 x s8 pairs saturate, x86 without VNNI; 7-bit without a target)"})
    samples: int = field(default=128, metadata={"help": "most calibration samples used"})
    calibration_data: str = field(default="", metadata={"help": ".npz file/folder/glob when not under `edgec compile`"})
    placement: Literal["ops", "contiguous"] = field(default="ops", metadata={"help": "ops: the op types in `ops`; contiguous: every node onnxruntime runs in int8 (probed), in regions joined to a Conv/MatMul/Gemm, so no fp32 island sits between int8 kernels where an int8 kernel exists"})
    fallback: Literal["none", "per-layer"] = field(default="none", metadata={"help": "none, or per-layer: return to fp32 the layers that gain the most accuracy per latency lost until the tolerance holds"})
    metric: str = field(default="top1-agreement", metadata={"help": "metric for fallback=per-layer"})
    tolerance: str = field(default="1%", metadata={"help": "tolerance for fallback=per-layer (1%, 0.05, 30dB)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [op for op in self.ops if op.lower() != "all" and op not in ALL_OPS]
        if unknown:
            raise OptionError("ops", f"no int8 kernel for {', '.join(unknown)}; quantizable: all, "
                                     + ", ".join(ALL_OPS))
        if not 0.0 < self.percentile <= 100.0:
            raise OptionError("percentile", f"must be in (0, 100], got {self.percentile}")
        if self.samples < 1:
            raise OptionError("samples", f"must be at least 1, got {self.samples}")
        if not _known_metric(self.metric):
            raise OptionError("metric", f"unknown metric '{self.metric}'; built-in: "
                                        + ", ".join(BUILTIN_METRICS))
        try:  # its options ("sequence-agreement blank 0"), as edgec.metrics reads them
            parse_metric(self.metric)
        except EdgecError as error:
            raise OptionError("metric", error.diagnostics[0].message) from None
        try:  # as edgec.metrics.evaluate reads it
            text = self.tolerance.strip().removesuffix("%")
            float(text.removesuffix("dB").removesuffix("db").strip())
        except ValueError:
            raise OptionError("tolerance", f"expected a number, a percentage or decibels "
                                           f"(1%, 0.05, 30dB), got '{self.tolerance}'") from None

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        check_exclusions(model, self.exclude, self.name)
        weights = weight_range(ctx.target, self.reduce_range)
        config = QuantConfig(ops=self.ops, calibration=self.calibration,
                             percentile=self.percentile, per_channel=self.per_channel,
                             symmetric_activations=self.symmetric_activations,
                             exclude=self.exclude, samples=self.samples,
                             reduce_range=weights.reduce_range, placement=self.placement)
        if candidate_nodes(model, config):
            # Which values are fp32 must be known: an untyped value may be fp16 or double.
            infer_types(model, ctx.diagnostics)
        if not candidate_nodes(model, config):
            return PassResult(False, {"nodes-quantized": 0})
        converted_from = model.opset()
        if converted_from is not None and converted_from < 13:
            _upgrade_opset(model, 13)
            infer_types(model, ctx.diagnostics)
        samples = calibration_samples(model, ctx, self.calibration_data, self.name)
        stats: dict[str, int | float] = {"weight-bits": weights.bits}
        count = min((len(v) for v in samples.values()), default=0)  # a model with no inputs: none
        held_out = ({k: v[self.samples:] for k, v in samples.items()}
                    if count > self.samples else None)
        if self.calibration == "auto" and self.fallback != "per-layer":
            config = self._best_calibration(model, samples, held_out, config, ctx, weights)
        if self.fallback == "per-layer":
            config, report = mixed_precision(model, samples, self.metric, self.tolerance,
                                             config=config, eval_samples=held_out,
                                             progress=ctx.progress, latency=True,
                                             exact=needs_exact_path(ctx.target, weights.reduce_range))
            stats["fallback-fp32-layers"] = len(report.kept_fp32)
            stats["fallback-held"] = int(report.held)
            stats["fallback-trials"] = len(report.steps)
            stats["fallback-faster-than-fp32"] = int(report.faster_than_fp32)
            for method, value in report.calibration_scores.items():
                stats[f"calibration.{method}"] = value
            for name in report.kept_fp32:
                stats[f"fp32.{name}"] = 1
            # The per-layer ranking, for the report's sensitivity chart.
            for name, score in report.sensitivity:
                stats[f"sensitivity.{name}"] = float(score) if np.isfinite(score) else 1e9
            if not report.faster_than_fp32 and report.latency:
                ctx.diagnostics.warning(
                    f"quantize-int8: int8 measured no faster than fp32 here "
                    f"({report.latency['int8_ms']:.3g} ms against {report.latency['fp32_ms']:.3g} ms"
                    f" fully quantized): no per-layer fallback makes it faster")
            if not report.held:
                ctx.diagnostics.warning(
                    f"quantize-int8: {self.metric} misses {self.tolerance} with every layer fp32 "
                    f"that keeps int8 faster than fp32 ({report.steps[-1]['detail'] if report.steps else 'nothing tried'})")
        stats.update(quantize_static(model, samples, config, progress=ctx.progress))
        if self.calibration == "auto":
            stats[f"calibration-chosen.{config.calibration}"] = 1
        if model.opset() != converted_from:
            stats["opset-converted-from"] = converted_from
        return PassResult(bool(stats["nodes-quantized"] or stats["batchnorm-folded"]
                               or model.opset() != converted_from), stats)


    def _best_calibration(self, model: Model, samples, held_out, config: QuantConfig, ctx: PassContext,
                          weights) -> QuantConfig:
        """``config`` with the calibration method whose fully quantized model scores best
        on ``metric`` (`fallback.best_calibration`), when no per-layer fallback does it."""
        from edgec.quantization.fallback import CALIBRATION_METHODS, best_calibration
        from edgec.quantization.sensitivity import Trials

        trials = Trials(model, samples, replace(config, calibration=CALIBRATION_METHODS[0]), held_out,
                        ctx.progress, exact=needs_exact_path(ctx.target, weights.reduce_range))
        chosen, _ = best_calibration(trials, samples, config, self.metric, self.tolerance,
                                     progress=ctx.progress)
        return chosen


def _known_metric(text: str) -> bool:
    name = metric_name(text)
    return name in BUILTIN_METRICS or name in plugin_metrics()


def _upgrade_opset(model: Model, target: int) -> None:
    """Per-channel QuantizeLinear/DequantizeLinear need opset 13. An older model is
    converted in place with onnx's version converter (which rewrites the ops whose
    signature changed: Reshape's shape input, Upsample -> Resize, ...); if the
    converter cannot, the pass stops with its reason."""
    import onnx.version_converter

    from edgec.frontend import export_model, import_model

    before = model.opset()
    try:
        proto = onnx.version_converter.convert_version(export_model(model), target)
        onnx.checker.check_model(proto)
        converted = import_model(proto, base_dir=model.base_dir)
    except Exception as e:  # noqa: BLE001 - the converter raises many kinds
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PassError(f"quantize-int8: needs opset >= 13 (per-channel QDQ); the model has {before} "
                        f"and onnx's version converter could not convert it: {reason}") from None
    for f in dataclasses.fields(Model):
        setattr(model, f.name, getattr(converted, f.name))
