"""The samples a compile is checked on: read or drawn, split into a calibration half and an
accuracy half, and run through a model (the original's reference outputs, a candidate's
outputs) in the batches the model takes."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnx

from edgec.data import (PER_SAMPLE, InputSpec, SampleData, check_labels, feeds, load_data,
                        load_labels, model_inputs, synthetic_data)
from edgec.diagnostics import Diagnostic, DiagnosticSink, Location, ModelError, UsageError

SYNTHETIC_SAMPLES = 64
# One sample of one input, in bytes: beyond this the model is not one edgec can check
# (a declared dimension of 2**31, say), and nothing is allocated for it.
MAX_SAMPLE_BYTES = 256 << 20
# Calibration and accuracy are split only when there are enough samples for both halves.
SPLIT_FROM = 16


@dataclass
class Samples:
    """The samples, split: passes calibrate on ``calibration``, candidates are scored on
    ``evaluation`` against the original model's ``reference`` outputs on it."""

    calibration: dict[str, np.ndarray]
    evaluation: dict[str, np.ndarray]
    reference: list[np.ndarray]
    labels: np.ndarray | None     # the evaluation samples' labels
    bench_inputs: dict[str, np.ndarray]   # one batch, for latency
    note: str                     # where they came from, for the manifest
    layout: str = "batch"         # batch-leading, or per-sample feeds (edgec.data)
    layout_how: str = ""          # how the layout was decided, for the manifest


def prepare_samples(spec, original: onnx.ModelProto, model_path: str, data_pattern: str | None,
                    sink: DiagnosticSink) -> Samples:
    """Read (or draw) the samples, check the labels, split them and run the original."""
    in_specs = model_inputs(original)
    batch = spec.budget.latency.batch if spec.budget.latency else 1
    check_input_sizes(in_specs, batch, model_path)
    data, note = _read_or_draw(spec, original, in_specs, data_pattern, sink)
    samples, layout = data.arrays, data.layout
    note += f"; {data.describe()}: {data.how}" + (
        ", fed one feed at a time" if layout == PER_SAMPLE else "")
    count = len(next(iter(samples.values())))
    labels = _labels(spec, data_pattern, count)
    # Calibrate on the even samples and score on the odd ones, so that quantization is
    # never judged on the very samples it was calibrated with.
    if count >= SPLIT_FROM:
        calibration = {k: v[0::2] for k, v in samples.items()}
        evaluation = {k: v[1::2] for k, v in samples.items()}
        scored_labels = labels[1::2] if labels is not None else None
        note += "; calibration on the even-numbered half, accuracy on the odd-numbered half"
    else:
        calibration = evaluation = samples
        scored_labels = labels
    reference = reference_outputs(model_path, original, evaluation, layout)
    if labels is not None:
        first = reference[0] if reference else None
        classes = int(np.prod(first.shape[1:])) if first is not None and first.ndim > 1 else None
        check_labels(labels, len(labels), classes, spec.accuracy.labels)  # its classes
    bench = (batch_inputs(samples, in_specs, batch) if layout != PER_SAMPLE
             else {k: v[0, ...] for k, v in samples.items()})  # one whole feed, 0-d kept
    return Samples(calibration, evaluation, reference, scored_labels, bench, note, layout,
                   data.how)


def _read_or_draw(spec, original: onnx.ModelProto, in_specs: list[InputSpec],
                  data_pattern: str | None, sink: DiagnosticSink) -> tuple[SampleData, str]:
    if data_pattern:
        data = load_data(data_pattern, in_specs, layout=spec.accuracy.layout)
        return data, f"{data.count} samples from {os.path.basename(data_pattern)}"
    # A model with a fixed batch is fed whole batches: draw at least two of them.
    count = max(SYNTHETIC_SAMPLES, 2 * (fixed_batch(original) or 0))
    samples = synthetic_data(in_specs, count, spec.optimize.seed)
    sink.warning("accuracy is checked on synthetic inputs: the spec gives no data")
    return samples, (f"{count} synthetic samples drawn from the input types "
                     f"(seed {spec.optimize.seed}); the spec gives no data")


def _labels(spec, data_pattern: str | None, count: int) -> np.ndarray | None:
    labels = load_labels(spec.accuracy.labels) if spec.accuracy.labels else None
    if labels is not None and not data_pattern:
        raise UsageError(Diagnostic.error(
            "the spec gives labels but no data: labels name the classes of the data's samples, "
            "so they need the data (accuracy.data or --data)",
            Location(path=spec.accuracy.labels)))
    if labels is not None:
        check_labels(labels, count, None, spec.accuracy.labels)  # one per sample
    return labels


def check_input_sizes(in_specs: list[InputSpec], batch: int, model_path: str) -> None:
    for spec in in_specs:
        count = 1
        for axis, d in enumerate(spec.shape):
            count *= d if isinstance(d, int) and d > 0 else (batch if axis == 0 else 1)
        nbytes = count * np.dtype(spec.dtype).itemsize
        if nbytes > MAX_SAMPLE_BYTES:
            shown = [d if d is not None else "?" for d in spec.shape]
            raise ModelError(Diagnostic.error(
                f"input '{spec.name}' of shape {shown} takes {nbytes} bytes per run, over the "
                f"limit of {MAX_SAMPLE_BYTES >> 20} MiB", Location(path=model_path)))


def reference_outputs(model_path: str, original: onnx.ModelProto,
                      samples: dict[str, np.ndarray], layout: str = "batch") -> list[np.ndarray]:
    """The fp32 model's outputs on every sample, through onnxruntime."""
    import onnxruntime as ort

    try:
        so = ort.SessionOptions()
        # Fatal only: a model it refuses is reported below, in one line naming the file.
        so.log_severity_level = 4
        # From the file, so that external data resolves next to it.
        session = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ModelError(Diagnostic.error(
            f"onnxruntime cannot run the original model, so accuracy cannot be checked: "
            f"{_ort_message(e)}", Location(path=model_path))) from None
    try:
        return run_all(lambda feed: session.run(None, feed), samples,
                       [i.name for i in session.get_inputs()], fixed_batch(original), layout)
    except Exception as e:
        if not type(e).__module__.startswith("onnxruntime"):
            raise
        raise ModelError(Diagnostic.error(
            f"onnxruntime cannot run the original model, so accuracy cannot be checked: "
            f"{_ort_message(e)}", Location(path=model_path))) from None


def _ort_message(e: Exception) -> str:
    text = " ".join(str(e).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def fixed_batch(proto: onnx.ModelProto) -> int | None:
    """The model's fixed leading dimension, or None when it is symbolic (any batch)."""
    for spec in model_inputs(proto):
        if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] > 0:
            return spec.shape[0]
    return None


def run_all(run, samples: dict[str, np.ndarray], names: list[str], fixed: int | None,
            layout: str = "batch", chunk: int = 64) -> list[np.ndarray]:
    """``run`` over every sample: batch-leading rows ``fixed`` (or ``chunk``) at a time,
    joined along axis 0 (a model with a fixed batch leaves out the samples of a last,
    partial batch); per-sample feeds one at a time, their outputs stacked [S, *shape]."""
    total = len(next(iter(samples.values())))
    if layout == PER_SAMPLE:
        return stack_feeds([[np.asarray(r) for r in run(feed)]
                            for feed in feeds(samples, names, layout, 1)])
    if fixed and total < fixed:
        raise UsageError(Diagnostic.error(
            f"the model takes a fixed batch of {fixed} samples, but the data holds only {total}"))
    outs = [[np.asarray(r) for r in run(feed)]
            for feed in feeds(samples, names, layout, fixed or chunk, whole_batches=bool(fixed))]
    return join_chunks(outs)


def stack_feeds(outs: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Each output of per-sample feeds stacked along a new axis 0; an output whose shape
    changes from one feed to the next cannot be compared value for value (exit 3)."""
    stacked = []
    for index, parts in enumerate([o[i] for o in outs] for i in range(len(outs[0]))):
        changed = next((p.shape for p in parts if p.shape != parts[0].shape), None)
        if changed is not None:
            raise ModelError(Diagnostic.error(
                f"output {index} changes shape from one feed to the next ({list(parts[0].shape)}, "
                f"then {list(changed)}), so the fp32 model's and a candidate's outputs cannot "
                "be compared value for value; give feeds of one shape"))
        stacked.append(np.stack(parts))
    return stacked


def outputs_mismatch(reference: list[np.ndarray], candidate: list[np.ndarray]) -> str | None:
    """Why the candidate's outputs cannot be scored against the reference's (a count or a
    shape that differs), or None."""
    if len(reference) != len(candidate):
        return f"{len(candidate)} outputs, the original has {len(reference)}"
    for index, (want, got) in enumerate(zip(reference, candidate)):
        if np.shape(want) != np.shape(got):
            return (f"output {index} has shape {list(np.shape(got))}, the original's "
                    f"{list(np.shape(want))}")
    return None


def join_chunks(outs: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Each output's chunks joined along the batch axis; an output without one (a scalar,
    e.g. a loss or a count over the whole feed) gives one value per chunk, stacked, so
    the reference and the candidate are still compared value for value."""
    return [np.stack(parts) if parts[0].ndim == 0 else np.concatenate(parts, axis=0)
            for parts in ([o[i] for o in outs] for i in range(len(outs[0])))]


def in_batches_of(run, batch: int):
    """``run`` for a module that takes exactly ``batch`` samples: each feed is cut into
    batches of that size, the last one padded with copies of its last sample."""
    def run_batched(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        total = len(next(iter(feed.values())))
        outs: list[list[np.ndarray]] = []
        for start in range(0, total, batch):
            chunk = {}
            for name, value in feed.items():
                part = value[start:start + batch]
                if len(part) < batch:
                    part = np.concatenate([part, np.repeat(part[-1:], batch - len(part), axis=0)])
                chunk[name] = part
            outs.append([r if r.ndim == 0 else r[:min(batch, total - start)]
                         for r in map(np.asarray, run(chunk))])
        return join_chunks(outs)
    return run_batched


def batch_inputs(samples: dict[str, np.ndarray], in_specs: list[InputSpec],
                 batch: int) -> dict[str, np.ndarray]:
    """One batch of inputs for latency: the first samples, repeated when there are fewer."""
    out = {}
    for spec in in_specs:
        arr = samples[spec.name]
        fixed = spec.shape[0] if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] > 0 else None
        n = fixed or batch
        if len(arr) >= n:
            out[spec.name] = arr[:n]
        else:
            reps = -(-n // len(arr))
            out[spec.name] = np.concatenate([arr] * reps, axis=0)[:n]
    return out
