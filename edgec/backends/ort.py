"""The onnxruntime backend: the artifact is the optimized ONNX plus the session options it
was measured with, and runs with onnxruntime alone (on any machine onnxruntime supports).

For a target with a CUDA accelerator (a Jetson) the session names the execution
providers of a Jetson's onnxruntime-gpu build, in order: TensorRT (fp16 kernels allowed
when the model is fp16 or int8, int8 when it holds Q/DQ; engines cached on the device),
then CUDA, then the CPU for any node neither takes. Loading such an artifact where
onnxruntime has neither GPU provider is refused with one line (exit 2), unless CPU
fallback is allowed: ``edgec run/bench --allow-cpu-fallback`` or the environment
variable ``EDGEC_ALLOW_CPU_FALLBACK=1`` (it then runs, slowly, on the CPU).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import onnx

from edgec.backends.base import (BackendError, BuildOptions, BuildResult, Capabilities,
                                 LatencyStats, time_calls, uses_external_data)
from edgec.diagnostics import Diagnostic, ModelError

if TYPE_CHECKING:
    from edgec.dsl.spec import Target

SESSION_FILE = "session.json"
MODEL_FILE = "model.onnx"

# Loading and running, and which providers a session gets, are the device runtime's.
from edgec_runtime.ort_runner import (CPU_FALLBACK_ENV, GPU_PROVIDERS,  # noqa: E402,F401
                                      TRT_CACHE_ENV, cpu_fallback_allowed, session_options,
                                      session_providers)
from edgec_runtime.ort_runner import OrtRunner as _RuntimeOrtRunner  # noqa: E402
from edgec_runtime.ort_runner import provider_name as _provider_name  # noqa: E402,F401


def model_precision(model: onnx.ModelProto) -> str:
    """int8 when the model holds Q/DQ or QLinear nodes, fp16 when it holds float16
    tensors, else fp32: what the GPU providers should be allowed to run it in."""
    ops = {n.op_type for n in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul",
              "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"}:
        return "int8"
    fp16 = onnx.TensorProto.FLOAT16
    if any(t.data_type == fp16 for t in model.graph.initializer) or any(
            v.type.tensor_type.elem_type == fp16
            for v in list(model.graph.value_info) + list(model.graph.input)
            + list(model.graph.output)) or any(
            n.op_type == "Cast" and any(a.name == "to" and a.i == fp16 for a in n.attribute)
            for n in model.graph.node):
        return "fp16"
    return "fp32"


def gpu_providers(precision: str) -> list:
    """The providers (with options) a Jetson's onnxruntime-gpu offers, fastest first.
    Option names and values as onnxruntime's TensorRT and CUDA providers take them."""
    tensorrt = {"device_id": "0",
                "trt_fp16_enable": "True" if precision in ("fp16", "int8") else "False",
                "trt_int8_enable": "True" if precision == "int8" else "False",
                "trt_engine_cache_enable": "True"}   # the path is chosen on the device
    cuda = {"device_id": "0", "cudnn_conv_algo_search": "EXHAUSTIVE",
            "do_copy_in_default_stream": "1"}
    return [["TensorrtExecutionProvider", tensorrt], ["CUDAExecutionProvider", cuda],
            "CPUExecutionProvider"]


class OrtRunner(_RuntimeOrtRunner):
    """The device runtime's onnxruntime runner; its refusals as `BackendError`."""

    def __init__(self, model_path: str, settings: dict[str, Any], threads: int | None = None):
        from edgec_runtime.errors import RuntimeFailure

        try:
            super().__init__(model_path, settings, threads=threads)
        except RuntimeFailure as e:
            raise BackendError(Diagnostic.error(e.message), exit_code=e.exit_code) from None


def _is_cuda(target: Target | None) -> bool:
    accelerator = getattr(target, "accelerator", None)
    return accelerator is not None and accelerator.kind == "cuda"


class OrtBackend:
    name = "ort"
    # int8: onnxruntime runs a Q/DQ model's quantized ops with integer kernels. It has no
    # TVM RPC runtime: it is measured here only (measures_over_rpc stays False).
    capabilities = Capabilities(precisions=("fp32", "fp16", "int8"), in_auto=True)

    def describe_target(self, target: Target) -> dict[str, Any]:
        providers = gpu_providers("fp32") if _is_cuda(target) else ["CPUExecutionProvider"]
        return {"execution_providers": [p if isinstance(p, str) else p[0] for p in providers]}

    def unavailable_reason(self, target: Target) -> str | None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "onnxruntime is not installed"
        return None

    def check_model(self, model: onnx.ModelProto, *, model_path: str | None = None) -> None:
        import onnxruntime as ort

        # A model with external data is opened from its file, so that its weights resolve
        # in its own folder (from bytes, onnxruntime would look in the current directory),
        # and so that a model over protobuf's 2 GB limit is never serialized.
        source = model_path if model_path is not None and uses_external_data(model) \
            else model.SerializeToString()
        try:
            ort.InferenceSession(source, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ModelError(Diagnostic.error(
                f"onnxruntime cannot run the model: {str(e).splitlines()[0]}")) from None

    def settings(self, options: BuildOptions, target: Target | None = None,
                 model: onnx.ModelProto | None = None) -> dict[str, Any]:
        providers: list = ["CPUExecutionProvider"]
        if _is_cuda(target):
            providers = gpu_providers(model_precision(model) if model is not None else "fp32")
        return {"graph_optimization_level": "ORT_ENABLE_ALL", "execution_mode": "ORT_SEQUENTIAL",
                "intra_op_num_threads": options.threads or 0, "inter_op_num_threads": 1,
                "providers": providers}

    def build(self, model: onnx.ModelProto, target: Target, out_dir: str,
              options: BuildOptions, *, model_path: str | None = None) -> BuildResult:
        # The compile driver has already written model.onnx; the backend adds how to run it.
        settings = self.settings(options, target, model)
        with open(os.path.join(out_dir, SESSION_FILE), "w") as f:
            json.dump(settings, f, indent=2, sort_keys=True)
            f.write("\n")
        import onnxruntime as ort

        details = {"model": MODEL_FILE, "session": SESSION_FILE,
                   "onnxruntime_version": ort.__version__, "settings": settings}
        notes = ["onnxruntime CPU execution provider, all graph optimizations"]
        runnable_here = True
        if _is_cuda(target):
            precision = model_precision(model)
            trt = settings["providers"][0][1]
            kinds = ", ".join(k for k, flag in (("fp16", "trt_fp16_enable"),
                                                 ("int8", "trt_int8_enable"))
                              if trt[flag] == "True") or "fp32 only"
            details["precision"] = precision
            details["requires"] = ("onnxruntime-gpu with TensorrtExecutionProvider or "
                                   "CUDAExecutionProvider (on a Jetson: NVIDIA's JetPack "
                                   "onnxruntime-gpu build)")
            # Runs here only where this onnxruntime has a GPU provider.
            runnable_here = bool(set(ort.get_available_providers()) & set(GPU_PROVIDERS))
            notes = [f"onnxruntime on the {target.accelerator.kind} GPU: TensorRT ({kinds}), "
                     "then CUDA, then CPU execution providers; needs onnxruntime-gpu on the "
                     f"device (--allow-cpu-fallback or {CPU_FALLBACK_ENV}=1 runs it on a "
                     "CPU)"]
        return BuildResult(
            backend="ort", files=[SESSION_FILE], runnable_here=runnable_here,
            details=details,
            tuned=True,  # onnxruntime's kernels need no tuning
            notes=notes)

    def load(self, artifact_dir: str, details: dict[str, Any]) -> OrtRunner:
        return OrtRunner(os.path.join(artifact_dir, details.get("model", MODEL_FILE)),
                         details.get("settings", {}))

    def measure(self, artifact_dir: str, details: dict[str, Any],
                inputs: Mapping[str, np.ndarray], options: BuildOptions) -> LatencyStats:
        if options.rpc is not None:
            raise BackendError(Diagnostic.error(
                "the ort backend cannot be measured over TVM RPC; measure it on the device "
                "with `edgec bench` there"), exit_code=2)
        runner = self.load(artifact_dir, details)
        feed = {k: inputs[k] for k in runner.input_names}
        session = runner.session
        times = time_calls(lambda: session.run(None, feed))
        return LatencyStats.from_times(times, "host")
