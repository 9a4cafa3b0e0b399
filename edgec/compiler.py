"""`edgec compile`: model + spec -> artifact folder, or a precise account of which budget
cannot be met.

The steps: read the spec and the model (inputs); look the content-hash cache key up (an
identical compile is a no-op; a cached build is copied into place); otherwise let the
planner (`edgec.planner.plan`) try the configurations the spec allows and choose one,
write its records (`edgec.manifest`), and publish the folder atomically
(`edgec.publish`).
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import importlib.metadata
import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from edgec import artifact as art
from edgec import publish
from edgec._version import __version__
from edgec.backends.base import Progress, RpcConfig, no_progress
from edgec.diagnostics import (BudgetError, Diagnostic, DiagnosticSink, EdgecError, Location,
                               UsageError)
from edgec.manifest import spec_record, write_records
from edgec.planner.budgets import budget_diagnostics
from edgec.planner.plan import make_plan


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

    # What the artifact offers, for code written when edgec.compile returned the Artifact.
    @property
    def measurements(self) -> dict:
        return self.artifact.measurements

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return self.artifact.run(inputs)


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


_PLUGIN_GROUPS = ("edgec.passes", "edgec.targets", "edgec.metrics", "edgec.backends")


def _plugin_versions() -> dict[str, str]:
    out = {}
    for group in _PLUGIN_GROUPS:
        for ep in importlib.metadata.entry_points(group=group):
            dist = getattr(ep, "dist", None)
            if dist is not None:
                out[dist.metadata["Name"]] = dist.version
    return dict(sorted(out.items()))


# Source files that make up the code (data files such as the spec grammar included).
_SOURCE_SUFFIXES = (".py", ".lark", ".edge")


def _hash_tree(h, path: str, label: str) -> None:
    """Each source file's path (relative to ``path``, under ``label``) and bytes, in a
    fixed order; a single-file module is hashed as itself."""
    if os.path.isfile(path):
        with open(path, "rb") as f:
            h.update(f"{label}\0".encode() + f.read() + b"\0")
        return
    for folder, subfolders, names in os.walk(path):
        subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
        for name in sorted(names):
            if name.endswith(_SOURCE_SUFFIXES):
                file = os.path.join(folder, name)
                with open(file, "rb") as f:
                    h.update(f"{label}/{os.path.relpath(file, path)}\0".encode() + f.read() + b"\0")


def _source_location(module: str) -> str | None:
    """The file or package folder of top-level ``module``, found without importing it."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if found is None:
        return None
    if found.submodule_search_locations:
        return next(iter(found.submodule_search_locations), None)
    return found.origin if found.origin and os.path.isfile(found.origin) else None


@functools.cache
def code_digest() -> str:
    """A hash of the code that produces an artifact: edgec's own sources (``edgec``, the
    built-in passes and targets wherever they are mapped from, ``edgec_runtime``) and the
    sources of the plugins installed through edgec's entry points. A change to a pass
    with the same version number is then a different compile, not "up to date". Computed
    once per process (a few ms): the code does not change under a running compile."""
    import importlib.util

    h = hashlib.sha256()
    roots = {"edgec": os.path.dirname(os.path.abspath(__file__))}  # this module's package
    runtime = _source_location("edgec_runtime")
    if runtime is not None:
        roots["edgec_runtime"] = runtime
    for sub in ("passes", "targets"):
        found = importlib.util.find_spec(f"edgec.{sub}")
        if found is not None and found.submodule_search_locations:
            roots[f"edgec.{sub}"] = next(iter(found.submodule_search_locations))
    for group in _PLUGIN_GROUPS:
        for ep in importlib.metadata.entry_points(group=group):
            top = ep.value.split(":")[0].split(".")[0].strip()
            if top and top not in ("edgec", "edgec_runtime") and top not in roots:
                location = _source_location(top)
                if location is not None:
                    roots[top] = location
    for label, path in sorted(roots.items()):
        _hash_tree(h, path, label)
    return h.hexdigest()


def _input_digest(path: str, what: str) -> str:
    """The sha256 of an input file; one that cannot be read (permissions, I/O error) is
    the user's to fix: one located line, exit 2, not an internal error."""
    try:
        return art.sha256_file(path)
    except OSError as e:
        raise UsageError(Diagnostic.error(f"cannot read the {what}: {e.strerror or e}",
                                          Location(path=path))) from None


def _cache_key(inputs: _Inputs, options: CompileOptions) -> tuple[str, dict]:
    """A content hash of everything the artifact depends on, and the digests it is made of."""
    digests = {
        "model_sha256": hashlib.sha256(inputs.model_bytes).hexdigest(),
        "external_data": {os.path.basename(p): _input_digest(p, "external data file")
                          for p in inputs.external_files},
        "data": [_input_digest(p, "data file") for p in inputs.data_files],
        "labels": [_input_digest(p, "labels file") for p in inputs.labels_files],
    }
    material = {
        "format_version": art.FORMAT_VERSION, "edgec": __version__, "inputs": digests,
        "spec": spec_record(inputs.spec), "backend_override": options.backend,
        "plugins": _plugin_versions(),
        # The version names a release; between releases the code itself is the identity.
        "code": code_digest(),
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
    from edgec.machine import onnxruntime_saturates

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
    reads or keeps (exit 2, before any work). The cache folder must be a folder where
    it exists: a file there would make every compile quietly cache nothing."""
    if os.path.lexists(cache_dir) and not os.path.isdir(cache_dir):
        raise UsageError(Diagnostic.error(
            "the cache folder is not a folder (--cache-dir, else $EDGEC_CACHE_DIR or "
            "~/.cache/edgec): nothing could be cached there", Location(path=cache_dir)))
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
    error = BudgetError(budget_diagnostics(manifest, out))
    error.manifest = manifest  # what `--json` reports: the budgets and every candidate
    raise error

# --------------------------------------------------------------------------- plan and records


def _build(inputs: _Inputs, staging: str, key: str, digests: dict, cache_dir: str,
           options: CompileOptions, sink: DiagnosticSink) -> dict:
    """The planner's choice left in ``staging``, with the artifact's records beside it."""
    plan = make_plan(model_path=inputs.model_path, model_bytes=inputs.model_bytes,
                     data_pattern=inputs.data_pattern, spec=inputs.spec, staging=staging,
                     cache_dir=cache_dir, sink=sink,
                     backend_choice=options.backend or inputs.spec.optimize.backend,
                     rpc=options.rpc, threads=options.threads, progress=options.progress)
    return write_records(staging, plan, key=key, digests=digests, model_path=inputs.model_path,
                         sink=sink)
