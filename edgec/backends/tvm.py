"""The TVM backend: ONNX -> relax -> (MetaSchedule tuning) -> a module ``.so`` for the
target, cross-compiled for Arm boards and with CUDA kernels for Jetson GPUs.

Tuning is `edgec.backends.tvm_tuning`'s (records persist per target in the cache, so
compiling the same model for the same target again runs no trials); the target's TVM
description is `edgec.backends.tvm_target`'s. Measurement runs the module on this host,
or on a device reached over TVM RPC (`edgec.backends.tvm_rpc` checks the tracker).

TVM is imported lazily: ``import edgec.backends.tvm`` works without apache-tvm, and
`TVMBackend.unavailable_reason` then says what is missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import onnx

from edgec.backends.base import (BackendError, BuildOptions, BuildResult, Capabilities,
                                 LatencyStats, uses_external_data)
# Re-exported: the planner, the tests and the benchmarks take these from here.
from edgec.backends.tvm_gpu_schedule import ScheduleRecord, cuda_pipeline
from edgec.backends.tvm_rpc import check_rpc_tracker
from edgec.backends.tvm_target import (host_arch, is_cuda, target_dict, target_json,
                                       tvm_target_json)
from edgec.backends.tvm_tuning import tune, tuning_database_dir
from edgec.diagnostics import Diagnostic, Location, ModelError

if TYPE_CHECKING:
    from edgec.dsl.spec import Target

MODULE_FILE = "model.so"

# Debian cross compilers by target architecture: (executable, package).
CROSS_COMPILERS = {
    "aarch64": ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
    "armv7": ("arm-linux-gnueabihf-gcc", "gcc-arm-linux-gnueabihf"),
    "x86_64": ("x86_64-linux-gnu-gcc", "gcc-x86-64-linux-gnu"),
}

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


def failing_node(error: BaseException, model: onnx.ModelProto) -> onnx.NodeProto | None:
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


def _check_batch(names: list[str], inputs: Mapping[str, Any], batch: int | None,
                 shapes: Mapping[str, Any] | None = None) -> None:
    """A module tuned on a symbolic batch takes that one batch: anything else is a usage
    error (exit 2), not TVM's match_cast failure. Only inputs with that batch on axis 0
    are checked (``shapes``: the module's input shapes, as its details record them): a
    scalar (a sample rate) or a state whose axis 0 is fixed ([2, N, H]) has none."""
    if batch is None:
        return
    for name in names:
        if shapes is not None and not _takes_batch(shapes.get(name), batch):
            continue
        shape = np.shape(inputs[name])
        if not shape or shape[0] != batch:
            got = f"batch {shape[0]}" if shape else "a scalar"
            raise BackendError(
                f"input '{name}' has {got}, but this TVM module was tuned for batch {batch} "
                f"and takes batch {batch} only (its symbolic batch dimension was bound for "
                f"tuning); feed batches of {batch}, or compile with the spec's `at batch` "
                "set to the batch you run, or without tuning for a module that takes any "
                "batch", exit_code=2)


def _takes_batch(shape, batch: int) -> bool:
    if shape is None:  # unknown: checked
        return True
    return bool(shape) and (shape[0] == batch or not isinstance(shape[0], int))


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
    input_shapes: dict | None = None  # name -> shape from the details (None: unknown)

    def _arguments(self, inputs: Mapping[str, np.ndarray]) -> list:
        import tvm

        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise BackendError(f"missing input(s) {', '.join(missing)}; the model takes "
                               f"{', '.join(self.input_names)}")
        _check_batch(self.input_names, inputs, self.batch, self.input_shapes)
        # Not np.ascontiguousarray: it makes a 0-d (scalar) input 1-d, which TVM refuses.
        return [tvm.runtime.tensor(_contiguous(inputs[name]), self.device)
                for name in self.input_names]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self.vm["main"](*self._arguments(inputs))
        values = [result] if hasattr(result, "numpy") else list(result)
        return {name: value.numpy() for name, value in zip(self.output_names, values)}


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
        # types populated (passes/legalize_tvm/).
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
        if target.accelerator is not None and not is_cuda(target):
            return (f"the TVM backend cannot build for a '{target.accelerator.kind}' "
                    "accelerator (only CUDA)")
        if is_cuda(target):
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
        node = failing_node(error, model)
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

        reason = self.unavailable_reason(target)
        if reason is not None:
            raise BackendError(reason, exit_code=2)
        progress = options.progress
        notes: list[str] = []
        tvm_target = tvm.target.Target(tvm_target_json(target))
        tuning_asked = bool(options.tuning_trials or options.tuning_seconds)
        can_tune = tuning_asked and (self._runnable_here(target) or options.rpc is not None)

        mod, bound = self._import_for_build(model, model_path, options, can_tune, notes)
        legalized = _legalized_batch(model)
        if not bound and legalized is not None:
            notes.append(
                f"takes batch {legalized} only: the model computes shapes at run time, which "
                f"TVM's importer needs as constants, so legalize-tvm's bind-dims bound its "
                f"symbolic batch to the spec's (`at batch {legalized}`); edgec run feeds it "
                f"{legalized} rows at a time")
        tuning = None
        if tuning_asked:
            not_tuned = self._why_not_tuned(target, options, can_tune)
            if not_tuned is not None:
                notes.append(not_tuned)
            else:
                mod, tuning, tuning_notes = tune(mod, target, tvm_target, options)
                notes += tuning_notes

        progress("build", 0, 1, f"compiling for {target.name}")
        schedules = ScheduleRecord()
        if is_cuda(target):  # TVM's CUDA pipeline, tolerant of a dlight rule that raises
            executable = tvm.compile(mod, target=tvm_target,
                                     relax_pipeline=cuda_pipeline(tvm_target, schedules))
            if schedules.note():
                notes.append(schedules.note())
        else:
            executable = tvm.compile(mod, target=tvm_target)
        progress("build", 1, 1, "compiled")
        out = Path(out_dir)
        self._export(executable, target, out, progress)
        files = [MODULE_FILE]

        details = self._details(model, target, options, bound, tuning)
        if is_cuda(target):
            details.update(self._cuda_details(executable, target, out, progress, notes))
            details["cuda"]["schedule_fallbacks"] = [f.as_dict() for f in schedules.failures]
            if details["cuda"]["cubin"]:
                files.append(details["cuda"]["cubin"])
        return BuildResult(backend=self.name, files=files,
                           runnable_here=self._runnable_here(target),
                           details=details, tuned=details["tuned"], notes=notes,
                           batch=details["batch"])

    def _import_for_build(self, model: onnx.ModelProto, model_path: str | None,
                          options: BuildOptions, bind_batch: bool, notes: list[str]):
        """The model in relax, decomposed for inference and fused; with its symbolic
        batch bound to the spec's when it is to be tuned. Returns the module and the
        dimensions bound (name -> batch)."""
        from tvm import relax

        progress = options.progress
        progress("import", 0, 1, "importing the model into relax")
        mod = self._import(model, model_path)
        bound: dict[str, int] = {}
        if bind_batch:
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
        return mod, bound

    @staticmethod
    def _why_not_tuned(target: Target, options: BuildOptions, can_tune: bool) -> str | None:
        """Why asked-for tuning does not run (the build's note), or None when it runs."""
        if not can_tune:
            return (f"not tuned: tuning for {_machine_description(target)} needs the "
                    "device, reached over TVM RPC (an RPC tracker and key); "
                    "the module uses TVM's default schedules")
        if options.rpc is not None and options.rpc.emulated:
            return (f"not tuned: the RPC device {options.rpc.where} is an emulator, "
                    "whose timings say nothing of the board's; the module uses "
                    "TVM's default schedules")
        return None

    def _export(self, executable, target: Target, out: Path, progress) -> None:
        """Writes the module library into ``out``, linked by the target's cross compiler."""
        import tvm

        out.mkdir(parents=True, exist_ok=True)
        progress("export", 0, 1, f"writing {MODULE_FILE}")
        compiler = self._cross_compiler(target)
        if compiler is None:
            executable.export_library(str(out / MODULE_FILE))
        else:
            executable.export_library(str(out / MODULE_FILE),
                                      fcompile=tvm.support.cc.cross_compiler(compiler))
        progress("export", 1, 1, f"wrote {MODULE_FILE}")

    @staticmethod
    def _details(model: onnx.ModelProto, target: Target, options: BuildOptions,
                 bound: Mapping[str, int], tuning: dict | None) -> dict[str, Any]:
        """The manifest's backend details: the module, its target, its inputs and outputs
        (with the dimensions tuning bound), the one batch it takes, and the tuning."""
        import tvm

        return {
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

    def _cuda_details(self, executable, target: Target, out: Path, progress,
                      notes: list[str]) -> dict[str, Any]:
        """The details a CUDA module adds: what it needs where it runs, and its kernels
        (a cubin in ``out`` when nvcc is here, else a note that they ship as source)."""
        cuda = self._precompile_cuda(executable, target, out, progress)
        if not cuda["cubin"]:
            notes.append("the CUDA kernels ship as CUDA C source, compiled when the "
                         "module loads on the device (NVRTC or nvcc there): "
                         + cuda["cubin_error"])
        return {"requires": CUDA_RUNTIME_REQUIREMENT, "cuda": cuda}

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
        _check_batch([value["name"] for value in details["inputs"]], inputs, details.get("batch"),
                     {value["name"]: value.get("shape") for value in details["inputs"]})
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
                               batch=details.get("batch"),
                               input_shapes={value["name"]: value.get("shape")
                                             for value in details["inputs"]})


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


def _find_module(module, kind: str):
    if module.kind == kind:
        return module
    for imported in module.imports:
        found = _find_module(imported, kind)
        if found is not None:
            return found
    return None


__all__ = ["TVMBackend", "TVMRunner", "RemoteTVMRunner", "check_rpc_tracker", "failing_node",
           "host_arch", "target_dict", "target_json", "tvm_target_json", "tuning_database_dir",
           "set_threads", "MODULE_FILE"]
