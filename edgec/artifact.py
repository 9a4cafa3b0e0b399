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

The folder is built under a temporary name beside OUT and renamed into place, so a
crash or kill -9 never leaves a partial OUT.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import numpy as np

from edgec.diagnostics import (Diagnostic, EdgecError, ExitCode, Location, ModelError,
                               UsageError)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MEASUREMENTS = "measurements.json"
REPORT = "report.txt"
_TMP_MARK = ".edgec-tmp-"


def dumps_canonical(data: Any) -> str:
    """JSON with sorted keys and a final newline: the same data, the same bytes."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_if_changed(path: str, text: str) -> bool:
    """Write ``text`` unless the file already holds exactly it (keeps mtimes stable)."""
    data = text.encode()
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return False
    except OSError:
        pass
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".edgec-", dir=directory)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
    return True


@contextmanager
def staging_dir(out: str) -> Iterator[str]:
    """A temporary folder beside ``out``; on success it replaces ``out`` in one rename
    (the old ``out``, if any, is moved aside first and then deleted). On failure it is
    removed and ``out`` is untouched."""
    out = os.path.abspath(out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    clean_stale_staging(parent)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}{_TMP_MARK}{os.getpid()}-", dir=parent)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish(tmp, out)


def _normal_permissions(folder: str) -> None:
    """mkdtemp/mkstemp create private (0700/0600) entries; an artifact is meant to be
    copied and deployed, so give it the permissions an ordinary build output has."""
    umask = os.umask(0)
    os.umask(umask)
    for root, dirs, files in os.walk(folder):
        os.chmod(root, 0o777 & ~umask)
        for name in files:
            path = os.path.join(root, name)
            executable = os.stat(path).st_mode & 0o100
            os.chmod(path, (0o777 if executable else 0o666) & ~umask)


def publish(tmp: str, out: str) -> None:
    _normal_permissions(tmp)
    old = None
    if os.path.lexists(out):
        if not os.path.isdir(out) or os.path.islink(out):
            shutil.rmtree(tmp, ignore_errors=True)
            raise UsageError(Diagnostic.error("the output path exists and is not an artifact "
                                              "folder; refusing to replace it", Location(path=out)))
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}{_TMP_MARK}{os.getpid()}-old-",
                               dir=os.path.dirname(out))
        os.rmdir(old)
        os.rename(out, old)
    os.rename(tmp, out)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def clean_stale_staging(parent: str) -> None:
    """Remove staging folders left by edgec processes that no longer run (kill -9)."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if _TMP_MARK not in name:
            continue
        pid_text = name.split(_TMP_MARK, 1)[1].split("-", 1)[0]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def copy_tree_atomically(src: str, out: str) -> None:
    with staging_dir(out) as tmp:
        for name in sorted(os.listdir(src)):
            s = os.path.join(src, name)
            if os.path.isdir(s):
                shutil.copytree(s, os.path.join(tmp, name))
            else:
                shutil.copy2(s, os.path.join(tmp, name))


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

    def verify(self) -> None:
        with translated_errors():
            self._artifact.verify()

    @property
    def runnable_here(self) -> bool:
        """Decided here, on this machine (never from what the compile host wrote)."""
        if self.backend_name not in ("ort", "tvm"):
            return bool(self.manifest["backend"].get("runnable_here", False))
        return self._artifact.runnable_here

    def problems_here(self, facts=None) -> list[str]:
        return self._artifact.problems_here(facts)

    def check_runnable(self, facts=None) -> None:
        if self.backend_name not in ("ort", "tvm"):
            return
        with translated_errors():
            self._artifact.check_runnable(facts)

    def runner(self, threads: int | None = None):
        if self._runner is None:
            name = self.backend_name
            with translated_errors():
                if name in ("ort", "tvm"):
                    self._runner = self._artifact.runner(threads=threads)
                else:  # a plugin backend: verified here, loaded by the plugin
                    self._artifact.verify()
                    from edgec.backends import get_backend
                    self._runner = get_backend(name).load(self.path, self._artifact.details)
        return self._runner

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.backend_name not in ("ort", "tvm"):
            runner = self.runner()
            missing = [n for n in runner.input_names if n not in inputs]
            if missing:
                raise UsageError(Diagnostic.error(
                    f"missing input '{missing[0]}' (the model takes: "
                    f"{', '.join(runner.input_names)})"))
            return runner.run(inputs)
        with translated_errors():
            return self._artifact.run(inputs)

    def run_file(self, path: str) -> dict[str, np.ndarray]:
        with translated_errors():
            return self._artifact.run_file(path)

    def bench_inputs(self, path: str | None = None) -> dict[str, np.ndarray]:
        with translated_errors():
            return self._artifact.bench_inputs(path)

    def bench(self, feed=None, *, threads: int | None = None) -> dict:
        with translated_errors():
            return self._artifact.bench(feed, threads=threads)

    def __repr__(self) -> str:
        return f"Artifact({self.path!r}, backend={self.backend_name!r})"


def load(path: str, *, verify: bool = True) -> Artifact:
    """Open a compiled artifact folder (its files verified by sha256 unless ``verify``
    is False)."""
    return Artifact(path, verify=verify)
