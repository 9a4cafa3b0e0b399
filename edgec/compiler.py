"""`edgec compile`: model + spec -> artifact folder, or a precise account of which budget
cannot be met.

The steps: read the spec and the model; look the content-hash cache key up (an
identical compile is a no-op; a cached build is copied into place); otherwise run the
pass pipeline, export the optimized ONNX, build with the allowed backends, check
accuracy against the fp32 model on the spec's data, measure latency where the target
is at hand, judge every budget, and publish the folder atomically.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from edgec import artifact as art
from edgec import publish
from edgec._version import __version__
from edgec.backends import get_backend
from edgec.backends.base import BuildOptions, BuildResult, LatencyStats, Progress, RpcConfig, no_progress
from edgec.backends.logs import backend_output_to
from edgec.data import (InputSpec, check_labels, load_labels, load_samples, model_inputs,
                        synthetic_samples)
from edgec.diagnostics import (BudgetError, Diagnostic, DiagnosticSink, EdgecError, Location,
                               ModelError, UsageError)
from edgec.metrics import cannot_discriminate, evaluate

SYNTHETIC_SAMPLES = 64
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
class CompileOptions:
    data: str | None = None              # overrides the spec's accuracy data
    backend: str | None = None           # overrides the spec's backend (auto | tvm | ort)
    cache_dir: str | None = None
    allow_over_budget: bool = False
    depfile: str | None = None
    rpc: RpcConfig | None = None
    threads: int | None = None
    progress: Progress = no_progress


@dataclass
class CompileResult:
    out: str
    manifest: dict
    diagnostics: list[Diagnostic] = field(default_factory=list)
    cached: str = "no"   # "no" | "output" (OUT already up to date) | "cache" (copied)
    report: str = ""     # report.txt as published (OUT may be another compile's by now)

    @property
    def artifact(self) -> art.Artifact:
        """OUT, opened when asked for: the CLI never needs it, and another compile may
        have swapped OUT since this one published it."""
        return art.Artifact(self.out)

    @property
    def budgets_held(self) -> bool:
        return bool(self.manifest.get("budgets_held"))


def default_cache_dir() -> str:
    env = os.environ.get("EDGEC_CACHE_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "edgec")


# --------------------------------------------------------------------------- inputs and key


@dataclass
class _Inputs:
    model_path: str
    model_bytes: bytes
    external_files: list[str]
    spec: Any
    spec_files: list[str]
    data_pattern: str | None
    data_files: list[str]
    labels_files: list[str]


def _read_inputs(model_path: str, spec, options: CompileOptions) -> _Inputs:
    from edgec.data import data_files
    from edgec.dsl import load_spec
    from edgec.frontend.onnx_import import external_data_files, parse_model_bytes, read_model_bytes

    if not isinstance(spec, str) and not isinstance(spec, os.PathLike):
        spec_obj = spec
    else:
        spec_obj = load_spec(spec)
    model_bytes, _ = read_model_bytes(model_path)
    proto = parse_model_bytes(model_bytes, model_path)
    base = os.path.dirname(os.path.abspath(model_path))
    # Confined and checked before anything hashes them or lists them in the depfile.
    external = external_data_files(proto, base, model_path)
    pattern = options.data if options.data is not None else spec_obj.accuracy.data
    files = data_files(pattern) if pattern else []
    labels = data_files(spec_obj.accuracy.labels) if spec_obj.accuracy.labels else []
    return _Inputs(model_path, model_bytes, external, spec_obj, list(spec_obj.sources),
                   pattern, files, labels)


def _spec_record(spec) -> dict:
    """The resolved spec for the manifest and the cache key. Data and labels paths are
    given relative to the spec's folder: the same project compiled from two checkouts
    has the same key and the same manifest bytes (their contents are hashed apart)."""
    record = spec.to_dict()
    record.pop("sources", None)
    base = os.path.dirname(spec.sources[0]) if getattr(spec, "sources", None) else os.getcwd()
    accuracy = record.get("accuracy")
    if isinstance(accuracy, dict):
        for name in ("data", "labels"):
            value = accuracy.get(name)
            if isinstance(value, str) and os.path.isabs(value):
                accuracy[name] = os.path.relpath(value, base).replace(os.sep, "/")
    return record


def _plugin_versions() -> dict[str, str]:
    out = {}
    for group in ("edgec.passes", "edgec.targets", "edgec.metrics", "edgec.backends"):
        for ep in importlib.metadata.entry_points(group=group):
            dist = getattr(ep, "dist", None)
            if dist is not None:
                out[dist.metadata["Name"]] = dist.version
    return dict(sorted(out.items()))


def _cache_key(inputs: _Inputs, options: CompileOptions) -> tuple[str, dict]:
    """A content hash of everything the artifact depends on, and the digests it is made of."""
    digests = {
        "model_sha256": hashlib.sha256(inputs.model_bytes).hexdigest(),
        "external_data": {os.path.basename(p): art.sha256_file(p) for p in inputs.external_files},
        "data": [art.sha256_file(p) for p in inputs.data_files],
        "labels": [art.sha256_file(p) for p in inputs.labels_files],
    }
    material = {
        "format_version": art.FORMAT_VERSION, "edgec": __version__, "inputs": digests,
        "spec": _spec_record(inputs.spec), "backend_override": options.backend,
        "plugins": _plugin_versions(),
        "rpc": None if options.rpc is None else [options.rpc.host, options.rpc.port, options.rpc.key,
                                                 options.rpc.emulated],
        # int8 accuracy is scored on an exact path where this host's onnxruntime saturates
        # and the target does not: the same inputs scored on another host may differ.
        "host_int8_saturates": _host_int8_saturates(inputs.spec),
    }
    key = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
    return key, digests


def _host_int8_saturates(spec) -> bool | None:
    """This host's int8 arithmetic (measured once per machine, cached) when the spec allows
    int8; None otherwise, so an fp32-only compile does not measure it."""
    optimize = getattr(spec, "optimize", None)
    if "int8" not in tuple(getattr(optimize, "precisions", ()) or ()):
        return None
    from edgec.dsl.host import onnxruntime_saturates

    return onnxruntime_saturates()


def _dependencies(inputs: _Inputs) -> list[str]:
    return [inputs.model_path, *inputs.external_files, *inputs.spec_files, *inputs.data_files,
            *inputs.labels_files]


# --------------------------------------------------------------------------- compile


def compile_model(model_path: str, spec, out: str, options: CompileOptions | None = None) -> CompileResult:
    """Compile ``model_path`` for ``spec`` (a path or a resolved Spec) into folder ``out``.

    Raises `BudgetError` (exit 4) when a budget or the tolerance is missed and
    ``allow_over_budget`` is off; then ``out`` is left as it was.
    """
    options = options or CompileOptions()
    inputs = _read_inputs(model_path, spec, options)
    key, digests = _cache_key(inputs, options)
    cache_dir = options.cache_dir or default_cache_dir()
    _check_output_paths(out, inputs, cache_dir, options.depfile)
    publish.recover(out)  # an OUT a crash left aside is put back first
    if options.depfile:
        # The depfile's target is the manifest: build tools want a file, not a folder.
        try:
            art.write_depfile(options.depfile, os.path.join(out, art.MANIFEST),
                              _dependencies(inputs))
        except OSError as e:
            raise UsageError(Diagnostic.error(f"cannot write the depfile: {e.strerror}",
                                              Location(path=options.depfile))) from None

    existing = _manifest_if_current(out, key)
    if existing is not None:
        _check_outcome(existing, options, out)
        return CompileResult(out, existing, cached="output")
    publish.check_replaceable(out)  # refuse before any work, not after it

    cached_dir = os.path.join(cache_dir, "artifacts", key)
    sink = DiagnosticSink()
    try:
        with publish.staging_dir(out) as staging:
            manifest = publish.cache_fetch(cached_dir, key, staging)
            cached = "no" if manifest is None else "cache"
            if manifest is None:
                manifest = _build(inputs, staging, key, digests, cache_dir, options, sink)
                publish.cache_store(staging, cached_dir)
            _check_outcome(manifest, options, out)  # raising here removes the staging folder
            with open(os.path.join(staging, art.REPORT), errors="replace") as f:
                report = f.read()
    except EdgecError as e:
        # A file in the staging folder is no path the user knows: point at OUT instead.
        e.diagnostics[:] = [
            dataclasses.replace(d, location=Location(path=out))
            if d.location is not None and ".edgec-tmp-" in (d.location.path or "") else d
            for d in e.diagnostics]
        raise
    except OSError as e:
        if e.errno not in _USER_ERRNOS:
            raise
        where = f" ({e.filename})" if e.filename else ""
        raise UsageError(Diagnostic.error(f"cannot write the artifact: {e.strerror}{where}",
                                          Location(path=out))) from None
    return CompileResult(out, manifest, sink.diagnostics, cached=cached, report=report)


# The file system saying no (full, read-only, not allowed): the user's to fix, not a bug.
_USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                errno.EFBIG, errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.EMLINK}


def _check_output_paths(out: str, inputs: _Inputs, cache_dir: str, depfile: str | None) -> None:
    """OUT is replaced on every compile: it must not be, or hold, anything the compile
    reads or keeps (exit 2, before any work)."""
    publish.check_output_folder(out, {
        "the model": [inputs.model_path, *inputs.external_files],
        "the spec": list(inputs.spec_files),
        "the data": [*inputs.data_files, *inputs.labels_files],
        "the cache folder": [cache_dir],
        "the depfile": [depfile] if depfile else [],
        "the working folder": [os.getcwd()],
    })


def _manifest_if_current(folder: str, key: str) -> dict | None:
    """OUT's manifest when OUT is the artifact for ``key``, every file matching its
    recorded sha256; read through one descriptor of the folder, so a concurrent swap
    cannot mix two artifacts' files."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        manifest = art.read_manifest(folder, dir_fd=fd)
        if (manifest is None or manifest.get("cache_key") != key
                or manifest.get("format_version") != art.FORMAT_VERSION):
            return None
        return None if art.verify_files(folder, manifest, dir_fd=fd) else manifest
    finally:
        os.close(fd)


def _check_outcome(manifest: dict, options: CompileOptions, out: str) -> None:
    if manifest.get("budgets_held", False) or options.allow_over_budget:
        return
    error = BudgetError(_budget_diagnostics(manifest, out))
    error.manifest = manifest  # what `--json` reports: the budgets and every candidate
    raise error


def _budget_diagnostics(manifest: dict, out: str) -> list[Diagnostic]:
    missed = [b for b in manifest["budgets"] if b["status"] != "held"]
    head = ("the spec's budget cannot be met" if any(b["status"] == "missed" for b in missed)
            else "the spec's budget cannot be verified for this target")
    candidates = manifest.get("candidates", [])
    tried = [c for c in candidates if c.get("status") != "skipped"]
    # No artifact is written, so the list is here rather than in report.txt.
    notes = [*manifest.get("summary", []),
             f"{len(tried)} configuration{'s' if len(tried) != 1 else ''} tried (nothing was "
             "written; --json lists each with its budgets):",
             *[f"  {c['label']}: {c.get('reason') or c['status']}" for c in candidates],
             "--allow-over-budget writes the best one anyway, marked as such, with its "
             "report.txt"]
    return [Diagnostic.error(head, Location(path=out), notes=notes, code="budget")]


# --------------------------------------------------------------------------- the build


def _target_at_hand(target) -> bool:
    from edgec.dsl.host import architecture
    return target.accelerator is None and target.arch == architecture()


@dataclass
class _Context:
    """What every candidate's evaluation shares."""

    inputs: _Inputs
    spec: Any
    staging: str
    cache_dir: str
    options: CompileOptions
    sink: DiagnosticSink
    original: onnx.ModelProto
    base_dir: str
    calibration: dict[str, np.ndarray]
    evaluation: dict[str, np.ndarray]
    reference: list[np.ndarray]
    labels: np.ndarray | None
    bench_inputs: dict[str, np.ndarray]
    at_hand: bool
    build_options: BuildOptions


@dataclass
class _Tried:
    evaluation: Any                  # planner Evaluation
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


def _build(inputs: _Inputs, staging: str, key: str, digests: dict, cache_dir: str,
           options: CompileOptions, sink: DiagnosticSink) -> dict:
    import time

    from edgec.frontend.onnx_import import import_model, parse_model_bytes
    from edgec.passmgr import default_registry
    from edgec.planner.search import choose, configurations, reject_slower_than_fp32, summary

    from edgec.progress import PhaseClock

    # Compile time per phase, for measurements.json and the report.
    clock = PhaseClock(options.progress, names={"plan": "passes"})
    options = dataclasses.replace(options, progress=clock)
    spec = inputs.spec
    target = spec.target
    base_dir = os.path.dirname(os.path.abspath(inputs.model_path))
    original = parse_model_bytes(inputs.model_bytes, inputs.model_path)
    model = import_model(original, base_dir=base_dir, source=inputs.model_path)
    nodes_before = model.node_count()

    in_specs = model_inputs(original)
    batch = spec.budget.latency.batch if spec.budget.latency else 1
    _check_input_sizes(in_specs, batch, inputs.model_path)
    if inputs.data_pattern:
        samples = load_samples(inputs.data_pattern, in_specs)
        count = len(next(iter(samples.values())))
        data_note = f"{count} samples from {os.path.basename(inputs.data_pattern)}"
    else:
        # A model with a fixed batch is fed whole batches: draw at least two of them.
        count = max(SYNTHETIC_SAMPLES, 2 * (_fixed_batch(original) or 0))
        samples = synthetic_samples(in_specs, count, spec.optimize.seed)
        data_note = (f"{count} synthetic samples drawn from the input types "
                     f"(seed {spec.optimize.seed}); the spec gives no data")
        sink.warning("accuracy is checked on synthetic inputs: the spec gives no data")
    labels = load_labels(spec.accuracy.labels) if spec.accuracy.labels else None
    if labels is not None and not inputs.data_pattern:
        raise UsageError(Diagnostic.error(
            "the spec gives labels but no data: labels name the classes of the data's samples, "
            "so they need the data (accuracy.data or --data)",
            Location(path=spec.accuracy.labels)))
    if labels is not None:
        check_labels(labels, count, None, spec.accuracy.labels)  # one per sample
    all_labels = labels
    # Calibrate on the even samples and score on the odd ones, so that quantization is
    # never judged on the very samples it was calibrated with.
    if count >= 16:
        calibration = {k: v[0::2] for k, v in samples.items()}
        evaluation = {k: v[1::2] for k, v in samples.items()}
        labels = labels[1::2] if labels is not None else None
        data_note += "; calibration on the even-numbered half, accuracy on the odd-numbered half"
    else:
        calibration = evaluation = samples
    reference = _reference_outputs(inputs.model_path, original, evaluation)
    if labels is not None:
        first = reference[0] if reference else None
        classes = int(np.prod(first.shape[1:])) if first is not None and first.ndim > 1 else None
        check_labels(all_labels, len(all_labels), classes, spec.accuracy.labels)  # its classes
    ctx = _Context(
        inputs=inputs, spec=spec, staging=staging, cache_dir=cache_dir, options=options,
        sink=sink, original=original, base_dir=base_dir,
        calibration=calibration, evaluation=evaluation,
        reference=reference, labels=labels,
        bench_inputs=_batch_inputs(samples, in_specs, batch), at_hand=_target_at_hand(target),
        build_options=BuildOptions(
            cache_dir=cache_dir, tuning_trials=spec.optimize.tuning.trials,
            tuning_seconds=(spec.optimize.tuning.wall_time.to("s")
                            if spec.optimize.tuning.wall_time is not None else None),
            seed=spec.optimize.seed, threads=options.threads, rpc=options.rpc,
            batch=batch, progress=options.progress))

    caveat = cannot_discriminate(spec.accuracy.metric, ctx.reference)
    if caveat:
        sink.warning(caveat)

    choice = options.backend or spec.optimize.backend
    if options.rpc is not None:
        _check_rpc(options.rpc, choice)
    configs, skipped = configurations(spec, target, choice, set(default_registry().names()))
    if not configs:
        raise UsageError(Diagnostic.error(
            "the spec allows no configuration that can be built here",
            notes=[f"{s.label}: {s.reason}" for s in skipped]))
    tried: list[_Tried] = []
    for index, config in enumerate(configs):
        done_group = tried and tried[-1].evaluation.config.group != config.group
        if done_group and spec.optimize.search == "first" and any(
                t.evaluation.held for t in tried):
            break  # the previous group holds; its backends were all measured
        options.progress("plan", index, len(configs), config.label)
        start = time.perf_counter()
        attempt = _evaluate(config, index, ctx, explicit_backend=choice != "auto",
                            rivals=tried)
        attempt.seconds = time.perf_counter() - start
        tried.append(attempt)
    built = [t for t in tried if t.skipped is None]
    rest = len(configs) - len(tried)
    options.progress("plan", len(configs), len(configs),
                     f"done: {len(built)} built" + (f", {len(tried) - len(built)} skipped"
                                                    if len(built) < len(tried) else "")
                     + (f", {rest} not needed (search first: an earlier one holds)"
                        if rest else ""))
    evaluations = [t.evaluation for t in built]
    reject_slower_than_fp32(evaluations)
    winner, best = choose(evaluations, spec.optimize.search)
    chosen = next(t for t in built if t.evaluation is best)
    if chosen.result is None:
        raise ModelError(Diagnostic.error(
            "no configuration could be built: "
            + "; ".join(f"{t.evaluation.config.label}: {t.evaluation.error}" for t in tried)))
    for name in os.listdir(chosen.folder):
        os.replace(os.path.join(chosen.folder, name), os.path.join(staging, name))
    for t in tried:
        shutil.rmtree(t.folder, ignore_errors=True)
    if chosen.int8 and not chosen.int8["representative"]:
        sink.warning(f"int8 accuracy: {chosen.int8['scoring']}")
    if not chosen.result.tuned:
        sink.warning(f"the {chosen.result.backend} module is untuned: expect it to be far slower "
                     "than a tuned one; give the spec a tuning budget")

    ev = chosen.evaluation
    files = _file_digests(staging)
    candidates = []
    for t in tried:
        e = t.evaluation
        if t.skipped is not None:
            candidates.append({**e.config.to_json(), "status": "skipped", "reason": t.skipped})
            continue
        status = ("chosen" if t is chosen else "error" if e.error else
                  "held" if e.held else "rejected")
        reason = "" if t is chosen and e.held else e.rejection()
        if t is not chosen and e.held:
            reason = ("holds every budget, but search 'fastest' preferred a faster one"
                      if spec.optimize.search == "fastest" else "holds every budget")
        candidates.append({**e.config.to_json(), "status": status, "reason": reason,
                           "accuracy": e.accuracy_value, "accuracy_held": e.accuracy_held,
                           "accuracy_scored_on": e.accuracy_scored_on,
                           "size_bytes": e.size_bytes, "latency_where": e.latency_where,
                           **({"latency_note": t.latency_note} if t.latency_note else {}),
                           "tuned": t.result.tuned if t.result else None,
                           "budgets": [{k: b[k] for k in ("name", "status")} for b in e.budgets]})
    candidates += [{"label": s.label, "status": "skipped", "reason": s.reason} for s in skipped]
    manifest = {
        "format_version": art.FORMAT_VERSION,
        "edgec_version": __version__,
        "cache_key": key,
        "inputs": {"model_file": os.path.basename(inputs.model_path), **digests},
        "spec": _spec_record(spec),
        "target": {"name": target.name, "arch": target.arch, "triple": target.triple,
                   "cpu": target.cpu, "at_hand": ctx.at_hand},
        "configuration": {**ev.config.to_json(), "pipeline": chosen.pipeline},
        "passes": {"nodes_before": nodes_before, "nodes_after": chosen.nodes_after,
                   "runs": [{"pass": r.name, "invocation": r.text, "modified": r.modified,
                             "stats": r.stats, "iteration": r.iteration} for r in chosen.records]},
        "backend": {"name": chosen.result.backend, "runnable_here": chosen.result.runnable_here,
                    "tuned": chosen.result.tuned, "details": chosen.result.details,
                    "notes": chosen.result.notes},
        "search": spec.optimize.search,
        "candidates": candidates,
        **({"int8": chosen.int8} if chosen.int8 else {}),
        "accuracy": {"metric": spec.accuracy.metric, "value": ev.accuracy_value,
                     "held": ev.accuracy_held, "detail": ev.accuracy_detail, "data": data_note,
                     "scored_on": ev.accuracy_scored_on, "scored_where": ev.accuracy_scored_where,
                     **({"caveat": caveat} if caveat else {})},
        "latency": _latency_record(chosen),
        "size_bytes": sum(f["bytes"] for f in files.values()),
        "budgets": ev.budgets,
        "budgets_held": winner is not None,
        "over_budget": winner is None,
        "summary": [] if winner is not None else summary(evaluations, best, spec),
        "files": files,
        "diagnostics": [d.to_json() for d in sink.diagnostics],
    }
    art.write_if_changed(os.path.join(staging, art.MANIFEST), art.dumps_canonical(manifest))
    measurements = {
        "candidates": [{"label": t.evaluation.config.label,
                        "latency": t.latency.to_json() if t.latency else None,
                        "estimate": t.estimate,
                        **({"int8_time": t.int8_time} if t.int8_time else {}),
                        "seconds": round(t.seconds, 3)} for t in tried],
        "latency": chosen.latency.to_json() if chosen.latency else chosen.estimate,
        "passes": [r.to_json() for r in chosen.records],
        "phases": clock.finish(),
    }
    art.write_if_changed(os.path.join(staging, art.MEASUREMENTS), art.dumps_canonical(measurements))
    from edgec.report import html_report, text_report
    art.write_if_changed(os.path.join(staging, art.REPORT), text_report(manifest, measurements))
    art.write_if_changed(os.path.join(staging, "report.html"), html_report(manifest, measurements))
    return manifest


def _evaluate(config, index: int, ctx: _Context, *, explicit_backend: bool,
              rivals: list[_Tried] = ()) -> _Tried:
    """Build, measure and score one configuration in its own folder — unless, against
    the ``rivals`` already measured, it cannot be chosen (`_cannot_win`)."""
    from edgec.frontend.onnx_export import save_model
    from edgec.frontend.onnx_import import import_model
    from edgec.passmgr import PassContext, PassManager
    from edgec.planner.search import Evaluation

    spec = ctx.spec
    folder = tempfile.mkdtemp(prefix=f".candidate-{index}-", dir=ctx.staging)
    ev = Evaluation(config)
    attempt = _Tried(ev, folder)
    model = import_model(ctx.original, base_dir=ctx.base_dir, source=ctx.inputs.model_path,
                         check=False)
    from edgec.passmgr import default_pipeline
    base = spec.optimize.pipeline or default_pipeline(config.backend)
    pipeline = ",".join(filter(None, [base, config.passes]))
    attempt.pipeline = pipeline
    pass_ctx = PassContext(diagnostics=DiagnosticSink(), spec=spec, target=spec.target,
                           seed=spec.optimize.seed, calibration_data=ctx.calibration,
                           progress=ctx.options.progress)
    try:
        manager = PassManager(pipeline, context=pass_ctx, source=ctx.inputs.model_path,
                              reproducer_dir=os.path.join(ctx.cache_dir, "reproducers"))
        run = manager.run(model, input_bytes=ctx.inputs.model_bytes)
    except EdgecError as e:
        if not config.passes:
            raise  # the base pipeline itself fails: that is the user's problem to see
        ev.error = f"the passes failed: {e.diagnostics[0].message}"
        return attempt
    for d in pass_ctx.diagnostics.diagnostics:
        if config.passes == "" or d.is_error:
            ctx.sink.emit(d)
    model = run.model
    attempt.records = run.records
    attempt.nodes_after = model.node_count()
    attempt.skipped = _cannot_win(config, model, ctx, rivals)
    if attempt.skipped is not None:
        shutil.rmtree(folder, ignore_errors=True)
        return attempt
    save_model(model, os.path.join(folder, "model.onnx"))
    optimized = onnx.load(os.path.join(folder, "model.onnx"), load_external_data=False)
    # A configuration whose passes gave the very model a built candidate on the same
    # backend has (a per-layer fallback that kept no layer fp32) is that candidate.
    attempt.model_digest = hashlib.sha256(b"".join(
        name.encode() + bytes.fromhex(art.sha256_file(os.path.join(folder, name)))
        for name in sorted(os.listdir(folder)))).hexdigest()  # model.onnx and its weights
    twin = next((t for t in rivals if t.skipped is None and t.result is not None
                 and t.model_digest == attempt.model_digest
                 and t.evaluation.config.backend == config.backend), None)
    if twin is not None:
        attempt.skipped = f"not built: its passes gave the same model as {twin.evaluation.config.label}"
        shutil.rmtree(folder, ignore_errors=True)
        return attempt

    try:
        backend = get_backend(config.backend)
    except EdgecError as e:
        if explicit_backend:
            raise
        ev.error = e.diagnostics[0].message
        return attempt
    reason = backend.unavailable_reason(spec.target)
    if reason:
        if explicit_backend:
            raise UsageError(Diagnostic.error(
                f"backend '{config.backend}' cannot build for {spec.target.name}: {reason}"))
        ev.error = f"backend {config.backend} unavailable: {reason}"
        return attempt
    try:
        # With the file's path: external weights resolve in the candidate's own folder.
        model_file = os.path.join(folder, "model.onnx")
        backend.check_model(optimized, model_path=model_file)
        # The backend's own console output (TVM's C++ warnings, MetaSchedule's logging)
        # goes to a log file under the cache; edgec's progress still reaches stderr.
        ctx.options.progress("build", 0, None, f"building {config.label}")
        with backend_output_to(os.path.join(ctx.cache_dir, "logs", f"{config.backend}.log")):
            result = backend.build(optimized, spec.target, folder, ctx.build_options,
                                   model_path=model_file)
    except ModelError as e:
        if explicit_backend:
            raise
        ev.error = f"{config.backend} cannot take this model: {e.diagnostics[0].message}"
        return attempt
    attempt.result = result
    ev.tuned = result.tuned

    # Latency: measured on this host or over RPC, else estimated from the target. A
    # backend that cannot be measured over RPC (ort) is measured here when the target is
    # at hand, else estimated, and the candidate says so.
    lat = spec.budget.latency
    percentile = lat.percentile if lat else 50
    rpc = ctx.options.rpc
    measures_over_rpc = getattr(backend, "measures_over_rpc", False)
    if rpc is not None and not measures_over_rpc:
        attempt.latency_note = (
            f"the {config.backend} backend cannot be measured over TVM RPC: its latency was "
            + ("measured on this host" if ctx.at_hand else
               "estimated from the target description (edgec.planner.costmodel)"))
    # An emulated RPC device runs the module (accuracy below) but its timings are the
    # emulator's, never the board's: latency is then estimated as with no device.
    over_rpc = rpc is not None and not rpc.emulated and measures_over_rpc
    if ctx.at_hand or over_rpc:
        ctx.options.progress("measure", 0, None, f"measuring {config.label}")
        measure_options = ctx.build_options if over_rpc else \
            dataclasses.replace(ctx.build_options, rpc=None)
        attempt.latency = backend.measure(folder, result.details, ctx.bench_inputs,
                                          measure_options)
        ev.latency_s = attempt.latency.percentile(percentile)
        ev.latency_where = attempt.latency.where
    else:
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

    # Accuracy against the fp32 model, on samples the calibration did not see: on the
    # module's own outputs wherever it runs (the RPC device, this host), with the
    # target's int8 arithmetic where this host's onnxruntime would differ from it, else
    # on the optimized ONNX with onnxruntime as a proxy.
    from edgec.quantization.arithmetic import exact_session, scoring
    score = scoring(optimized, spec.target, base_dir=folder)
    attempt.int8 = _int8_record(run.records, spec, score)
    if attempt.int8 is not None and config.backend == "ort" and result.runnable_here:
        # What onnxruntime ran in int8, per node, from its own profiler.
        from edgec.quantization.executed import profile
        ctx.options.progress("profile", 0, None, f"profiling {config.label}")
        executed = profile(optimized, ctx.bench_inputs, runs=2, threads=ctx.options.threads or 0,
                           base_dir=folder)
        attempt.int8["executed"] = executed.to_json()
        attempt.int8_time = executed.timing()
    remote = getattr(backend, "remote_runner", None)
    runner = proxy = None
    on_device = not result.runnable_here and rpc is not None and remote is not None
    ctx.options.progress("score", 0, None, f"running {config.label} on {rpc.where}"
                         if on_device else f"scoring {config.label}")
    if on_device:
        # The device itself runs the module: its outputs are the target's arithmetic.
        runner = remote(folder, result.details, rpc, threads=ctx.options.threads)
        ev.accuracy_scored_on, ev.accuracy_scored_where = "module", rpc.where
    elif score.path == "exact":
        session = exact_session(onnx.load(os.path.join(folder, "model.onnx")))
        ev.accuracy_scored_on, ev.accuracy_scored_where = "exact-int8", "host"
    elif result.runnable_here:
        runner = backend.load(folder, result.details)
        ev.accuracy_scored_on, ev.accuracy_scored_where = "module", "host"
    else:
        from edgec.backends.ort import OrtRunner
        proxy = OrtRunner(os.path.join(folder, "model.onnx"), {})
        ev.accuracy_scored_on, ev.accuracy_scored_where = "onnx-proxy", "host"
    if runner is not None:
        run_fn = lambda feed: [runner.run(feed)[n] for n in runner.output_names]  # noqa: E731
        names = runner.input_names
    elif proxy is not None:
        run_fn = lambda feed: proxy.session.run(None, feed)  # noqa: E731
        names = proxy.input_names
    else:
        run_fn = lambda feed: session.run(None, feed)  # noqa: E731
        names = [i.name for i in session.get_inputs()]
    if runner is not None and result.batch is not None:
        run_fn = _in_batches_of(run_fn, result.batch)  # a module bound to one batch
    try:
        candidate = _run_all(run_fn, ctx.evaluation, names, _fixed_batch(optimized))
    except MemoryError:
        ev.error = ("its outputs over the evaluation samples take more memory than this "
                    "machine allows")
        return attempt
    mismatch = _outputs_mismatch(ctx.reference, candidate)
    if mismatch:
        ev.error = f"its outputs do not match the original model's in shape: {mismatch}"
        return attempt
    metric = evaluate(spec.accuracy.metric, spec.accuracy.tolerance, ctx.reference, candidate,
                      ctx.labels)
    ev.accuracy_value, ev.accuracy_held, ev.accuracy_detail = metric.value, metric.held, metric.detail
    if ev.accuracy_scored_on == "exact-int8":
        ev.accuracy_detail += f" ({score.note})"
    elif ev.accuracy_scored_on == "onnx-proxy":
        ev.accuracy_detail += " (scored on the optimized ONNX with onnxruntime)"
    elif ev.accuracy_scored_where != "host":
        ev.accuracy_detail += f" (scored on the module's own outputs on {rpc.where})"
    if ev.accuracy_scored_on != "exact-int8" and not score.representative \
            and ev.accuracy_scored_where == "host":
        ev.accuracy_detail += f" ({score.note})"
    ev.size_bytes = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    ev.budgets = _judge(spec, ev, model)
    return attempt


def _cannot_win(config, model, ctx: _Context, rivals) -> str | None:
    """Why a TVM candidate need not be built, or None.

    It would have to beat the measured candidates that hold every budget, or its own
    group (the same model on another backend: the same accuracy, about the same size, so
    the same fate on every budget but latency). An untuned TVM module does not: it runs
    5-190x slower than onnxruntime on the same model here (docs/tvm-notes.md). A tuned
    one is not built when even the cost model's estimate, which assumes tuned kernels,
    is over FAR_SLOWER times the fastest such rival. Only TVM is judged this way: its build
    (and tuning) is where the minutes go; an onnxruntime candidate costs seconds."""
    if config.backend != "tvm":
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
        ctx.at_hand or ctx.options.rpc is not None)
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


def _int8_record(records, spec, score) -> dict | None:
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


def _reference_outputs(model_path: str, original: onnx.ModelProto,
                       samples: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The fp32 model's outputs on every sample, through onnxruntime."""
    import onnxruntime as ort

    try:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        # From the file, so that external data resolves next to it.
        session = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ModelError(Diagnostic.error(
            f"onnxruntime cannot run the original model, so accuracy cannot be checked: "
            f"{str(e).splitlines()[0]}")) from None
    try:
        return _run_all(lambda feed: session.run(None, feed), samples,
                        [i.name for i in session.get_inputs()], _fixed_batch(original))
    except Exception as e:
        if not type(e).__module__.startswith("onnxruntime"):
            raise
        raise ModelError(Diagnostic.error(
            f"onnxruntime cannot run the original model, so accuracy cannot be checked: "
            f"{_ort_message(e)}", Location(path=model_path))) from None


def _ort_message(e: Exception) -> str:
    text = " ".join(str(e).split())
    return text[:300] + ("..." if len(text) > 300 else "")


# One sample of one input, in bytes: beyond this the model is not one edgec can check
# (a declared dimension of 2**31, say), and nothing is allocated for it.
MAX_SAMPLE_BYTES = 256 << 20


def _check_input_sizes(in_specs: list[InputSpec], batch: int, model_path: str) -> None:
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


def _fixed_batch(proto: onnx.ModelProto) -> int | None:
    """The model's fixed leading dimension, or None when it is symbolic (any batch)."""
    for spec in model_inputs(proto):
        if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] > 0:
            return spec.shape[0]
    return None


def _run_all(run, samples: dict[str, np.ndarray], names: list[str], fixed: int | None,
             chunk: int = 64) -> list[np.ndarray]:
    total = len(next(iter(samples.values())))
    if fixed and total < fixed:
        raise UsageError(Diagnostic.error(
            f"the model takes a fixed batch of {fixed} samples, but the data holds only {total}"))
    step = fixed or chunk
    outs: list[list[np.ndarray]] = []
    for start in range(0, total - (total % step if fixed else 0), step):
        feed = {n: samples[n][start:start + step] for n in names}
        outs.append([np.asarray(r) for r in run(feed)])
    return _join_chunks(outs)


def _outputs_mismatch(reference: list[np.ndarray], candidate: list[np.ndarray]) -> str | None:
    """Why the candidate's outputs cannot be scored against the reference's (a count or a
    shape that differs), or None."""
    if len(reference) != len(candidate):
        return f"{len(candidate)} outputs, the original has {len(reference)}"
    for index, (want, got) in enumerate(zip(reference, candidate)):
        if np.shape(want) != np.shape(got):
            return (f"output {index} has shape {list(np.shape(got))}, the original's "
                    f"{list(np.shape(want))}")
    return None


def _join_chunks(outs: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Each output's chunks joined along the batch axis; an output without one (a scalar,
    e.g. a loss or a count over the whole feed) gives one value per chunk, stacked, so
    the reference and the candidate are still compared value for value."""
    return [np.stack(parts) if parts[0].ndim == 0 else np.concatenate(parts, axis=0)
            for parts in ([o[i] for o in outs] for i in range(len(outs[0])))]


def _in_batches_of(run, batch: int):
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
        return _join_chunks(outs)
    return run_batched


def _batch_inputs(samples: dict[str, np.ndarray], in_specs: list[InputSpec],
                  batch: int) -> dict[str, np.ndarray]:
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


def _latency_record(chosen: _Tried) -> dict:
    # The figures themselves are in measurements.json: they differ between runs.
    note = {"note": chosen.latency_note} if chosen.latency_note else {}
    if chosen.latency is not None:
        return {"measured": True, "where": chosen.latency.where, "figures": art.MEASUREMENTS,
                **note}
    why = (chosen.estimate or {}).get("why") or \
        "the target is not at hand and no RPC tracker was given"
    return {"measured": False, "where": "estimated", "figures": art.MEASUREMENTS,
            "why": chosen.latency_note or
            f"{why}: estimated from the target description (edgec.planner.costmodel)", **note}


def _check_rpc(rpc: RpcConfig, choice: str) -> None:
    """Before any work: an RPC tracker only serves backends measured over TVM RPC, and
    it must answer with a device under the key (exit 2 otherwise)."""
    if choice != "auto":
        try:
            backend = get_backend(choice)
        except EdgecError:
            return  # the configuration step reports an unknown backend
        if not getattr(backend, "measures_over_rpc", False):
            raise UsageError(Diagnostic.error(
                f"the {choice} backend cannot be measured (or tuned) over TVM RPC: drop "
                "--rpc-tracker/--rpc-key and measure the artifact on the device with "
                "`edgec bench` there, or use --backend tvm or auto"))
    from edgec.backends.tvm import check_rpc_tracker

    check_rpc_tracker(rpc)


def _judge(spec, ev, model) -> list[dict]:
    budgets = []
    lat = spec.budget.latency
    if lat is not None and ev.latency_s is not None:
        limit = lat.limit.to("s")
        held = ev.latency_s <= limit
        label = "estimated " if ev.latency_where == "estimated" else ""
        budgets.append({
            "name": "latency", "status": "held" if held else "missed",
            "limit": str(lat.limit), "percentile": lat.percentile, "where": ev.latency_where,
            "detail": (f"p{lat.percentile} within {lat.limit} ({ev.latency_where})" if held else
                       f"{label}p{lat.percentile} {ev.latency_s * 1e3:.3g} ms against {lat.limit} "
                       f"({ev.latency_s / limit:.2f}x, {ev.latency_where})")})
    if spec.budget.size is not None:
        held = ev.size_bytes <= spec.budget.size.to("B")
        budgets.append({"name": "size", "status": "held" if held else "missed",
                        "limit": str(spec.budget.size), "value_bytes": ev.size_bytes,
                        "detail": f"{_in_unit(ev.size_bytes, spec.budget.size)} against "
                                  f"{spec.budget.size}"})
    if spec.budget.memory is not None:
        estimate = _memory_estimate(model)
        held = estimate <= spec.budget.memory.to("B")
        budgets.append({"name": "memory", "status": "held" if held else "missed",
                        "limit": str(spec.budget.memory), "value_bytes": estimate,
                        "estimated": True,
                        "detail": f"estimated peak {_in_unit(estimate, spec.budget.memory)} "
                                  f"(weights + the two largest activations) against "
                                  f"{spec.budget.memory}"})
    budgets.append({"name": "accuracy", "status": "held" if ev.accuracy_held else "missed",
                    "metric": spec.accuracy.metric, "detail": ev.accuracy_detail})
    return budgets


def _in_unit(nbytes: int, limit) -> str:
    """``nbytes`` in the unit the spec wrote its limit in ("12.3 KiB against 10 KiB")."""
    from edgec.dsl.units import UNITS

    unit = limit.unit or "B"
    value = nbytes / UNITS[unit][1]
    return f"{value:.4g} {unit}" if value < 1000 else f"{value:,.0f} {unit}"


def _memory_estimate(model) -> int:
    weights = sum(v.const.nbytes for v in model.graph.initializers.values() if v.const is not None)
    activations = []
    for node in model.graph:
        for out in node.outputs:
            shape, dtype = out.shape, out.dtype
            if shape is not None and shape.is_static and dtype is not None:
                activations.append(shape.numel() * max(1, dtype.itemsize_bits // 8))
    activations.sort(reverse=True)
    return int(weights + sum(activations[:2]))


def _file_digests(folder: str) -> dict:
    out = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isfile(path) and name not in (art.MANIFEST, art.MEASUREMENTS, art.REPORT,
                                                 "report.html"):
            out[name] = {"bytes": os.path.getsize(path), "sha256": art.sha256_file(path)}
    return out
