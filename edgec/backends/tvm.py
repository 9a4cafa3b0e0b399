"""The TVM backend: ONNX -> relax -> (MetaSchedule tuning) -> a module ``.so`` for the
target, cross-compiled for Arm boards and with CUDA kernels for Jetson GPUs.

Tuning records persist per target under ``cache_dir/tvm-tuning/<sha of the target
JSON>/`` so that compiling the same model for the same target again runs no trials.
Measurement runs the module on this host, or on a device reached over TVM RPC.

TVM is imported lazily: ``import edgec.backends.tvm`` works without apache-tvm, and
`TVMBackend.unavailable_reason` then says what is missing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import importlib.util
import io
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import types
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import onnx

from edgec.backends.base import (BackendError, BuildOptions, BuildResult, Capabilities,
                                 LatencyStats, uses_external_data)
from edgec.diagnostics import Diagnostic, Location, ModelError

if TYPE_CHECKING:
    from edgec.dsl.spec import Target

MODULE_FILE = "model.so"
TUNING_DIR = "tvm-tuning"
LEDGER_FILE = "edgec-trials.json"  # trials granted per workload (see TVMBackend._tune)

# Debian cross compilers by target architecture: (executable, package).
CROSS_COMPILERS = {
    "aarch64": ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
    "armv7": ("arm-linux-gnueabihf-gcc", "gcc-arm-linux-gnueabihf"),
    "x86_64": ("x86_64-linux-gnu-gcc", "gcc-x86-64-linux-gnu"),
}

# When only a wall-time budget is given, each task is offered this many trials.
TRIALS_PER_TASK_WITHOUT_BUDGET = 64
# Candidates measured per search round of a task (MetaSchedule's num_trials_per_iter).
TRIALS_PER_ROUND = 64


def host_arch() -> str:
    """This machine's architecture in the spec language's names (x86_64, aarch64, armv7)."""
    machine = platform.machine().lower()
    if machine in ("amd64", "x86_64"):
        return "x86_64"
    if machine in ("arm64", "aarch64"):
        return "aarch64"
    if machine.startswith("armv7") or machine.startswith("armv8l"):
        return "armv7"
    return machine


def target_dict(target: Target) -> dict:
    """The JSON dict `tvm.target.Target` accepts for ``target`` (TVM 0.27 rejects CLI
    strings): LLVM for the CPU, wrapped in CUDA for a CUDA accelerator."""
    llvm: dict = {"kind": "llvm", "mtriple": target.triple, "num-cores": target.cores}
    if target.cpu and target.cpu != "generic":
        llvm["mcpu"] = target.cpu
    if target.features:
        llvm["mattr"] = list(target.features)
    if target.float_abi:
        llvm["mfloat-abi"] = target.float_abi
    if target.accelerator is not None and target.accelerator.kind == "cuda":
        cuda: dict = {"kind": "cuda", "host": llvm}
        if target.accelerator.arch:
            cuda["arch"] = target.accelerator.arch
        return cuda
    return llvm


def target_json(target: Target) -> str:
    """The canonical JSON text of the target's TVM description (the tuning-cache key)."""
    return json.dumps(target_dict(target), sort_keys=True, separators=(",", ":"))


def tuning_database_dir(cache_dir: str | os.PathLike, target: Target) -> Path:
    digest = hashlib.sha256(target_json(target).encode()).hexdigest()[:16]
    return Path(cache_dir) / TUNING_DIR / digest


def _is_cuda(target: Target) -> bool:
    return target.accelerator is not None and target.accelerator.kind == "cuda"


# What a CUDA module needs where it runs; the manifest and README say it.
CUDA_RUNTIME_REQUIREMENT = (
    "a TVM runtime built with CUDA (USE_CUDA=ON, so tvm.runtime.enabled('cuda') is True) "
    "and the NVIDIA driver; the apache-tvm pip wheels have no CUDA runtime. The module "
    "holds its kernels as CUDA C, compiled when it loads (NVRTC, or nvcc with "
    "TVM_CUDA_COMPILE_MODE=nvcc)")


def _machine_description(target: Target) -> str:
    text = f"{target.name} ({target.triple}"
    if target.accelerator is not None:
        text += f", {target.accelerator.kind} {target.accelerator.arch or ''}".rstrip()
    return text + ")"


# Ampere's limits (all of sm_80..sm_89), which MetaSchedule's GPU rules read from the
# target; TVM's "cuda" kind does not fill them in from "arch".
CUDA_LIMITS = {"max_threads_per_block": 1024, "max_shared_memory_per_block": 49152,
               "thread_warp_size": 32}


def tvm_target_json(target: Target) -> dict:
    """The dict edgec hands to `tvm.target.Target`: `target_dict`, plus CUDA limits."""
    description = target_dict(target)
    if description.get("kind") == "cuda":
        description = {**CUDA_LIMITS, **description}
    return description


def _load_tensor_intrinsics(target: Target, everything: bool = False) -> None:
    """Registers only the tensor intrinsics the target's schedule rules use.

    MetaSchedule's TuneContext imports ``tvm.s_tir.tensor_intrin``, which parses every
    intrinsic of every architecture (CUDA, ROCm, Hexagon, Arm, x86): 60-100 s on this
    2-core machine, in each compiling process. Plain x86 needs none of them, Arm
    targets need ``arm_cpu`` (the rules look up the NEON dot products), CUDA targets
    ``cuda``; ``everything`` adds the architecture's set whatever its features (x86
    with VNNI/AVX-512). A later full import in this process finds the package present.
    """
    name = "tvm.s_tir.tensor_intrin"
    if name not in sys.modules:
        import tvm.s_tir

        spec = importlib.util.find_spec(name)
        package = types.ModuleType(name, "Tensor intrinsics, loaded per target by edgec.")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules[name] = package
        tvm.s_tir.tensor_intrin = package
    wanted = {"aarch64": "arm_cpu", "armv7": "arm_cpu"}.get(target.arch)
    if everything and target.arch == "x86_64":
        wanted = "x86"
    for submodule in filter(None, [wanted, "cuda" if _is_cuda(target) else None]):
        importlib.import_module(f"{name}.{submodule}")


def _open_database(db_dir, target, notes: list[str]):
    """The target's tuning database. Records that replay schedules with tensor
    intrinsics (x86 dot products, say) only load once those intrinsics are registered,
    so a failed load first registers the architecture's whole set; a database that
    still does not load (damaged by a crash) is moved aside and tuning starts afresh."""
    from tvm.s_tir import meta_schedule as ms

    def load():
        return ms.database.JSONDatabase(
            path_workload=str(db_dir / "database_workload.json"),
            path_tuning_record=str(db_dir / "database_tuning_record.json"),
            allow_missing=True)

    try:
        return load()
    except Exception:  # TVM raises RuntimeError/TVMError from C++ for unreadable records
        pass
    _load_tensor_intrinsics(target, everything=True)
    try:
        return load()
    except Exception as error:
        aside = _move_aside(db_dir, ("database_workload.json", "database_tuning_record.json",
                                     LEDGER_FILE))
        notes.append(f"the tuning database could not be read ({str(error).splitlines()[0]}); "
                     f"it was moved to {aside.name} and tuning started afresh")
        return load()


def _move_aside(db_dir: Path, names) -> Path:
    """Moves the damaged files ``names`` of a tuning database into ``damaged-<time>/``."""
    aside = db_dir / f"damaged-{int(time.time())}"
    aside.mkdir(exist_ok=True)
    for name in names:
        if (db_dir / name).exists():
            (db_dir / name).replace(aside / name)
    return aside


def _read_ledger(db_dir: Path, notes: list[str]) -> dict[str, int]:
    """The trials granted per workload so far (``edgec-trials.json``). One that does not
    read as such (a kill while an older edgec wrote it, an edit) is moved aside with a
    note: the database's own record counts then stand in for it."""
    path = db_dir / LEDGER_FILE
    try:
        ledger = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:  # ValueError: bad JSON or bad UTF-8
        problem = str(error).splitlines()[0] if str(error) else type(error).__name__
    else:
        if isinstance(ledger, dict) and all(
                isinstance(key, str) and type(value) is int and value >= 0
                for key, value in ledger.items()):
            return ledger
        problem = "not a map of workload hashes to trial counts"
    aside = _move_aside(db_dir, (LEDGER_FILE,))
    notes.append(f"the tuning ledger {LEDGER_FILE} could not be read ({problem}); it was "
                 f"moved to {aside.name}, and the database's records count the trials so far")
    return {}


def _write_atomically(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file in the same folder and a
    rename: readers see the old or the new content, never a partial one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


META_SCHEDULE_LOGGER = "tvm.s_tir.meta_schedule"


@contextlib.contextmanager
def _meta_schedule_logging():
    """Lets MetaSchedule configure its loggers, and keeps its console lines to itself.

    Each tuning call runs MetaSchedule's ``create_loggers``, which lists every handler of
    the ``tvm.s_tir.meta_schedule`` logger by name in a ``logging.config.dictConfig``: a
    handler it did not create itself breaks it — ``None.format`` (AttributeError) for an
    unnamed one, "Unable to add handler" for a named one. pytest 9.2 (not 9.0) attaches its
    unnamed capture handler to every non-propagating logger, which that one is after the
    first tuning in a process (so the second tuning test failed in a fresh venv). Such
    handlers are detached while MetaSchedule runs and put back afterwards. MetaSchedule's
    console handler writes to ``sys.stdout`` as it is when the handler is made: a buffer
    here, so that "[INFO] Logging directory: ..." does not leak into edgec's output.
    """
    logger = logging.getLogger(META_SCHEDULE_LOGGER)
    foreign = [handler for handler in logger.handlers
               if not (handler.get_name() or "").startswith(META_SCHEDULE_LOGGER)]
    for handler in foreign:
        logger.removeHandler(handler)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for handler in foreign:
            if handler not in logger.handlers:
                logger.addHandler(handler)


def _search_strategy(trials_in_database: int, trials: int) -> str:
    """MetaSchedule's search strategy for a task.

    Evolutionary search ranks its population with the cost model, which answers with
    random scores until it has seen 100 measurements (XGBModel's warm-up), and seeds
    the population from the database's records of the task. A task with no record,
    tuned in one round, gains nothing from it over sampling random schedules
    ("replay-trace"), which costs a fraction: 27-33 s against 117-168 s for a 2-trial
    conv task on this loaded 2-core machine.
    """
    return "replay-trace" if trials_in_database == 0 and trials <= TRIALS_PER_ROUND \
        else "evolutionary"


def _tune_contexts(task, target, work_dir: str, seed: int, strategy: str = "evolutionary"):
    """MetaSchedule's tune context for one task, loading intrinsics its rules ask for."""
    from tvm.s_tir import meta_schedule as ms

    try:
        contexts = ms.relax_integration.extracted_tasks_to_tune_contexts(
            [task], work_dir=work_dir, seed=seed, strategy=strategy)
    except ValueError as error:
        if "TensorIntrin" not in str(error):
            raise
        _load_tensor_intrinsics(target, everything=True)
        contexts = ms.relax_integration.extracted_tasks_to_tune_contexts(
            [task], work_dir=work_dir, seed=seed, strategy=strategy)
    # MetaSchedule logs every round to the console; edgec reports through progress
    # instead (MetaSchedule's log files go to the temporary work dir).
    for name in list(logging.root.manager.loggerDict):
        if not name.startswith("tvm.s_tir.meta_schedule"):
            continue
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
    return contexts


def _build_candidate(mod, target, _params):
    """MetaSchedule's builder function without ``import tvm.s_tir.tensor_intrin``.

    The default build imports the tensor intrinsics in every fresh worker (about 30 s
    here), past any sensible build timeout; fp32 schedules do not use them.
    """
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def _value_info(value: onnx.ValueInfoProto) -> dict:
    tensor = value.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name \
        if tensor.elem_type else None
    shape = None
    if tensor.HasField("shape"):
        shape = [dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or None)
                 for dim in tensor.shape.dim]
    return {"name": value.name, "dtype": dtype, "shape": shape}


def _bind_symbolic_batch(mod, batch: int):
    """``mod`` with every input's symbolic leading (batch) dimension bound to ``batch``,
    and the names of the dimensions bound (empty: the batch is fixed already)."""
    from tvm import relax

    main = mod["main"]
    symbolic = list(relax.analysis.defined_symbolic_vars(main))
    leading = []
    for param in main.params:
        values = getattr(getattr(param.ty, "shape", None), "values", None)
        if not values:
            continue
        var = next((v for v in symbolic if values[0].same_as(v)), None)
        if var is not None and not any(var.same_as(other) for other in leading):
            leading.append(var)
    if not leading:
        return mod, {}
    mod = relax.transform.BindSymbolicVars({var: batch for var in leading}, "main")(mod)
    return mod, {str(var.name): batch for var in leading}


def _bind_value_info(info: dict, bound: Mapping[str, int], leading: bool = False) -> dict:
    """A `_value_info` with the dimensions tuning bound replaced by their value (an
    unnamed leading input dimension is the batch too)."""
    if not bound or not info["shape"]:
        return info
    batch = next(iter(bound.values()))
    shape = [bound.get(dim, dim) if isinstance(dim, str) else dim for dim in info["shape"]]
    if leading and shape[0] is None:
        shape[0] = batch
    return {**info, "shape": shape}


def _is_dynamic(task_mod) -> bool:
    """Whether a tuning task's kernel has a symbolic (non-constant) buffer dimension."""
    import tvm

    for func in task_mod.functions.values():
        for param in getattr(func, "params", []):
            try:
                shape = param.shape
            except AttributeError:
                return True  # a scalar parameter: a shape variable passed in
            if any(not isinstance(dim, tvm.tirx.IntImm) for dim in shape):
                return True
    return False


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {init.name for init in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def _model_digest(model: onnx.ModelProto, model_path: str | None = None) -> str:
    digest = hashlib.sha256(model.SerializeToString(deterministic=True))
    if model_path is not None and uses_external_data(model):
        # The references alone do not say what the weights are: hash the files they name.
        from edgec.frontend.onnx_import import external_data_files

        for path in external_data_files(model, os.path.dirname(os.path.abspath(model_path)),
                                        model_path):
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def _with_external_data(model: onnx.ModelProto, model_path: str | None) -> onnx.ModelProto:
    """``model`` with its external weights read in from ``model_path``'s folder (TVM's
    importer would otherwise read them relative to the current directory)."""
    if not uses_external_data(model):
        return model
    if model_path is None:
        raise ModelError(Diagnostic.error(
            "the model's weights are in external data, and the TVM backend was not told the "
            "folder they are in"))
    from onnx.external_data_helper import load_external_data_for_model

    from edgec.frontend.onnx_import import external_data_files

    folder = os.path.dirname(os.path.abspath(model_path))
    external_data_files(model, folder, model_path)  # confined, regular files: or ModelError
    loaded = onnx.ModelProto()
    loaded.CopyFrom(model)
    load_external_data_for_model(loaded, folder)
    return loaded


def _failing_node(error: BaseException, model: onnx.ModelProto) -> onnx.NodeProto | None:
    """The ONNX node TVM's importer was converting when it raised ``error``.

    The importer's ``_construct_nodes`` loop holds the node in a local; failing that,
    the first node whose op type the message names (OpNotImplemented lists op types).
    """
    tb = error.__traceback__
    node = None
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "_construct_nodes":
            candidate = tb.tb_frame.f_locals.get("node")
            if isinstance(candidate, onnx.NodeProto):
                node = candidate
        tb = tb.tb_next
    if node is not None:
        return node
    text = str(error)
    for candidate in model.graph.node:
        if candidate.op_type and candidate.op_type in text.replace(",", " ").split():
            return candidate
    return None


def _legalized_batch(model: onnx.ModelProto) -> int | None:
    """The batch legalize-tvm bound the model's symbolic batch to, if it did."""
    for prop in model.metadata_props:
        if prop.key == "edgec.legalize-tvm.bound-batch" and prop.value.isdigit():
            return int(prop.value)
    return None


def _contiguous(x) -> np.ndarray:
    x = np.asarray(x)
    return x if x.flags.c_contiguous else x.copy()


def _check_batch(names: list[str], inputs: Mapping[str, Any], batch: int | None) -> None:
    """A module tuned on a symbolic batch takes that one batch: anything else is a usage
    error (exit 2), not TVM's match_cast failure."""
    if batch is None:
        return
    for name in names:
        shape = np.shape(inputs[name])
        if not shape or shape[0] != batch:
            got = f"batch {shape[0]}" if shape else "a scalar"
            raise BackendError(
                f"input '{name}' has {got}, but this TVM module was tuned for batch {batch} "
                f"and takes batch {batch} only (its symbolic batch dimension was bound for "
                f"tuning); feed batches of {batch}, or compile with the spec's `at batch` "
                "set to the batch you run, or without tuning for a module that takes any "
                "batch", exit_code=2)


# Running a module is the device runtime's job (one implementation for both sides).
from edgec_runtime.tvm_runner import TVMRunner  # noqa: E402


@dataclass
class RemoteTVMRunner:
    """A module loaded into a relax VM on a device behind a TVM RPC tracker; inputs go
    there and outputs come back to this host."""

    input_names: list[str]
    output_names: list[str]
    vm: Any
    device: Any
    session: Any  # the RPC session: it lives as long as the runner
    batch: int | None = None  # the one batch a module tuned on a symbolic batch takes

    def _arguments(self, inputs: Mapping[str, np.ndarray]) -> list:
        import tvm

        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise BackendError(f"missing input(s) {', '.join(missing)}; the model takes "
                               f"{', '.join(self.input_names)}")
        _check_batch(self.input_names, inputs, self.batch)
        # Not np.ascontiguousarray: it makes a 0-d (scalar) input 1-d, which TVM refuses.
        return [tvm.runtime.tensor(_contiguous(inputs[name]), self.device)
                for name in self.input_names]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self.vm["main"](*self._arguments(inputs))
        values = [result] if hasattr(result, "numpy") else list(result)
        return {name: value.numpy() for name, value in zip(self.output_names, values)}


def check_rpc_tracker(config, timeout: float = 10.0) -> None:
    """Raises a one-line `BackendError` (exit 2) unless ``config`` names a reachable TVM
    RPC tracker with a device server registered under its key.

    TVM's own client retries a refused connection for 60 s, logging a warning every 5 s,
    and then fails deep inside tuning or measurement; this answers in ``timeout`` s.
    """
    import socket

    where = f"{config.host}:{config.port}"
    try:
        with socket.create_connection((config.host, config.port), timeout=timeout):
            pass
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise BackendError(f"cannot reach the RPC tracker {where}: {reason}",
                           exit_code=2) from None
    try:
        from tvm import rpc
    except ImportError as error:
        raise BackendError(f"TVM RPC needs apache-tvm (pip install apache-tvm): {error}",
                           exit_code=2) from None
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # TVM's tracker client blocks on a silent peer
    try:
        tracker = rpc.connect_tracker(config.host, config.port)
        try:
            summary = tracker.summary()
        finally:
            tracker.close()
    except Exception as error:  # RuntimeError "not RPC Tracker", timeouts, bad JSON
        reason = " ".join(str(error).split()) or type(error).__name__
        raise BackendError(f"{where} does not answer as a TVM RPC tracker: {reason}",
                           exit_code=2) from None
    finally:
        socket.setdefaulttimeout(previous)
    keys = sorted({str(entry.get("key", "")).split(":")[-1]
                   for entry in summary.get("server_info", [])} - {""})
    if config.key not in keys:
        raise BackendError(f"no device server is registered under key '{config.key}' at the "
                           f"RPC tracker {where} (keys there: {', '.join(keys) or 'none'})",
                           exit_code=2)


class TVMBackend:
    """Builds, loads and measures TVM modules (see the module docstring)."""

    name = "tvm"
    capabilities = Capabilities(
        precisions=("fp32", "fp16"),
        # docs/tvm-notes.md: no int8 speed-up, so int8 configurations go elsewhere.
        precision_notes={"int8": "TVM 0.27 runs QDQ in fp32"},
        # TVM's relax importer takes only standard ONNX ops: no com.microsoft contrib
        # ops, so the attention fusion (into com.microsoft::Attention) is not for TVM.
        pass_options={"fuse": {"exclude": "attention"}},
        # The importer needs shapes folded to constants, ops it lacks expanded, and
        # types populated (passes/legalize_tvm.py).
        final_passes=("legalize-tvm",),
        measures_over_rpc=True,  # latency and tuning reach devices through TVM RPC
        costly_build=True,       # compiling takes tens of seconds, tuning minutes
        in_auto=True)

    def __init__(self) -> None:
        # The last imported model: check_model then build imports once.
        self._imported: tuple[str, Any] | None = None

    # -- availability -----------------------------------------------------------------

    def describe_target(self, target: Target) -> dict[str, Any]:
        return tvm_target_json(target)

    def unavailable_reason(self, target: Target) -> str | None:
        try:
            import tvm  # noqa: F401
        except ImportError as error:
            return f"the TVM backend needs apache-tvm (pip install apache-tvm): {error}"
        if target.accelerator is not None and not _is_cuda(target):
            return (f"the TVM backend cannot build for a '{target.accelerator.kind}' "
                    "accelerator (only CUDA)")
        if _is_cuda(target):
            import tvm_ffi

            if tvm_ffi.get_global_func("target.build.cuda", allow_missing=True) is None:
                return "this TVM build has no CUDA code generator (target.build.cuda)"
        compiler = self._cross_compiler(target)
        if compiler is not None and shutil.which(compiler) is None:
            package = CROSS_COMPILERS[target.arch][1]
            return (f"cross-compiling for {target.arch} needs {compiler} "
                    f"(Debian package {package})")
        if target.arch not in CROSS_COMPILERS and target.arch != host_arch():
            return f"the TVM backend has no cross compiler for '{target.arch}'"
        return None

    @staticmethod
    def _cross_compiler(target: Target) -> str | None:
        """The C compiler that links the module, or None for this machine's own."""
        if target.arch == host_arch():
            return None
        return CROSS_COMPILERS.get(target.arch, (None, None))[0]

    @staticmethod
    def _runnable_here(target: Target) -> bool:
        return target.arch == host_arch() and target.accelerator is None

    # -- import -----------------------------------------------------------------------

    def check_model(self, model: onnx.ModelProto, *, model_path: str | None = None) -> None:
        self._import(model, model_path)

    def _import(self, model: onnx.ModelProto, model_path: str | None = None):
        digest = _model_digest(model, model_path)
        if self._imported is not None and self._imported[0] == digest:
            return self._imported[1]
        model = _with_external_data(model, model_path)
        from tvm.relax.frontend import onnx as relax_onnx

        self._refuse_miscompiled(model)
        # The importer prints "Error converting operator ..." and warns; edgec reports
        # the problem itself, once, as a diagnostic.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                mod = relax_onnx.from_onnx(model, keep_params_in_input=False)
            except Exception as error:  # the importer raises every kind of exception
                raise self._import_error(error, model) from error
        self._imported = (digest, mod)
        return mod

    @staticmethod
    def _refuse_miscompiled(model: onnx.ModelProto) -> None:
        """A model with a construct TVM imports but computes wrongly is refused."""
        from edgec.backends.tvm_legality import miscompiled

        found = miscompiled(model)
        if not found:
            return
        node, why = found[0]
        index = next((i for i, other in enumerate(model.graph.node) if other is node), None)
        name = node.name or (f"#{index}" if index is not None else "?")
        more = f" (and {len(found) - 1} more such node(s))" if len(found) > 1 else ""
        raise ModelError(Diagnostic.error(
            f"TVM would compute node '{name}' ({node.op_type}) wrongly: {why}{more}",
            Location(obj=f"node '{name}' ({node.op_type})"), code="tvm.miscompiled",
            notes=["the onnxruntime backend (backend ort) computes it correctly"]))

    @staticmethod
    def _import_error(error: Exception, model: onnx.ModelProto) -> ModelError:
        from edgec.backends.tvm_legality import needed_rewrite

        reason = " ".join(str(error).split()) or type(error).__name__
        node = _failing_node(error, model)
        if node is None:
            message = f"TVM cannot import the model: {reason}"
            location = None
        else:
            index = next((i for i, other in enumerate(model.graph.node) if other == node), None)
            name = node.name or (f"#{index}" if index is not None else "?")
            message = (f"TVM cannot import node '{name}' ({node.op_type}): {reason} "
                       f"[{needed_rewrite(node.op_type, reason)}]")
            location = Location(obj=f"node '{name}' ({node.op_type})")
        return ModelError(Diagnostic.error(
            message, location, code="tvm.unsupported-model",
            notes=["the onnxruntime backend (backend ort) may take this model"]))

    # -- build ------------------------------------------------------------------------

    def build(self, model: onnx.ModelProto, target: Target, out_dir: str,
              options: BuildOptions, *, model_path: str | None = None) -> BuildResult:
        import tvm
        from tvm import relax

        reason = self.unavailable_reason(target)
        if reason is not None:
            raise BackendError(reason, exit_code=2)
        progress = options.progress
        notes: list[str] = []
        tvm_target = tvm.target.Target(tvm_target_json(target))

        progress("import", 0, 1, "importing the model into relax")
        mod = self._import(model, model_path)
        will_tune = bool(options.tuning_trials or options.tuning_seconds) and (
            self._runnable_here(target) or options.rpc is not None)
        bound: dict[str, int] = {}
        if will_tune:
            # MetaSchedule tunes static shapes only (a symbolic batch crashes it in
            # parallel_for_dynamic): bind the batch to the one the spec is judged at.
            mod, bound = _bind_symbolic_batch(mod, options.batch)
            if bound:
                notes.append(
                    f"tuned for batch {options.batch}: the model's symbolic batch dimension "
                    f"({', '.join(bound)}) is bound to the spec's latency batch, so the module "
                    f"takes batch {options.batch} only (compile without tuning for a module "
                    "that takes any batch)")
        mod = relax.transform.DecomposeOpsForInference()(mod)
        mod = relax.get_pipeline("zero")(mod)
        progress("import", 1, 1, "imported and fused")

        tuning = None
        if options.tuning_trials or options.tuning_seconds:
            if not will_tune:
                notes.append(f"not tuned: tuning for {_machine_description(target)} needs the "
                             "device, reached over TVM RPC (an RPC tracker and key); "
                             "the module uses TVM's default schedules")
            elif options.rpc is not None and options.rpc.emulated:
                notes.append(f"not tuned: the RPC device {options.rpc.where} is an emulator, "
                             "whose timings say nothing of the board's; the module uses "
                             "TVM's default schedules")
            else:
                mod, tuning, tuning_notes = self._tune(mod, target, tvm_target, options)
                notes += tuning_notes

        progress("build", 0, 1, f"compiling for {target.name}")
        executable = tvm.compile(mod, target=tvm_target)
        progress("build", 1, 1, "compiled")

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        progress("export", 0, 1, f"writing {MODULE_FILE}")
        compiler = self._cross_compiler(target)
        if compiler is None:
            executable.export_library(str(out / MODULE_FILE))
        else:
            executable.export_library(str(out / MODULE_FILE),
                                      fcompile=tvm.support.cc.cross_compiler(compiler))
        progress("export", 1, 1, f"wrote {MODULE_FILE}")
        files = [MODULE_FILE]

        details: dict[str, Any] = {
            "module": MODULE_FILE,
            "target": target_dict(target),
            "target_name": target.name,
            "arch": target.arch,
            "triple": target.triple,
            "accelerator": None if target.accelerator is None else {
                "kind": target.accelerator.kind, "arch": target.accelerator.arch},
            "inputs": [_bind_value_info(_value_info(value), bound, leading=True)
                       for value in _graph_inputs(model)],
            "outputs": [_bind_value_info(_value_info(value), bound)
                        for value in model.graph.output],
            # The one batch the module takes, when tuning bound a symbolic batch to it.
            "batch": options.batch if bound else _legalized_batch(model),
            "tuned": bool(tuning and tuning["tasks_tuned"] > 0),
            "tuning": tuning,
            "tvm_version": tvm.__version__,
        }
        if _is_cuda(target):
            details["requires"] = CUDA_RUNTIME_REQUIREMENT
            details["cuda"] = self._precompile_cuda(executable, target, out, progress)
            if details["cuda"]["cubin"]:
                files.append(details["cuda"]["cubin"])
            else:
                notes.append("the CUDA kernels ship as CUDA C source, compiled when the "
                             "module loads on the device (NVRTC or nvcc there): "
                             + details["cuda"]["cubin_error"])
        return BuildResult(backend=self.name, files=files,
                           runnable_here=self._runnable_here(target),
                           details=details, tuned=details["tuned"], notes=notes,
                           batch=details["batch"])

    # -- tuning -----------------------------------------------------------------------

    def _tune(self, mod, target, tvm_target, options: BuildOptions):
        """Tune every task of the fused module that the database lacks; return the module
        with the database's schedules applied, the tuning details and notes."""
        from tvm.s_tir import meta_schedule as ms

        notes: list[str] = []
        db_dir = self._prepare_database_dir(target, options)
        tasks, dynamic = self._tunable_tasks(mod, tvm_target, notes)
        cost_model = "xgb" if _has_xgboost() else "random"

        # One process tunes a target's database at a time; others wait for it.
        with open(db_dir / "lock", "w") as lock, tempfile.TemporaryDirectory() as work_dir, \
                _meta_schedule_logging():
            fcntl.flock(lock, fcntl.LOCK_EX)
            database = _open_database(db_dir, target, notes)
            ledger = _read_ledger(db_dir, notes)
            per_task, todo, keys = self._trials_wanted(tasks, database, ledger, options)
            stopped_early = False
            if todo:
                stopped_early = self._run_tuning(
                    todo, per_task, keys, ledger, db_dir / LEDGER_FILE, database, target,
                    work_dir, cost_model, options,
                    builder=ms.builder.LocalBuilder(f_build=_build_candidate, timeout_sec=120),
                    runner=self._tuning_runner(options))
            mod, tuned_names = self._apply_database(mod, tvm_target, database, tasks)

        details = self._tuning_details(db_dir, cost_model, options, tasks, dynamic, per_task,
                                       tuned_names, stopped_early, notes)
        return mod, details, notes

    @staticmethod
    def _prepare_database_dir(target, options: BuildOptions) -> Path:
        """The target's tuning database folder under the cache, with the target it is for."""
        db_dir = tuning_database_dir(options.cache_dir, target)
        db_dir.mkdir(parents=True, exist_ok=True)
        _write_atomically(db_dir / "target.json",
                          json.dumps(target_dict(target), indent=2, sort_keys=True) + "\n")
        _load_tensor_intrinsics(target)
        return db_dir

    @staticmethod
    def _tunable_tasks(mod, tvm_target, notes: list[str]) -> tuple[list, list[str]]:
        """The fused module's tuning tasks MetaSchedule can tune, and the names of those it
        cannot (a kernel with a symbolic dimension)."""
        from tvm.s_tir import meta_schedule as ms

        tasks = ms.relax_integration.extract_tasks(mod, tvm_target)
        # MetaSchedule cannot tune a kernel with a symbolic dimension (one the batch
        # binding left, a sequence length say): those keep TVM's default schedule.
        dynamic = [task.task_name for task in tasks if _is_dynamic(task.dispatched[0])]
        tasks = [task for task in tasks if task.task_name not in dynamic]
        if dynamic:
            notes.append(f"{len(dynamic)} kernels have symbolic shapes, which MetaSchedule "
                         f"cannot tune, and keep TVM's default schedule: {', '.join(dynamic)}")
        return tasks, dynamic

    def _trials_wanted(self, tasks, database, ledger: dict[str, int], options: BuildOptions):
        """Per task: its record (trials so far), and the tasks still owed trials with how
        many, and each task's workload key in the ledger."""
        import tvm_ffi

        # Each task's share of the budget is fixed by the model and the budget, so a
        # rebuild with the same budget finds every share spent and runs no trial,
        # and a larger budget tunes on from where the database stands.
        shares = self._split_trials(options.tuning_trials, len(tasks))
        recorded = _records_per_workload(database)
        # Trials granted per workload so far (the ledger): a task whose search space ran
        # dry records fewer trials than it was granted, and must not be retried.
        per_task: dict[str, dict] = {}
        todo = []
        keys = {}
        for task, share in zip(tasks, shares):
            key = str(tvm_ffi.structural_hash(task.dispatched[0]))
            keys[task.task_name] = key
            in_database = max(recorded.get(int(key), 0), ledger.get(key, 0))
            wanted = max(0, share - in_database) if options.tuning_trials else \
                (0 if in_database else share)
            per_task[task.task_name] = {"task": task.task_name, "trials": 0,
                                        "trials_in_database": in_database}
            if wanted:
                todo.append((task, wanted))
        return per_task, todo, keys

    @staticmethod
    def _run_tuning(todo, per_task: dict[str, dict], keys: dict[str, str],
                    ledger: dict[str, int], ledger_path: Path, database, target,
                    work_dir: str, cost_model: str, options: BuildOptions, *,
                    builder, runner) -> bool:
        """MetaSchedule run on each task owed trials, in turn, recording the trials in
        ``per_task`` and the ledger; returns whether the wall-time budget stopped it."""
        from tvm.s_tir import meta_schedule as ms

        progress = options.progress
        start = time.monotonic()
        stopped_early = False
        index = 0
        for index, (task, trials) in enumerate(todo):
            elapsed = time.monotonic() - start
            if options.tuning_seconds is not None and index > 0:
                # Stop between tasks when the next one would likely overrun.
                expected = elapsed / index
                if elapsed + expected > options.tuning_seconds:
                    stopped_early = True
                    break
            progress("tune", index, len(todo), f"{task.task_name}: {trials} trials")
            strategy = _search_strategy(per_task[task.task_name]["trials_in_database"],
                                        trials)
            per_task[task.task_name]["strategy"] = strategy
            contexts, weights = _tune_contexts(task, target, work_dir, options.seed,
                                               strategy)
            before = len(database)
            ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=work_dir,
                          max_trials_global=trials, max_trials_per_task=trials,
                          num_trials_per_iter=min(TRIALS_PER_ROUND, trials),
                          builder=builder, runner=runner, database=database,
                          cost_model=cost_model)
            per_task[task.task_name]["trials"] = len(database) - before
            key = keys[task.task_name]
            ledger[key] = per_task[task.task_name]["trials_in_database"] + trials
            # Atomically: a kill mid-write must not leave a ledger that fails every
            # later tuned compile for this target.
            _write_atomically(ledger_path, json.dumps(ledger, indent=1, sort_keys=True) + "\n")
        progress("tune", len(todo) if not stopped_early else index, len(todo),
                 "tuning done" if not stopped_early else "wall time spent")
        return stopped_early

    @staticmethod
    def _apply_database(mod, tvm_target, database, tasks):
        """``mod`` with the database's schedules applied, and the tasks it has one for."""
        from tvm import relax

        with tvm_target, database:
            mod = relax.transform.MetaScheduleApplyDatabase()(mod)
        tuned_names = {task.task_name for task in tasks
                       if database.query_tuning_record(task.dispatched[0], tvm_target,
                                                       task.task_name)}
        return mod, tuned_names

    @staticmethod
    def _tuning_details(db_dir: Path, cost_model: str, options: BuildOptions, tasks,
                        dynamic: list[str], per_task: dict[str, dict], tuned_names: set[str],
                        stopped_early: bool, notes: list[str]) -> dict:
        """The manifest's account of the tuning; notes on kernels left untuned."""
        for entry in per_task.values():
            entry["tuned"] = entry["task"] in tuned_names
        untuned = [name for name, entry in per_task.items() if not entry["tuned"]]
        if untuned:
            why = "the wall-time budget ran out" if stopped_early else \
                "no candidate built and ran"
            notes.append(f"{len(untuned)} of {len(tasks)} kernels keep TVM's naive default "
                         f"schedule ({why}): {', '.join(untuned)}")
        if options.rpc is not None:
            notes.append(f"tuned on {options.rpc.where}")
        return {
            "database": f"{TUNING_DIR}/{db_dir.name}",
            "cost_model": cost_model,
            "trials_requested": options.tuning_trials,
            "seconds_requested": options.tuning_seconds,
            "trials_run": sum(entry["trials"] for entry in per_task.values()),
            "tasks_total": len(tasks),
            "tasks_dynamic": len(dynamic),
            "tasks_tuned": len(tuned_names),
            "tasks_untuned": len(untuned),
            "tasks_from_database": sum(1 for entry in per_task.values()
                                       if entry["trials"] == 0 and entry["tuned"]),
            "stopped_by_wall_time": stopped_early,
            "per_task": [per_task[task.task_name] for task in tasks],
        }

    @staticmethod
    def _split_trials(trials: int | None, tasks: int) -> list[int]:
        """Trials per task: the global budget split evenly, at least one each."""
        if tasks == 0:
            return []
        if not trials:
            return [TRIALS_PER_TASK_WITHOUT_BUDGET] * tasks
        base, extra = divmod(trials, tasks)
        return [max(1, base + (1 if index < extra else 0)) for index in range(tasks)]

    @staticmethod
    def _tuning_runner(options: BuildOptions):
        from tvm.s_tir import meta_schedule as ms

        if options.rpc is None:
            return ms.runner.LocalRunner(timeout_sec=60)
        check_rpc_tracker(options.rpc)
        config = ms.runner.RPCConfig(tracker_host=options.rpc.host,
                                     tracker_port=options.rpc.port,
                                     tracker_key=options.rpc.key, session_timeout_sec=60)
        return ms.runner.RPCRunner(config)

    # -- CUDA -------------------------------------------------------------------------

    @staticmethod
    def _precompile_cuda(executable, target, out: Path, progress) -> dict:
        """Compile the module's CUDA C to a cubin with nvcc, when this machine has it."""
        import tvm

        arch = target.accelerator.arch or "sm_87"
        result: dict[str, Any] = {"arch": arch, "source_in_module": True, "cubin": None,
                                  "cubin_error": None}
        cuda_module = _find_module(executable.mod, "cuda")
        if cuda_module is None:
            result["source_in_module"] = False
            result["cubin_error"] = "the module has no CUDA kernels"
            return result
        if shutil.which("nvcc") is None:
            result["cubin_error"] = "nvcc is not on PATH here"
            return result
        from tvm.support import nvcc

        progress("cubin", 0, 1, f"nvcc for {arch}")
        try:
            with tvm.target.Target({"kind": "cuda", "arch": arch}):
                cubin = nvcc.compile_cuda(cuda_module.inspect_source(), target_format="cubin",
                                          arch=arch, compiler="nvcc")
        except Exception as error:  # nvcc's own failures come back as RuntimeError text
            result["cubin_error"] = " ".join(str(error).split())[:500]
            return result
        name = f"model.{arch}.cubin"
        (out / name).write_bytes(bytes(cubin))
        result["cubin"] = name
        progress("cubin", 1, 1, f"wrote {name}")
        return result

    # -- load and measure -------------------------------------------------------------

    @staticmethod
    def _check_runnable_here(details: Mapping[str, Any]) -> None:
        arch = details.get("arch")
        accelerator = details.get("accelerator")
        if arch == host_arch() and accelerator is not None and accelerator.get("kind") == "cuda":
            _check_cuda_runtime(details)
            return
        if arch != host_arch() or accelerator is not None:
            machine = details.get("target_name", "another machine")
            what = f"{arch}" + (f" + {accelerator['kind']} {accelerator.get('arch') or ''}"
                                .rstrip() if accelerator else "")
            raise BackendError(
                f"the TVM module is built for {machine} ({what}) and cannot run on this "
                f"{host_arch()} host; copy the artifact to the device, or measure it over "
                "TVM RPC", exit_code=2)

    def load(self, artifact_dir: str, details: dict[str, Any]):
        """The device runtime's runner (`edgec_runtime.tvm_runner.TVMRunner`): one way
        of loading and running a module, on the device and here alike."""
        self._check_runnable_here(details)
        from edgec_runtime.errors import RuntimeFailure
        from edgec_runtime.tvm_runner import TVMRunner as RuntimeRunner

        try:
            return RuntimeRunner(str(Path(artifact_dir) / details["module"]), details)
        except RuntimeFailure as error:
            raise BackendError(error.message, exit_code=error.exit_code) from None

    def measure(self, artifact_dir: str, details: dict[str, Any],
                inputs: Mapping[str, np.ndarray], options: BuildOptions) -> LatencyStats:
        if options.rpc is not None:
            return self._measure_rpc(artifact_dir, details, inputs, options)
        set_threads(options.threads)
        runner = self.load(artifact_dir, details)
        # Timed like the RPC path (the VM's own evaluator), so that a local and a remote
        # bench of the same module measure the same thing.
        times = runner.bench_times({name: inputs[name] for name in runner.input_names})
        if not times:
            from edgec.backends.base import time_calls
            times = time_calls(runner.timed_call(inputs))
        return LatencyStats.from_times(times, where="host")

    def _measure_rpc(self, artifact_dir: str, details: dict[str, Any],
                     inputs: Mapping[str, np.ndarray], options: BuildOptions) -> LatencyStats:
        _check_batch([value["name"] for value in details["inputs"]], inputs, details.get("batch"))
        runner = self.remote_runner(artifact_dir, details, options.rpc, threads=options.threads)
        return _time_vm(runner.vm, runner.device, runner._arguments(inputs),
                        where=options.rpc.where)

    @staticmethod
    def remote_runner(artifact_dir: str, details: dict[str, Any], config,
                      threads: int | None = None) -> RemoteTVMRunner:
        """The module uploaded to, loaded on and run by a device behind the RPC tracker:
        outputs come back to this host (how accuracy is scored on the module itself)."""
        from tvm import relax, rpc

        check_rpc_tracker(config)
        try:
            tracker = rpc.connect_tracker(config.host, config.port)
            remote = tracker.request(config.key, session_timeout=600)
        except Exception as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            raise BackendError(f"cannot reach a device '{config.key}' through the RPC "
                               f"tracker {config.host}:{config.port}: {reason}",
                               exit_code=2) from None
        if threads:
            configure = remote.get_function("runtime.config_threadpool")
            configure(1, threads)
        remote.upload(str(Path(artifact_dir) / details["module"]))
        library = remote.load_module(details["module"])
        device = remote.cuda() if details.get("accelerator") else remote.cpu()
        return RemoteTVMRunner(input_names=[value["name"] for value in details["inputs"]],
                               output_names=[value["name"] for value in details["outputs"]],
                               vm=relax.VirtualMachine(library, device), device=device,
                               session=remote,
                               batch=details.get("batch"))


def _check_cuda_runtime(details: Mapping[str, Any]) -> None:
    """A CUDA module runs only on a TVM runtime built with CUDA, with a GPU present."""
    import tvm

    machine = details.get("target_name", "a CUDA GPU")
    if not tvm.runtime.enabled("cuda"):
        raise BackendError(
            f"the TVM module for {machine} runs its kernels on a CUDA GPU, but this TVM "
            f"runtime ({tvm.__version__}) was built without CUDA (tvm.runtime.enabled('cuda') "
            "is False; the apache-tvm wheels are): install a TVM built with USE_CUDA=ON",
            exit_code=2)
    if not tvm.cuda(0).exist:
        raise BackendError(f"the TVM module for {machine} needs a CUDA GPU and this machine "
                           "shows none (tvm.cuda(0) does not exist)", exit_code=2)


def _time_vm(vm, device, arguments, *, where: str, max_seconds: float = 10.0) -> LatencyStats:
    """Latency of ``main`` with the VM's time evaluator (on the device, for RPC)."""
    # The stateful form times the call without shipping outputs (tuples) back.
    vm.set_input("main", *arguments)
    # Warm-up, and at most about max_seconds of timed runs (at least 5), as time_calls
    # takes: 50 runs of an untuned ResNet-18 (1.5 s each) took over a minute per candidate.
    [first] = vm.time_evaluator("invoke_stateful", device, number=1, repeat=1)("main").results
    if first * 4 < max_seconds / 10:
        vm.time_evaluator("invoke_stateful", device, number=1, repeat=4)("main")
    repeat = max(5, min(50, int(max_seconds / max(first, 1e-9))))
    evaluator = vm.time_evaluator("invoke_stateful", device, number=1, repeat=repeat,
                                  min_repeat_ms=0)
    times = list(evaluator("main").results)
    if sum(times) < 0.5:  # fast models: more samples, as time_calls takes
        times += list(vm.time_evaluator("invoke_stateful", device, number=1,
                                        repeat=200)("main").results)
    return LatencyStats.from_times(times, where=where)


def set_threads(threads: int | None) -> None:
    """Sets how many threads TVM's runtime uses in this process (None: all cores)."""
    import tvm_ffi

    count = threads or len(os.sched_getaffinity(0))
    os.environ["TVM_NUM_THREADS"] = str(count)
    configure = tvm_ffi.get_global_func("runtime.config_threadpool", allow_missing=True)
    if configure is not None:
        # Configuring TVM's pool pins the calling thread to one core; onnxruntime
        # sessions measured later in this process (the planner compares both) would
        # then run on that one core. Give the thread its CPUs back.
        mask = os.sched_getaffinity(0)
        configure(1, count)
        os.sched_setaffinity(0, mask)


def _records_per_workload(database) -> dict[int, int]:
    """How many tuning records (trials) the database holds per workload's structural hash."""
    import tvm_ffi

    counts: dict[int, int] = {}
    for record in database.get_all_tuning_records():
        key = tvm_ffi.structural_hash(record.workload.mod)
        counts[key] = counts.get(key, 0) + 1
    return counts


def _find_module(module, kind: str):
    if module.kind == kind:
        return module
    for imported in module.imports:
        found = _find_module(imported, kind)
        if found is not None:
            return found
    return None


def _has_xgboost() -> bool:
    try:
        import xgboost  # noqa: F401
    except ImportError:
        return False
    return True


__all__ = ["TVMBackend", "TVMRunner", "RemoteTVMRunner", "check_rpc_tracker", "host_arch",
           "target_json", "tuning_database_dir",
           "set_threads", "MODULE_FILE"]
