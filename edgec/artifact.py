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

from edgec.diagnostics import Diagnostic, Location, UsageError

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


class Artifact:
    """A compiled artifact folder: ``manifest`` (dict) and ``run(inputs) -> outputs``."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        manifest_path = os.path.join(self.path, MANIFEST)
        try:
            with open(manifest_path) as f:
                self.manifest: dict = json.load(f)
        except FileNotFoundError:
            why = ("no such folder" if not os.path.exists(self.path) else
                   "a file, not an artifact folder" if not os.path.isdir(self.path) else
                   "manifest.json is missing")
            raise UsageError(Diagnostic.error(f"not an edgec artifact: {why}",
                                              Location(path=path))) from None
        except NotADirectoryError:
            raise UsageError(Diagnostic.error("not an edgec artifact: a file, not an artifact "
                                              "folder", Location(path=path))) from None
        except (OSError, json.JSONDecodeError) as e:
            raise UsageError(Diagnostic.error(f"unreadable manifest.json: {e}",
                                              Location(path=path))) from None
        version = self.manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise UsageError(Diagnostic.error(
                f"artifact format version {version} is not supported by this edgec "
                f"(it reads version {FORMAT_VERSION})", Location(path=path)))
        self._runner = None

    @property
    def measurements(self) -> dict:
        try:
            with open(os.path.join(self.path, MEASUREMENTS)) as f:
                return json.load(f)
        except (OSError, json.JSONDecodeError):
            return {}

    @property
    def backend_name(self) -> str:
        return self.manifest["backend"]["name"]

    @property
    def runnable_here(self) -> bool:
        return bool(self.manifest["backend"].get("runnable_here", False))

    def check_runnable(self) -> None:
        if self.backend_name == "ort":
            # An onnxruntime artifact runs wherever onnxruntime has the execution providers
            # its session names: the backend's loader checks that where it runs (and
            # says what is missing), not a flag written on the compile host.
            return
        details = self.manifest["backend"].get("details") or {}
        if self.backend_name == "tvm" and (details.get("accelerator") or {}).get("kind") == "cuda":
            from edgec.backends.tvm import TVMBackend, host_arch
            if details.get("arch") == host_arch():
                # A CUDA module on a machine of its architecture: whether it runs depends
                # on the TVM runtime and the GPU here, which the backend checks (one line).
                TVMBackend._check_runnable_here(details)
                return
        if not self.runnable_here:
            target = self.manifest.get("target", {})
            raise UsageError(Diagnostic.error(
                f"this artifact was built for {target.get('name', 'another machine')} "
                f"({target.get('triple', '?')}) and cannot run on this host; copy it to the "
                "device, or measure it there with `edgec bench --rpc-tracker`",
                Location(path=self.path)))

    def runner(self):
        if self._runner is None:
            self.check_runnable()
            from edgec.backends import get_backend
            backend = get_backend(self.backend_name)
            self._runner = backend.load(self.path, self.manifest["backend"]["details"])
        return self._runner

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        runner = self.runner()
        missing = [n for n in runner.input_names if n not in inputs]
        if missing:
            raise UsageError(Diagnostic.error(
                f"missing input '{missing[0]}' (the model takes: {', '.join(runner.input_names)})"))
        return runner.run(inputs)

    def __repr__(self) -> str:
        return f"Artifact({self.path!r}, backend={self.backend_name!r})"


def load(path: str) -> Artifact:
    """Open a compiled artifact folder."""
    return Artifact(path)
