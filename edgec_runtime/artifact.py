"""An artifact folder, opened to run: the manifest read and checked, every file it lists
verified by size and sha256, the paths it names confined to plain names inside the
folder, and whether it can run decided here, on this machine."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
from typing import Any, Mapping

import numpy as np

from edgec_runtime import host
from edgec_runtime.errors import ArtifactError, InputError, NotRunnableHere, RuntimeFailure
from edgec_runtime.feeds import InputInfo, conform, run_all

FORMAT_VERSION = 1
# The backends whose artifacts this runtime runs by itself (numpy and the backend's own
# runtime); another backend's artifact runs through its plugin, with edgec installed.
RUNTIME_BACKENDS = ("ort", "tvm")
MANIFEST = "manifest.json"
MEASUREMENTS = "measurements.json"
MANIFEST_LIMIT = 64 << 20
# Files the manifest cannot list (they describe the others).
UNLISTED = ("manifest.json", "measurements.json", "report.txt", "report.html")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(folder: str) -> dict:
    """manifest.json as a dict, or ArtifactError saying what is wrong with it."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.isdir(folder):
        what = "does not exist" if not os.path.lexists(folder) else "is not a folder"
        raise ArtifactError(f"not an edgec artifact: the path {what}", folder)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactError("not an edgec artifact: manifest.json is not a file", folder)
        if st.st_size > MANIFEST_LIMIT:
            raise ArtifactError(f"manifest.json is {st.st_size} bytes, over the "
                                f"{MANIFEST_LIMIT >> 20} MiB a manifest may take", folder)
        with open(path, "rb") as f:
            raw = f.read(MANIFEST_LIMIT + 1)
    except FileNotFoundError:
        raise ArtifactError("not an edgec artifact: manifest.json is missing", folder) from None
    except OSError as e:
        raise ArtifactError(f"cannot read manifest.json: {e.strerror or e}", folder) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ArtifactError(f"manifest.json is damaged: not UTF-8 (byte {e.start})", folder) \
            from None
    try:
        manifest = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ArtifactError(f"manifest.json is damaged: not JSON ({e})", folder) from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"manifest.json is damaged: a JSON {type(manifest).__name__}, not "
                            "an object", folder)
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(f"artifact format version {version!r} is not supported (this "
                            f"runtime reads version {FORMAT_VERSION})", folder)
    backend = manifest.get("backend")
    if not isinstance(backend, dict):
        raise ArtifactError("manifest.json is damaged: it has no 'backend' section", folder)
    if not isinstance(backend.get("name"), str):
        raise ArtifactError("manifest.json is damaged: the backend has no name", folder)
    if not isinstance(backend.get("details", {}), dict):
        raise ArtifactError("manifest.json is damaged: backend 'details' is not an object",
                            folder)
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ArtifactError("manifest.json is damaged: it has no 'files' table", folder)
    for name, entry in files.items():
        if not plain_name(name):
            raise ArtifactError(f"manifest.json lists the file {name!r}: artifact files are "
                                "plain names inside the folder", folder)
        if not isinstance(entry, dict) or type(entry.get("bytes")) is not int or \
                not isinstance(entry.get("sha256"), str):
            raise ArtifactError(f"manifest.json is damaged: the entry for {name} lacks bytes "
                                "and sha256", folder)
    return manifest


def plain_name(name: Any) -> bool:
    return isinstance(name, str) and bool(_NAME.match(name)) and ".." not in name and \
        name not in UNLISTED


def verify_files(folder: str, manifest: Mapping, *, dir_fd: int | None = None) -> list[str]:
    """What in ``folder`` does not match ``manifest``: each file its ``files`` table lists
    must be a regular file there (not a link), named by one plain path component, of the
    recorded size and sha256. An empty list: the folder holds exactly what was built.
    ``dir_fd``: an open descriptor of the folder, read instead of its path (a consistent
    view while the path is swapped to another folder, as the compiler's publish does)."""
    files = manifest.get("files") if isinstance(manifest, Mapping) else None
    if not isinstance(files, Mapping):
        return ["the manifest has no 'files' table"]
    problems = []
    for name, digest in sorted(files.items()):
        if not plain_name(name):
            problems.append(f"{name!r}: not a plain file name")
            continue
        if not (isinstance(digest, Mapping) and isinstance(digest.get("bytes"), int)
                and isinstance(digest.get("sha256"), str)):
            problems.append(f"{name}: the manifest records no size and sha256 for it")
            continue
        path = name if dir_fd is not None else os.path.join(folder, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except FileNotFoundError:
            problems.append(f"{name} is missing")
            continue
        except OSError as e:
            reason = ("is a symbolic link; artifact files are regular files"
                      if e.errno == errno.ELOOP else f"cannot be read: {e.strerror or e}")
            problems.append(f"{name} {reason}")
            continue
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                problems.append(f"{name} is not a regular file")
                continue
            if st.st_size != digest["bytes"]:
                problems.append(f"{name} is {st.st_size} bytes; the manifest says "
                                f"{digest['bytes']} (modified or damaged after the build)")
                continue
            h = hashlib.sha256()
            try:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            except OSError as e:
                problems.append(f"{name} cannot be read: {e.strerror or e}")
                continue
            if h.hexdigest() != digest["sha256"]:
                problems.append(f"{name}: its sha256 differs from the manifest's (modified or "
                                "damaged after the build)")
    return problems


def _listed(manifest: dict, details: dict, key: str, default: str | None, folder: str) -> str:
    """The plain file name ``details[key]`` names, which the manifest must list."""
    name = details.get(key, default)
    if name is None:
        raise ArtifactError(f"manifest.json is damaged: the {manifest['backend']['name']} "
                            f"backend names no {key} file", folder)
    if not plain_name(name):
        raise ArtifactError(f"manifest.json names the {key} {name!r}: only a plain file name "
                            "inside the artifact folder is loaded", folder)
    if name not in manifest["files"]:
        raise ArtifactError(f"manifest.json names the {key} {name!r}, which its 'files' table "
                            "does not list (so it cannot be verified)", folder)
    return name


_ELF_MACHINES = {62: "x86_64", 183: "aarch64", 40: "armv7", 3: "x86", 243: "riscv"}


def _elf_arch(path: str) -> str | None:
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    order = "little" if head[5] == 1 else "big"
    return _ELF_MACHINES.get(int.from_bytes(head[18:20], order), f"machine {head[18]}")


class Artifact:
    """An artifact folder opened by the runtime.

    Opening reads and checks the manifest; `verify` checks the files; `runner` (and so
    `run`) verifies, decides runnability here, then loads the backend's runtime."""

    def __init__(self, path: str, *, verify: bool = True):
        self.path = os.path.abspath(str(path))
        self.manifest: dict = read_manifest(self.path)
        self._runner = None
        self._verified = False
        if verify:
            self.verify()

    # -- what it is -------------------------------------------------------------------

    @property
    def backend_name(self) -> str:
        return self.manifest["backend"]["name"]

    @property
    def details(self) -> dict:
        return self.manifest["backend"].get("details") or {}

    @property
    def measurements(self) -> dict:
        try:
            with open(os.path.join(self.path, MEASUREMENTS), "rb") as f:
                data = json.loads(f.read(MANIFEST_LIMIT).decode("utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError, RecursionError):
            return {}

    def batch(self) -> int:
        """The batch the spec's latency budget is stated at (1 without one)."""
        spec = self.manifest.get("spec")
        budget = spec.get("budget") if isinstance(spec, dict) else None
        latency = budget.get("latency") if isinstance(budget, dict) else None
        batch = latency.get("batch", 1) if isinstance(latency, dict) else 1
        return batch if type(batch) is int and 1 <= batch <= 1 << 16 else 1

    # -- trust ------------------------------------------------------------------------

    def verify(self) -> None:
        if self._verified:
            return
        problems = verify_files(self.path, self.manifest)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise ArtifactError(f"the artifact is damaged: {problems[0]}{more}", self.path,
                                notes=problems[1:])
        self._verified = True

    def problems_here(self, facts: host.HostFacts | None = None) -> list[str]:
        return host.problems(self.backend_name, self.details, facts or host.host_facts())

    @property
    def runnable_here(self) -> bool:
        return not self.problems_here()

    def check_runnable(self, facts: host.HostFacts | None = None) -> None:
        problems = self.problems_here(facts)
        if problems:
            raise NotRunnableHere(f"cannot run here: {'; '.join(problems)}", self.path)

    # -- running ----------------------------------------------------------------------

    def use_runner(self, runner) -> None:
        """Run (and bench) through ``runner``: one with ``inputs``, ``input_names``,
        ``output_names``, ``run(feed)`` and ``timed_call(feed)``. For an artifact of a
        backend this runtime does not run, loaded by that backend's plugin (edgec does
        it, after verifying the files); the runtime's own loading is skipped."""
        self._runner = runner

    def runner(self, threads: int | None = None):
        if self._runner is None:
            self.verify()
            name = self.backend_name
            if name not in RUNTIME_BACKENDS:
                raise NotRunnableHere(f"this runtime cannot run a '{name}' artifact (it runs "
                                      f"{' and '.join(RUNTIME_BACKENDS)})", self.path)
            self.check_runnable()
            details = self.details
            if name == "ort":
                from edgec_runtime.ort_runner import OrtRunner, check_settings

                model = _listed(self.manifest, details, "model", "model.onnx", self.path)
                settings = check_settings(details.get("settings", {}), self.path)
                self._runner = OrtRunner(os.path.join(self.path, model), settings,
                                         threads=threads, where=self.path)
            else:
                from edgec_runtime.tvm_runner import TVMRunner, set_threads

                module = _listed(self.manifest, details, "module", None, self.path)
                module_path = os.path.join(self.path, module)
                arch = _elf_arch(module_path)
                here = host.host_facts().arch
                if arch is None:
                    raise ArtifactError(f"{module} is not a shared library (no ELF header)",
                                        self.path)
                if arch != here:
                    raise NotRunnableHere(f"cannot run here: {module} is {arch} machine code "
                                          f"and this machine is {here}", self.path)
                if threads:
                    set_threads(threads)
                self._runner = TVMRunner(module_path, details, where=self.path)
        return self._runner

    @property
    def inputs(self) -> list[InputInfo]:
        return self.runner().inputs

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Outputs for ``inputs`` (name -> array), batch-leading or per-sample feeds."""
        runner = self.runner()
        if not isinstance(inputs, Mapping):
            raise InputError("run() takes a dict of input name -> array")
        layout, arrays = conform(inputs, runner.inputs)
        return run_all(runner.run, arrays, runner.inputs, layout)

    def run_file(self, path: str) -> dict[str, np.ndarray]:
        """Outputs for the inputs in an `.npz` file (read safely, only what is used)."""
        from edgec_runtime.feeds import layout_of
        from edgec_runtime.npz import read_npz

        runner = self.runner()
        arrays = read_npz(path, {i.name: i.wanted for i in runner.inputs})
        layout = layout_of(arrays, runner.inputs, path)
        return run_all(runner.run, arrays, runner.inputs, layout)

    def bench_inputs(self, path: str | None = None) -> dict[str, np.ndarray]:
        """One feed for bench: the first of the file's, or synthetic at the spec's batch."""
        from edgec_runtime.feeds import layout_of, synthetic
        from edgec_runtime.npz import read_npz

        runner = self.runner()
        if path is None:
            return synthetic(runner.inputs, self.batch())
        arrays = read_npz(path, {i.name: i.wanted for i in runner.inputs})
        if layout_of(arrays, runner.inputs, path) == "sample":
            return {k: v[0] for k, v in arrays.items()}
        fixed = [i.shape[0] for i in runner.inputs
                 if i.shape and isinstance(i.shape[0], int) and i.shape[0] > 0]
        if fixed:
            return {k: v[:fixed[0]] for k, v in arrays.items()}
        return arrays

    def bench(self, feed: Mapping[str, np.ndarray] | None = None, *, threads: int | None = None,
              warmup: int = 5, repeats: int = 50, max_seconds: float = 10.0) -> dict:
        """Latency on this machine: p50/p90/mean in ms over timed runs after warm-up."""
        import statistics
        import time

        runner = self.runner(threads=threads)
        feed = self.bench_inputs() if feed is None else feed
        call = runner.timed_call(feed)
        times = None
        try:
            if hasattr(runner, "bench_times"):  # TVM: the VM's own evaluator
                times = runner.bench_times(feed)
            if not times:
                for _ in range(warmup):
                    call()
                times = []
                end = time.perf_counter() + max_seconds
                while len(times) < repeats and (len(times) < 5 or time.perf_counter() < end):
                    start = time.perf_counter()
                    call()
                    times.append(time.perf_counter() - start)
        except RuntimeFailure:
            raise
        except Exception as e:
            raise InputError(f"the model refused the bench inputs: "
                             f"{' '.join(str(e).split())[:300] or type(e).__name__}",
                             self.path) from None
        ordered = sorted(times)
        k = (len(ordered) - 1) * 0.9
        lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
        p90 = ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)
        return {"p50_ms": statistics.median(ordered) * 1e3, "p90_ms": p90 * 1e3,
                "mean_ms": statistics.fmean(ordered) * 1e3, "samples": len(ordered),
                "where": "host"}

    def __repr__(self) -> str:
        return f"Artifact({self.path!r}, backend={self.backend_name!r})"


def load(path: str) -> Artifact:
    """Open an artifact folder to run it: ``load(path).run({name: array}) -> {name: array}``."""
    return Artifact(path)
