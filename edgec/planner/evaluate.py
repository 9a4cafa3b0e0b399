"""One candidate configuration tried: its passes run, the optimized ONNX exported, built
by its backend in a folder of its own, its latency measured (or estimated), its accuracy
scored against the original model's outputs, and its budgets judged.

Each concern is one function; `evaluate` strings them together, and a step that fails
for this configuration alone (a pass, the backend) becomes the candidate's error, so the
planner can try the next one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from edgec import artifact as art
from edgec.backends import capabilities, get_backend
from edgec.backends.base import BuildOptions, BuildResult, LatencyStats
from edgec.backends.logs import backend_output_to
from edgec.diagnostics import Diagnostic, DiagnosticSink, EdgecError, ModelError, UsageError
from edgec.metrics import evaluate as score_metric
from edgec.planner.budgets import judge
from edgec.planner.samples import fixed_batch, in_batches_of, outputs_mismatch, run_all
from edgec.planner.search import Configuration, Evaluation, backend_pipeline

# How much slower than the cost model's (tuned) estimate an untuned TVM module is
# taken to be: the low end of the 10-200x measured here (docs/tvm-notes.md).
UNTUNED_PENALTY = 10.0
# A tuned TVM candidate is not built when the cost model's estimate for it is this many
# times a latency already measured for a candidate it would have to beat: building and
# tuning it is minutes of compile time for a configuration that cannot be chosen. The
# margin is wide because the cost model is no TVM model (it is fitted to onnxruntime on
# this kind of host, and was 2-5x off on MobileNetV2 here); 10x is past its error.
FAR_SLOWER = 10.0


@dataclass
class Context:
    """What every candidate's evaluation shares. ``build_options`` also carries the
    compile's RPC tracker, thread count and progress callback."""

    spec: Any                        # the resolved Spec
    model_path: str
    model_bytes: bytes
    original: onnx.ModelProto
    base_dir: str                    # the model's folder (its external data)
    staging: str                     # candidates' folders are made here
    cache_dir: str
    sink: DiagnosticSink
    calibration: dict[str, np.ndarray]
    evaluation: dict[str, np.ndarray]
    reference: list[np.ndarray]
    labels: np.ndarray | None
    bench_inputs: dict[str, np.ndarray]
    at_hand: bool                    # the target is this machine: latency is measured here
    build_options: BuildOptions
    layout: str = "batch"            # of the samples: batch-leading or per-sample (edgec.data)


@dataclass
class Attempt:
    """One configuration tried, with everything the choice and the manifest need."""

    evaluation: Evaluation
    folder: str
    result: BuildResult | None = None
    latency: LatencyStats | None = None
    estimate: dict | None = None
    records: list = field(default_factory=list)
    nodes_after: int = 0
    seconds: float = 0.0
    pipeline: str = ""
    latency_note: str | None = None  # how the latency was judged when RPC could not be used
    skipped: str | None = None       # why it was not built: it could not have been chosen
    int8: dict | None = None         # weight range and scoring path, when int8 was used
    int8_time: dict | None = None    # where an int8 candidate's time went (profiled)
    model_digest: str | None = None  # sha256 of the candidate's model files


class _Rejected(Exception):
    """This configuration failed on its own (the attempt's error says why); try the next."""


def evaluate(config: Configuration, index: int, ctx: Context, *, explicit_backend: bool,
             rivals: list[Attempt] = ()) -> Attempt:
    """Build, measure and score one configuration in its own folder — unless, against
    the ``rivals`` already measured, it cannot be chosen (`cannot_win`). With
    ``explicit_backend`` (the user named it) a backend that cannot take the model is the
    compile's error rather than the candidate's."""
    folder = tempfile.mkdtemp(prefix=f".candidate-{index}-", dir=ctx.staging)
    attempt = Attempt(Evaluation(config), folder)
    try:
        model = _run_passes(config, ctx, attempt)
        attempt.skipped = cannot_win(config, model, ctx, rivals)
        if attempt.skipped is not None:
            shutil.rmtree(folder, ignore_errors=True)
            return attempt
        optimized = _export(model, folder)
        attempt.skipped = _same_as(config, attempt, rivals)
        if attempt.skipped is not None:
            shutil.rmtree(folder, ignore_errors=True)
            return attempt
        backend = _backend(config, ctx, attempt, explicit_backend)
        result = _build_module(backend, config, optimized, ctx, attempt, explicit_backend)
        _latency(backend, config, model, result, ctx, attempt)
        _accuracy(backend, config, optimized, result, ctx, attempt)
    except _Rejected:
        return attempt
    ev = attempt.evaluation
    ev.size_bytes = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    ev.budgets = judge(ctx.spec, ev, model)
    return attempt


def _run_passes(config: Configuration, ctx: Context, attempt: Attempt):
    """The base pipeline and the configuration's passes, run on a fresh import of the
    original; returns the optimized IR."""
    from edgec.frontend.onnx_import import import_model
    from edgec.passmgr import PassContext, PassManager

    spec = ctx.spec
    model = import_model(ctx.original, base_dir=ctx.base_dir, source=ctx.model_path,
                         check=False)
    base = spec.optimize.pipeline or backend_pipeline(config.backend)
    attempt.pipeline = ",".join(filter(None, [base, config.passes]))
    pass_ctx = PassContext(diagnostics=DiagnosticSink(), spec=spec, target=spec.target,
                           seed=spec.optimize.seed, calibration_data=ctx.calibration,
                           progress=ctx.build_options.progress)
    try:
        manager = PassManager(attempt.pipeline, context=pass_ctx, source=ctx.model_path,
                              reproducer_dir=os.path.join(ctx.cache_dir, "reproducers"))
        run = manager.run(model, input_bytes=ctx.model_bytes)
    except EdgecError as e:
        if not config.passes:
            raise  # the base pipeline itself fails: that is the user's problem to see
        attempt.evaluation.error = f"the passes failed: {e.diagnostics[0].message}"
        raise _Rejected from None
    for d in pass_ctx.diagnostics.diagnostics:
        if config.passes == "" or d.is_error:
            ctx.sink.emit(d)
    attempt.records = run.records
    attempt.nodes_after = run.model.node_count()
    return run.model


def _export(model, folder: str) -> onnx.ModelProto:
    from edgec.frontend.onnx_export import save_model

    save_model(model, os.path.join(folder, "model.onnx"))
    return onnx.load(os.path.join(folder, "model.onnx"), load_external_data=False)


def _same_as(config: Configuration, attempt: Attempt, rivals) -> str | None:
    """A configuration whose passes gave the very model a built candidate on the same
    backend has (a per-layer fallback that kept no layer fp32, a placement equal to an
    op policy) is that candidate: not built or measured again."""
    folder = attempt.folder
    attempt.model_digest = hashlib.sha256(b"".join(
        name.encode() + bytes.fromhex(art.sha256_file(os.path.join(folder, name)))
        for name in sorted(os.listdir(folder)))).hexdigest()  # model.onnx and its weights
    twin = next((t for t in rivals if t.skipped is None and t.result is not None
                 and t.model_digest == attempt.model_digest
                 and t.evaluation.config.backend == config.backend), None)
    if twin is None:
        return None
    return f"not built: its passes gave the same model as {twin.evaluation.config.label}"


def _backend(config: Configuration, ctx: Context, attempt: Attempt, explicit: bool):
    """The configuration's backend, when it is installed and can build for the target."""
    ev = attempt.evaluation
    try:
        backend = get_backend(config.backend)
    except EdgecError as e:
        if explicit:
            raise
        ev.error = e.diagnostics[0].message
        raise _Rejected from None
    reason = backend.unavailable_reason(ctx.spec.target)
    if reason:
        if explicit:
            raise UsageError(Diagnostic.error(
                f"backend '{config.backend}' cannot build for {ctx.spec.target.name}: {reason}"))
        ev.error = f"backend {config.backend} unavailable: {reason}"
        raise _Rejected
    return backend


def _build_module(backend, config: Configuration, optimized: onnx.ModelProto, ctx: Context,
                  attempt: Attempt, explicit: bool) -> BuildResult:
    try:
        # With the file's path: external weights resolve in the candidate's own folder.
        model_file = os.path.join(attempt.folder, "model.onnx")
        backend.check_model(optimized, model_path=model_file)
        # The backend's own console output (TVM's C++ warnings, MetaSchedule's logging)
        # goes to a log file under the cache; edgec's progress still reaches stderr.
        ctx.build_options.progress("build", 0, None, f"building {config.label}")
        with backend_output_to(os.path.join(ctx.cache_dir, "logs", f"{config.backend}.log")):
            result = backend.build(optimized, ctx.spec.target, attempt.folder,
                                   ctx.build_options, model_path=model_file)
    except ModelError as e:
        if explicit:
            raise
        attempt.evaluation.error = f"{config.backend} cannot take this model: {e.diagnostics[0].message}"
        raise _Rejected from None
    except EdgecError:
        raise
    except (MemoryError, RecursionError):
        raise
    except Exception as e:  # the backend's own compiler failed (TVM's schedule rules assert)
        message = _backend_failure(config.backend, ctx.spec.target, e, ctx.cache_dir)
        if explicit:
            raise ModelError(Diagnostic.error(message)) from None
        attempt.evaluation.error = message
        raise _Rejected from None
    attempt.result = result
    attempt.evaluation.tuned = result.tuned
    return result


def _backend_failure(name: str, target, error: Exception, cache_dir: str) -> str:
    """One line for a backend whose own compiler raised on a valid model: which backend,
    for which target, its error's type and first line, and where its log is."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    # TVM's errors put the traceback first and the message last.
    first = lines[-1] if lines else ""
    first = first if len(first) <= 300 else first[:297] + "..."
    log = os.path.join(cache_dir, "logs", f"{name}.log")
    return (f"{name} failed to build this model for {getattr(target, 'name', target)}: "
            f"{type(error).__name__}{': ' + first if first else ''} (inside {name}'s own "
            f"compiler, not this model's fault; its log: {log})")


def _latency(backend, config: Configuration, model, result: BuildResult, ctx: Context,
             attempt: Attempt) -> None:
    """Latency: measured on this host or over RPC, else estimated from the target. A
    backend that cannot be measured over RPC (ort) is measured here when the target is
    at hand, else estimated, and the candidate says so."""
    ev, spec = attempt.evaluation, ctx.spec
    lat = spec.budget.latency
    percentile = lat.percentile if lat else 50
    rpc = ctx.build_options.rpc
    measures_over_rpc = capabilities(config.backend).measures_over_rpc
    if rpc is not None and not measures_over_rpc:
        attempt.latency_note = (
            f"the {config.backend} backend cannot be measured over TVM RPC: its latency was "
            + ("measured on this host" if ctx.at_hand else
               "estimated from the target description (edgec.planner.costmodel)"))
    # An emulated RPC device runs the module (accuracy below) but its timings are the
    # emulator's, never the board's: latency is then estimated as with no device.
    over_rpc = rpc is not None and not rpc.emulated and measures_over_rpc
    if ctx.at_hand or over_rpc:
        ctx.build_options.progress("measure", 0, None, f"measuring {config.label}")
        measure_options = ctx.build_options if over_rpc else \
            dataclasses.replace(ctx.build_options, rpc=None)
        attempt.latency = backend.measure(attempt.folder, result.details, ctx.bench_inputs,
                                          measure_options)
        ev.latency_s = attempt.latency.percentile(percentile)
        ev.latency_where = attempt.latency.where
        return
    from edgec.planner.costmodel import estimate
    est = estimate(model, spec.target, batch=lat.batch if lat else 1)
    attempt.estimate = est.to_json()
    if rpc is not None:
        attempt.estimate["why"] = (f"the RPC device {rpc.where} is an emulator: its "
                                   "timings are not the board's latency")
    ev.latency_s = est.seconds
    if not result.tuned:
        # The cost model assumes tuned kernels; untuned TVM runs 10-200x slower than
        # that here (docs/tvm-notes.md), so an untuned module is never estimated as fast.
        ev.latency_s *= UNTUNED_PENALTY
        attempt.estimate["untuned_penalty"] = UNTUNED_PENALTY
        attempt.estimate["ms"] = ev.latency_s * 1e3
    ev.latency_where = "estimated"


def _accuracy(backend, config: Configuration, optimized: onnx.ModelProto, result: BuildResult,
              ctx: Context, attempt: Attempt) -> None:
    """Accuracy against the fp32 model, on samples the calibration did not see."""
    from edgec.quantization.arithmetic import scoring

    ev, spec = attempt.evaluation, ctx.spec
    score = scoring(optimized, spec.target, base_dir=attempt.folder)
    attempt.int8 = int8_record(attempt.records, spec, score)
    if attempt.int8 is not None and config.backend == "ort" and result.runnable_here:
        # What onnxruntime ran in int8, per node, from its own profiler.
        from edgec.quantization.executed import profile
        ctx.build_options.progress("profile", 0, None, f"profiling {config.label}")
        executed = profile(optimized, ctx.bench_inputs, runs=2,
                           threads=ctx.build_options.threads or 0, base_dir=attempt.folder)
        attempt.int8["executed"] = executed.to_json()
        attempt.int8_time = executed.timing()
    run_fn, names = _scoring_run(backend, config, score, result, ctx, attempt)
    try:
        candidate = run_all(run_fn, ctx.evaluation, names, fixed_batch(optimized), ctx.layout)
    except MemoryError:
        ev.error = ("its outputs over the evaluation samples take more memory than this "
                    "machine allows")
        raise _Rejected from None
    mismatch = outputs_mismatch(ctx.reference, candidate)
    if mismatch:
        ev.error = f"its outputs do not match the original model's in shape: {mismatch}"
        raise _Rejected
    metric = score_metric(spec.accuracy.metric, spec.accuracy.tolerance, ctx.reference,
                          candidate, ctx.labels)
    ev.accuracy_value, ev.accuracy_held, ev.accuracy_detail = metric.value, metric.held, metric.detail
    ev.accuracy_figures = {k: v if not isinstance(v, float) or np.isfinite(v) else str(v)
                           for k, v in metric.figures.items()} or None
    if ev.accuracy_scored_on == "exact-int8":
        ev.accuracy_detail += f" ({score.note})"
    elif ev.accuracy_scored_on == "onnx-proxy":
        ev.accuracy_detail += " (scored on the optimized ONNX with onnxruntime)"
    elif ev.accuracy_scored_where != "host":
        ev.accuracy_detail += f" (scored on the module's own outputs on {ctx.build_options.rpc.where})"
    if ev.accuracy_scored_on != "exact-int8" and not score.representative \
            and ev.accuracy_scored_where == "host":
        ev.accuracy_detail += f" ({score.note})"


def _scoring_run(backend, config: Configuration, score, result: BuildResult, ctx: Context,
                 attempt: Attempt):
    """What runs the candidate for scoring, and its input names: the module's own outputs
    wherever it runs (the RPC device, this host), with the target's int8 arithmetic where
    this host's onnxruntime would differ from it, else the optimized ONNX with
    onnxruntime as a proxy. Records which on the evaluation."""
    from edgec.quantization.arithmetic import exact_session

    ev, folder, rpc = attempt.evaluation, attempt.folder, ctx.build_options.rpc
    remote = getattr(backend, "remote_runner", None)
    on_device = not result.runnable_here and rpc is not None and remote is not None
    ctx.build_options.progress("score", 0, None, f"running {config.label} on {rpc.where}"
                               if on_device else f"scoring {config.label}")
    if on_device:
        # The device itself runs the module: its outputs are the target's arithmetic.
        runner = remote(folder, result.details, rpc, threads=ctx.build_options.threads)
        ev.accuracy_scored_on, ev.accuracy_scored_where = "module", rpc.where
    elif score.path == "exact":
        session = exact_session(onnx.load(os.path.join(folder, "model.onnx")))
        ev.accuracy_scored_on, ev.accuracy_scored_where = "exact-int8", "host"
        return (lambda feed: session.run(None, feed)), [i.name for i in session.get_inputs()]
    elif result.runnable_here:
        runner = backend.load(folder, result.details)
        ev.accuracy_scored_on, ev.accuracy_scored_where = "module", "host"
    else:
        from edgec.backends.ort import OrtRunner
        proxy = OrtRunner(os.path.join(folder, "model.onnx"), {})
        ev.accuracy_scored_on, ev.accuracy_scored_where = "onnx-proxy", "host"
        return (lambda feed: proxy.session.run(None, feed)), proxy.input_names
    run_fn = lambda feed: [runner.run(feed)[n] for n in runner.output_names]  # noqa: E731
    if result.batch is not None and ctx.layout != "per-sample":
        run_fn = in_batches_of(run_fn, result.batch)  # a module bound to one batch
    return run_fn, runner.input_names


def cannot_win(config: Configuration, model, ctx: Context, rivals) -> str | None:
    """Why a TVM candidate need not be built, or None.

    It would have to beat the measured candidates that hold every budget, or its own
    group (the same model on another backend: the same accuracy, about the same size, so
    the same fate on every budget but latency). An untuned TVM module does not: it runs
    5-190x slower than onnxruntime on the same model here (docs/tvm-notes.md). A tuned
    one is not built when even the cost model's estimate, which assumes tuned kernels,
    is over FAR_SLOWER times the fastest such rival. Only a backend that declares a costly
    build (TVM) is judged this way: its build (and tuning) is where the minutes go; an
    onnxruntime candidate costs seconds."""
    if not capabilities(config.backend).costly_build:
        return None
    measured = [t for t in rivals if t.skipped is None and t.evaluation.error is None
                and t.latency is not None and t.evaluation.latency_s is not None
                and (t.evaluation.held or t.evaluation.config.group == config.group)]
    if not measured:
        return None
    best = min(measured, key=lambda t: t.evaluation.latency_s)
    best_ms = best.evaluation.latency_s * 1e3
    opts = ctx.build_options
    tuned = bool(opts.tuning_trials or opts.tuning_seconds) and (
        ctx.at_hand or opts.rpc is not None)
    if not tuned:
        return (f"not built: untuned TVM runs 5-190x slower than onnxruntime here "
                f"(docs/tvm-notes.md), and {best.evaluation.config.label} measured "
                f"{best_ms:.3g} ms; give the spec a tuning budget to try TVM")
    from edgec.planner.costmodel import estimate

    lat = ctx.spec.budget.latency
    estimate_s = estimate(model, ctx.spec.target, batch=lat.batch if lat else 1).seconds
    if estimate_s > FAR_SLOWER * best.evaluation.latency_s:
        return (f"not built: even tuned, estimated at {estimate_s * 1e3:.3g} ms, over "
                f"{FAR_SLOWER:g}x the {best_ms:.3g} ms {best.evaluation.config.label} measured")
    return None


def int8_record(records, spec, score) -> dict | None:
    """Which weight range the quantizers used and why, and how accuracy was scored."""
    from edgec.quantization.arithmetic import weight_range

    bits = [r.stats["weight-bits"] for r in records if r.modified and "weight-bits" in r.stats]
    if not bits:
        return None
    if "reduce-range" in (spec.optimize.pipeline or ""):
        reason = "reduce-range set in the spec's pipeline"
    else:
        reason = weight_range(spec.target, None).reason
    return {"weight_bits": bits[-1], "weight_range": reason, "accumulation":
            "int16-saturating" if spec.target.int8_saturates else "int32",
            "scored_with": "exact int32 arithmetic" if score.path == "exact"
            else "onnxruntime on this host", "scoring": score.note,
            "representative": score.representative}
