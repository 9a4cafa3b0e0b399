"""The artifact folder: written atomically, described by manifest.json, loadable to run.

Layout (format_version 1):

    OUT/manifest.json       what was built, from what, for which target, and whether the
                            spec's budgets hold; deterministic: no timestamps, no absolute
                            paths, no measured timings (two clean compiles give the same bytes)
    OUT/measurements.json   measured figures (latency samples summary, pass and tuning wall
                            times): they differ from run to run by nature
    OUT/model.onnx          the optimized ONNX (plus model.onnx.data when weights are external)
    OUT/<backend files>     session.json (ort) or model.so (tvm), listed in the manifest
    OUT/report.txt          the human summary

The folder is built under a temporary name beside OUT and swapped into place
(`edgec.publish`), so a crash or kill -9 never leaves a partial or missing OUT; every
file's size and sha256 is in the manifest, and `verify_files` checks them.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import numpy as np

# The format's names and the manifest reader, and the atomic writer, re-exported: the
# compiler and the manifest take them from here with the rest of the artifact's API.
from edgec.artifact_format import (FORMAT_VERSION, MANIFEST, MANIFEST_LIMIT,  # noqa: F401
                                   MEASUREMENTS, REPORT, RUNTIME_BACKENDS, plain_name,
                                   read_manifest, verify_files)
from edgec.diagnostics import (Diagnostic, EdgecError, ExitCode, Location, ModelError,
                               UsageError)
from edgec.publish import write_if_changed  # noqa: F401


def dumps_canonical(data: Any) -> str:
    """JSON with sorted keys and a final newline: the same data, the same bytes."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_depfile(path: str, target: str, deps: list[str]) -> None:
    """A Makefile-syntax depfile (``target: dep dep ...``); spaces escaped as make wants.
    Rewritten only when its bytes change."""
    def esc(p: str) -> str:
        return p.replace("\\", "\\\\").replace(" ", "\\ ").replace("#", "\\#").replace("$", "$$")

    unique = list(dict.fromkeys(deps))
    text = f"{esc(target)}:" + "".join(f" \\\n  {esc(d)}" for d in unique) + "\n"
    write_if_changed(path, text)


def runtime_error(error) -> EdgecError:
    """An `edgec_runtime` error as edgec's own (same message, path and exit code)."""
    location = Location(path=error.path) if error.path else None
    diagnostic = Diagnostic.error(error.message, location, notes=error.notes)
    from edgec_runtime.errors import NotRunnableHere

    if isinstance(error, NotRunnableHere):
        from edgec.backends.base import BackendError
        return BackendError(diagnostic, exit_code=ExitCode(error.exit_code))
    if error.exit_code == ExitCode.MODEL:
        return ModelError(diagnostic)
    if error.exit_code == ExitCode.USAGE:
        return UsageError(diagnostic)
    return EdgecError(diagnostic, exit_code=ExitCode(error.exit_code))


@contextmanager
def translated_errors() -> Iterator[None]:
    from edgec_runtime.errors import RuntimeFailure

    try:
        yield
    except RuntimeFailure as error:
        raise runtime_error(error) from None


class Artifact:
    """A compiled artifact folder: ``manifest`` (dict) and ``run(inputs) -> outputs``.

    Opening it goes through the device runtime (`edgec_runtime.artifact.Artifact`): the
    manifest is checked, every file verified by its sha256, and whether it runs is decided
    on this machine. Errors come back as edgec diagnostics."""

    def __init__(self, path: str, *, verify: bool = True):
        from edgec_runtime.artifact import Artifact as RuntimeArtifact

        with translated_errors():
            self._artifact = RuntimeArtifact(str(path), verify=verify)
        self.path = self._artifact.path
        self.manifest: dict = self._artifact.manifest
        self._runner = None

    @property
    def measurements(self) -> dict:
        return self._artifact.measurements

    @property
    def backend_name(self) -> str:
        return self._artifact.backend_name

    def batch(self) -> int:
        """The batch the spec's latency budget is stated at (1 without one)."""
        return self._artifact.batch()

    def verify(self) -> None:
        with translated_errors():
            self._artifact.verify()

    @property
    def runnable_here(self) -> bool:
        """Decided here, on this machine (never from what the compile host wrote)."""
        if self.backend_name not in RUNTIME_BACKENDS:
            return bool(self.manifest["backend"].get("runnable_here", False))
        return self._artifact.runnable_here

    def problems_here(self, facts=None) -> list[str]:
        return self._artifact.problems_here(facts)

    def check_runnable(self, facts=None) -> None:
        if self.backend_name not in RUNTIME_BACKENDS:
            return
        with translated_errors():
            self._artifact.check_runnable(facts)

    def runner(self, threads: int | None = None):
        if self._runner is None:
            name = self.backend_name
            with translated_errors():
                if name not in RUNTIME_BACKENDS:
                    # A plugin backend: verified here, loaded by the plugin, then fed,
                    # run and benched by the device runtime like its own.
                    self._artifact.verify()
                    from edgec.backends import get_backend
                    details = self._artifact.details
                    loaded = get_backend(name).load(self.path, details)
                    self._artifact.use_runner(PluginRunner(
                        loaded, os.path.join(self.path, details.get("model", "model.onnx"))))
                self._runner = self._artifact.runner(threads=threads)
        return self._runner

    def _load_plugin(self) -> None:
        if self.backend_name not in RUNTIME_BACKENDS:
            self.runner()

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._load_plugin()
        with translated_errors():
            return self._artifact.run(inputs)

    def run_file(self, path: str) -> dict[str, np.ndarray]:
        self._load_plugin()
        with translated_errors():
            return self._artifact.run_file(path)

    def bench_inputs(self, path: str | None = None) -> dict[str, np.ndarray]:
        self._load_plugin()
        with translated_errors():
            return self._artifact.bench_inputs(path)

    def bench(self, feed=None, *, threads: int | None = None) -> dict:
        self._load_plugin()
        with translated_errors():
            return self._artifact.bench(feed, threads=threads)

    def __repr__(self) -> str:
        return f"Artifact({self.path!r}, backend={self.backend_name!r})"


class PluginRunner:
    """A plugin backend's `edgec.backends.base.Runner` in the shape the device runtime
    feeds, runs and benches: the input types come from the artifact's ONNX model."""

    def __init__(self, runner, model_path: str):
        import onnx
        from edgec_runtime.feeds import InputInfo

        graph = onnx.load(model_path, load_external_data=False).graph
        initializers = {t.name for t in graph.initializer}
        types = {v.name: v.type.tensor_type for v in graph.input}
        self._runner = runner
        self.input_names = list(runner.input_names)
        self.output_names = list(runner.output_names)
        self.inputs = [InputInfo(name, np.dtype(onnx.helper.tensor_dtype_to_np_dtype(
                           types[name].elem_type)),
                           tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                 for d in types[name].shape.dim))
                       for name in self.input_names if name not in initializers]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._runner.run(inputs)

    def timed_call(self, feed: Mapping[str, np.ndarray]):
        """A no-argument callable that runs ``feed`` once (what bench times)."""
        return lambda: self._runner.run(feed)


def load(path: str, *, verify: bool = True) -> Artifact:
    """Open a compiled artifact folder (its files verified by sha256 unless ``verify``
    is False)."""
    return Artifact(path, verify=verify)
