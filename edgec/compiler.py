"""`edgec compile`: model + spec -> artifact folder, or a precise account of which budget
cannot be met.

The steps: read the spec and the model; look the content-hash cache key up (an
identical compile is a no-op; a cached build is copied into place); otherwise run the
pass pipeline, export the optimized ONNX, build with the allowed backends, check
accuracy against the fp32 model on the spec's data, measure latency where the target
is at hand, judge every budget, and publish the folder atomically.
"""

from __future__ import annotations

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
from edgec._version import __version__
from edgec.backends import get_backend
from edgec.backends.base import BuildOptions, BuildResult, LatencyStats, Progress, RpcConfig, no_progress
from edgec.data import (InputSpec, load_labels, load_samples, model_inputs, synthetic_samples)
from edgec.diagnostics import (BudgetError, Diagnostic, DiagnosticSink, EdgecError, Location,
                               ModelError, UsageError)
from edgec.metrics import MetricResult, evaluate

SYNTHETIC_SAMPLES = 64


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
    artifact: art.Artifact | None
    manifest: dict
    diagnostics: list[Diagnostic] = field(default_factory=list)
    cached: str = "no"   # "no" | "output" (OUT already up to date) | "cache" (copied)

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
    from edgec.frontend.onnx_import import parse_model_bytes

    if not isinstance(spec, str) and not isinstance(spec, os.PathLike):
        spec_obj = spec
    else:
        spec_obj = load_spec(spec)
    try:
        with open(model_path, "rb") as f:
            model_bytes = f.read()
    except OSError as e:
        raise ModelError(Diagnostic.error(f"cannot read the model: {e.strerror}",
                                          Location(path=model_path))) from None
    proto = parse_model_bytes(model_bytes, model_path)
    base = os.path.dirname(os.path.abspath(model_path))
    external = sorted({os.path.join(base, e.value) for t in _all_tensor_protos(proto)
                       for e in t.external_data if e.key == "location"})
    pattern = options.data if options.data is not None else spec_obj.accuracy.data
    files = data_files(pattern) if pattern else []
    labels = data_files(spec_obj.accuracy.labels) if spec_obj.accuracy.labels else []
    return _Inputs(model_path, model_bytes, external, spec_obj, list(spec_obj.sources),
                   pattern, files, labels)


def _all_tensor_protos(proto: onnx.ModelProto):
    def graph(g):
        yield from g.initializer
        for n in g.node:
            for a in n.attribute:
                if a.HasField("t"):
                    yield a.t
                if a.HasField("g"):
                    yield from graph(a.g)
                for sub in a.graphs:
                    yield from graph(sub)
    yield from graph(proto.graph)


def _spec_record(spec) -> dict:
    record = spec.to_dict()
    record.pop("sources", None)
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
        "rpc": None if options.rpc is None else [options.rpc.host, options.rpc.port, options.rpc.key],
    }
    key = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
    return key, digests


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
    if options.depfile:
        # The depfile's target is the manifest: build tools want a file, not a folder.
        art.write_depfile(options.depfile, os.path.join(out, art.MANIFEST), _dependencies(inputs))

    existing = _manifest_if_current(out, key)
    if existing is not None:
        _check_outcome(existing, options, out)
        return CompileResult(art.Artifact(out), existing, cached="output")

    cached_dir = os.path.join(cache_dir, "artifacts", key)
    cached = _manifest_if_current(cached_dir, key)
    if cached is not None:
        _check_outcome(cached, options, out)
        art.copy_tree_atomically(cached_dir, out)
        return CompileResult(art.Artifact(out), cached, cached="cache")

    sink = DiagnosticSink()
    with art.staging_dir(out) as staging:
        manifest = _build(inputs, staging, key, digests, cache_dir, options, sink)
        _store_in_cache(staging, cached_dir)
        _check_outcome(manifest, options, out)  # raising here removes the staging folder
    return CompileResult(art.Artifact(out), manifest, sink.diagnostics)


def _manifest_if_current(folder: str, key: str) -> dict | None:
    try:
        with open(os.path.join(folder, art.MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    if manifest.get("cache_key") != key or manifest.get("format_version") != art.FORMAT_VERSION:
        return None
    files = manifest.get("files", {})
    for name, digest in files.items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path) or os.path.getsize(path) != digest.get("bytes"):
            return None
    return manifest


def _store_in_cache(staging: str, cached_dir: str) -> None:
    try:
        os.makedirs(os.path.dirname(cached_dir), exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(cached_dir)}.edgec-tmp-{os.getpid()}-",
                               dir=os.path.dirname(cached_dir))
        for name in os.listdir(staging):
            src = os.path.join(staging, name)
            (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, os.path.join(tmp, name))
        if os.path.exists(cached_dir):
            shutil.rmtree(cached_dir, ignore_errors=True)
        os.rename(tmp, cached_dir)
    except OSError:
        pass  # a cache that cannot be written only costs time next run


def _check_outcome(manifest: dict, options: CompileOptions, out: str) -> None:
    if manifest.get("budgets_held", False) or options.allow_over_budget:
        return
    raise BudgetError(_budget_diagnostics(manifest, out))


def _budget_diagnostics(manifest: dict, out: str) -> list[Diagnostic]:
    missed = [b for b in manifest["budgets"] if b["status"] == "missed"]
    unknown = [b for b in manifest["budgets"] if b["status"] == "unverified"]
    config = manifest.get("configuration", {})
    lines = []
    for b in missed:
        lines.append(f"{b['name']}: {b['detail']}")
    for b in unknown:
        lines.append(f"{b['name']}: {b['detail']}")
    head = ("the spec's budget cannot be met" if missed else
            "the spec's budget cannot be verified for this target")
    notes = lines + [f"best configuration tried: {config.get('precision', 'fp32')} on "
                     f"{manifest['backend']['name']}",
                     "--allow-over-budget writes the artifact anyway, marked as such"]
    return [Diagnostic.error(head, Location(path=out), notes=notes, code="budget")]


# --------------------------------------------------------------------------- the build


def _target_at_hand(target) -> bool:
    from edgec.dsl.host import architecture
    return target.accelerator is None and target.arch == architecture()


def _build(inputs: _Inputs, staging: str, key: str, digests: dict, cache_dir: str,
           options: CompileOptions, sink: DiagnosticSink) -> dict:
    from edgec.frontend.onnx_export import export_model, save_model
    from edgec.frontend.onnx_import import import_model, parse_model_bytes
    from edgec.passmgr import DEFAULT_PIPELINE, PassContext, PassManager

    spec = inputs.spec
    target = spec.target
    progress = options.progress
    base_dir = os.path.dirname(os.path.abspath(inputs.model_path))
    original = parse_model_bytes(inputs.model_bytes, inputs.model_path)
    model = import_model(original, base_dir=base_dir, source=inputs.model_path)

    # Samples for accuracy and measurement: the spec's data, or seeded synthetic inputs.
    in_specs = model_inputs(original)
    if inputs.data_pattern:
        samples = load_samples(inputs.data_pattern, in_specs)
        data_note = f"{len(next(iter(samples.values())))} samples from {inputs.data_pattern}"
    else:
        samples = synthetic_samples(in_specs, SYNTHETIC_SAMPLES, spec.optimize.seed)
        data_note = (f"{SYNTHETIC_SAMPLES} synthetic samples drawn from the input types "
                     f"(seed {spec.optimize.seed}); the spec gives no data")
        sink.warning("accuracy is checked on synthetic inputs: the spec gives no data")
    labels = load_labels(spec.accuracy.labels) if spec.accuracy.labels else None

    progress("passes", 0, None, "running the pass pipeline")
    pipeline = spec.optimize.pipeline or DEFAULT_PIPELINE
    context = PassContext(diagnostics=sink, spec=spec, target=target, seed=spec.optimize.seed,
                          calibration_data=samples)
    manager = PassManager(pipeline, context=context, source=inputs.model_path,
                          reproducer_dir=os.path.join(cache_dir, "reproducers"))
    nodes_before = model.node_count()
    run = manager.run(model, input_bytes=inputs.model_bytes)
    model = run.model
    model_file = os.path.join(staging, "model.onnx")
    save_model(model, model_file)
    optimized = onnx.load(model_file, load_external_data=False)

    reference = _reference_outputs(inputs.model_path, original, samples)

    build_options = BuildOptions(
        cache_dir=cache_dir, tuning_trials=spec.optimize.tuning.trials,
        tuning_seconds=(spec.optimize.tuning.wall_time.to("s")
                        if spec.optimize.tuning.wall_time is not None else None),
        seed=spec.optimize.seed, threads=options.threads, rpc=options.rpc, progress=progress)
    backend_choice = options.backend or spec.optimize.backend
    batch = spec.budget.latency.batch if spec.budget.latency else 1
    bench_inputs = _batch_inputs(samples, in_specs, batch)
    at_hand = _target_at_hand(target)
    candidates = _build_candidates(backend_choice, optimized, target, staging, build_options,
                                   bench_inputs, at_hand, sink)
    chosen = _choose(candidates, backend_choice, sink)
    _promote(chosen, staging)
    for c in candidates:
        shutil.rmtree(c.folder, ignore_errors=True)

    accuracy, accuracy_note = _accuracy(chosen, staging, optimized, base_dir, samples, reference,
                                        labels, spec)
    budgets = _judge(spec, chosen.latency, at_hand, options.rpc, staging, model, accuracy)
    budgets_held = all(b["status"] == "held" for b in budgets)
    files = _file_digests(staging)
    manifest = {
        "format_version": art.FORMAT_VERSION,
        "edgec_version": __version__,
        "cache_key": key,
        "inputs": {"model_file": os.path.basename(inputs.model_path), **digests},
        "spec": _spec_record(spec),
        "target": {"name": target.name, "arch": target.arch, "triple": target.triple,
                   "cpu": target.cpu, "at_hand": at_hand},
        "configuration": {"precision": "fp32", "pipeline": pipeline,
                          "backend": chosen.result.backend},
        "passes": {"nodes_before": nodes_before, "nodes_after": model.node_count(),
                   "runs": [{"pass": r.name, "invocation": r.text, "modified": r.modified,
                             "stats": r.stats, "iteration": r.iteration} for r in run.records]},
        "backend": {"name": chosen.result.backend, "runnable_here": chosen.result.runnable_here,
                    "tuned": chosen.result.tuned, "details": chosen.result.details,
                    "notes": chosen.result.notes},
        "candidates": [{"backend": c.name, "status": c.status, "reason": c.reason,
                        "tuned": c.result.tuned if c.result else None} for c in candidates],
        "accuracy": {**accuracy.to_json(), "data": data_note, "how": accuracy_note},
        "latency": _latency_record(chosen.latency, at_hand, options.rpc),
        "size_bytes": sum(f["bytes"] for f in files.values()),
        "budgets": budgets,
        "budgets_held": budgets_held,
        "over_budget": not budgets_held,
        "files": files,
        "diagnostics": [d.to_json() for d in sink.diagnostics],
    }
    # The manifest lists every file but itself, the measurements and the report.
    art.write_if_changed(os.path.join(staging, art.MANIFEST), art.dumps_canonical(manifest))
    measurements = {
        "latency": {c.name: c.latency.to_json() for c in candidates if c.latency},
        "passes": [r.to_json() for r in run.records],
        "build_seconds": {c.name: round(c.seconds, 3) for c in candidates},
    }
    art.write_if_changed(os.path.join(staging, art.MEASUREMENTS), art.dumps_canonical(measurements))
    from edgec.report import text_report
    art.write_if_changed(os.path.join(staging, art.REPORT), text_report(manifest, measurements))
    return manifest


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
    return _run_all(lambda feed: session.run(None, feed), samples,
                    [i.name for i in session.get_inputs()], _fixed_batch(original))


def _fixed_batch(proto: onnx.ModelProto) -> int | None:
    """The model's fixed leading dimension, or None when it is symbolic (any batch)."""
    for spec in model_inputs(proto):
        if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] > 0:
            return spec.shape[0]
    return None


def _run_all(run, samples: dict[str, np.ndarray], names: list[str], fixed: int | None,
             chunk: int = 64) -> list[np.ndarray]:
    total = len(next(iter(samples.values())))
    step = fixed or chunk
    outs: list[list[np.ndarray]] = []
    for start in range(0, total - (total % step if fixed else 0), step):
        feed = {n: samples[n][start:start + step] for n in names}
        result = run(feed)
        outs.append([np.asarray(r) for r in (result.values() if isinstance(result, dict) else result)])
    return [np.concatenate([o[i] for o in outs], axis=0) for i in range(len(outs[0]))]


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


@dataclass
class _Candidate:
    name: str
    folder: str
    status: str = "built"      # built | unavailable | failed | chosen | rejected
    reason: str = ""
    result: BuildResult | None = None
    latency: LatencyStats | None = None
    seconds: float = 0.0


def _build_candidates(choice: str, optimized: onnx.ModelProto, target, staging: str,
                      options: BuildOptions, bench_inputs, at_hand: bool,
                      sink: DiagnosticSink) -> list[_Candidate]:
    import time

    names = ["ort", "tvm"] if choice == "auto" else [choice]
    candidates = []
    for name in names:
        folder = tempfile.mkdtemp(prefix=f".candidate-{name}-", dir=staging)
        c = _Candidate(name, folder)
        candidates.append(c)
        try:
            backend = get_backend(name)
        except EdgecError as e:
            if choice != "auto":
                raise
            c.status, c.reason = "unavailable", e.diagnostics[0].message
            continue
        reason = backend.unavailable_reason(target)
        if reason:
            if choice != "auto":
                raise UsageError(Diagnostic.error(f"backend '{name}' cannot build for "
                                                  f"{target.name}: {reason}"))
            c.status, c.reason = "unavailable", reason
            continue
        for f in os.listdir(staging):
            if f.startswith("model.onnx"):
                os.link(os.path.join(staging, f), os.path.join(folder, f))
        start = time.perf_counter()
        try:
            backend.check_model(optimized)
            c.result = backend.build(optimized, target, folder, options)
        except ModelError as e:
            if choice != "auto":
                raise
            c.status, c.reason = "failed", e.diagnostics[0].message
            sink.warning(f"backend '{name}' cannot take this model ({c.reason}); "
                         "using another backend")
            continue
        c.seconds = time.perf_counter() - start
        if at_hand or options.rpc is not None:
            try:
                options.progress("measure", 0, None, f"measuring {name}")
                c.latency = backend.measure(folder, c.result.details, bench_inputs, options)
            except EdgecError as e:
                c.reason = f"not measured: {e.diagnostics[0].message}"
    return candidates


def _choose(candidates: list[_Candidate], choice: str, sink: DiagnosticSink) -> _Candidate:
    built = [c for c in candidates if c.result is not None]
    if not built:
        reasons = "; ".join(f"{c.name}: {c.reason}" for c in candidates)
        raise ModelError(Diagnostic.error(f"no backend could build the model ({reasons})"))
    if choice != "auto":
        chosen = built[0]
        if not chosen.result.tuned:
            sink.warning(f"the {chosen.name} module is untuned: expect it to be far slower than "
                         "a tuned one; give the spec a tuning budget")
    else:
        # An untuned TVM module is only chosen if it measured faster, never by default.
        eligible = [c for c in built if c.result.tuned or c.latency is not None]
        measured = [c for c in eligible if c.latency is not None]
        if measured:
            chosen = min(measured, key=lambda c: c.latency.p50)
        else:
            tuned = [c for c in eligible if c.result.tuned]
            chosen = (tuned or built)[0]
        for c in built:
            if c is not chosen:
                c.status = "rejected"
                c.reason = (f"slower: p50 {c.latency.p50 * 1e3:.3f} ms against "
                            f"{chosen.latency.p50 * 1e3:.3f} ms" if c.latency and chosen.latency
                            else c.reason or f"not chosen: {chosen.name} is preferred when "
                                             "neither can be measured here")
    chosen.status = "chosen"
    return chosen


def _promote(chosen: _Candidate, staging: str) -> None:
    for name in chosen.result.files:
        os.replace(os.path.join(chosen.folder, name), os.path.join(staging, name))


def _accuracy(chosen: _Candidate, staging: str, optimized: onnx.ModelProto, base_dir: str,
              samples, reference, labels, spec) -> tuple[MetricResult, str]:
    backend = get_backend(chosen.result.backend)
    if chosen.result.runnable_here:
        runner = backend.load(staging, chosen.result.details)
        how = f"the {chosen.result.backend} artifact run on this host"
        run = lambda feed: [runner.run(feed)[n] for n in runner.output_names]  # noqa: E731
        names = runner.input_names
    else:
        from edgec.backends.ort import OrtRunner
        runner = OrtRunner(os.path.join(staging, "model.onnx"), {})
        how = ("the optimized ONNX run with onnxruntime on this host (the module itself is "
               "built for another machine)")
        run = lambda feed: runner.session.run(None, feed)  # noqa: E731
        names = runner.input_names
    candidate = _run_all(run, samples, names, _fixed_batch(optimized))
    result = evaluate(spec.accuracy.metric, spec.accuracy.tolerance, reference, candidate, labels)
    return result, how


def _latency_record(latency: LatencyStats | None, at_hand: bool, rpc) -> dict:
    if latency is None:
        return {"measured": False, "where": None,
                "why": "the target is not at hand and no RPC tracker was given"}
    # The figures themselves are in measurements.json: they differ between runs.
    return {"measured": True, "where": latency.where, "figures": art.MEASUREMENTS}


def _judge(spec, latency: LatencyStats | None, at_hand: bool, rpc, staging: str, model,
           accuracy: MetricResult) -> list[dict]:
    budgets = []
    lat = spec.budget.latency
    if lat is not None:
        limit = lat.limit.to("s")
        if latency is None:
            budgets.append({"name": "latency", "status": "unverified",
                            "limit": str(lat.limit), "percentile": lat.percentile,
                            "detail": f"p{lat.percentile} < {lat.limit} could not be measured: "
                                      "the target is not at hand; give --rpc-tracker to measure "
                                      "on the device"})
        else:
            value = latency.percentile(lat.percentile)
            held = value <= limit
            budgets.append({"name": "latency", "status": "held" if held else "missed",
                            "limit": str(lat.limit), "percentile": lat.percentile,
                            "where": latency.where,
                            "detail": (f"p{lat.percentile} {value * 1e3:.3f} ms against "
                                       f"{limit * 1e3:g} ms ({latency.where})") if not held else
                                      f"p{lat.percentile} within {lat.limit} ({latency.where})"})
    size_limit = spec.budget.size
    size = sum(os.path.getsize(os.path.join(staging, f)) for f in os.listdir(staging)
               if os.path.isfile(os.path.join(staging, f)))
    if size_limit is not None:
        held = size <= size_limit.to("B")
        budgets.append({"name": "size", "status": "held" if held else "missed",
                        "limit": str(size_limit), "value_bytes": size,
                        "detail": f"{size / 2**20:.2f} MiB against {size_limit}"})
    if spec.budget.memory is not None:
        estimate = _memory_estimate(model)
        held = estimate <= spec.budget.memory.to("B")
        budgets.append({"name": "memory", "status": "held" if held else "missed",
                        "limit": str(spec.budget.memory), "value_bytes": estimate,
                        "estimated": True,
                        "detail": f"estimated peak {estimate / 2**20:.2f} MiB (weights + the two "
                                  f"largest activations) against {spec.budget.memory}"})
    budgets.append({"name": "accuracy", "status": "held" if accuracy.held else "missed",
                    "metric": accuracy.metric, "detail": accuracy.detail})
    return budgets


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
        if os.path.isfile(path) and name not in (art.MANIFEST, art.MEASUREMENTS, art.REPORT):
            out[name] = {"bytes": os.path.getsize(path), "sha256": art.sha256_file(path)}
    return out
