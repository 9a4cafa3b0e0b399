"""Running an ort artifact: the optimized ONNX with the session settings it was
measured with. Needs numpy and onnxruntime only.

An artifact for a GPU target names execution providers as onnxruntime-gpu offers them
(``[name, {option: value}]`` or a bare name): TensorRT, then CUDA, then the CPU. Where
this onnxruntime has neither GPU provider it is refused (one line, exit 2) unless CPU
fallback is allowed (``--allow-cpu-fallback`` or ``EDGEC_ALLOW_CPU_FALLBACK=1``).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from edgec_runtime.errors import ArtifactError, ModelLoadError, NotRunnableHere
from edgec_runtime.feeds import InputInfo

CPU_FALLBACK_ENV = "EDGEC_ALLOW_CPU_FALLBACK"
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
# Where TensorRT engines built on the device are kept (a per-model folder below it).
TRT_CACHE_ENV = "EDGEC_TRT_CACHE"


def cpu_fallback_allowed() -> bool:
    return os.environ.get(CPU_FALLBACK_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def provider_name(entry) -> str:
    return entry if isinstance(entry, str) else entry[0]


def _trt_cache_dir(model_path: str) -> str:
    import hashlib

    base = os.environ.get(TRT_CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "edgec", "trt-engines")
    h = hashlib.sha256()
    with open(model_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return os.path.join(base, h.hexdigest()[:16])


def missing_gpu_providers(settings: dict, available: list[str]) -> str | None:
    """Why the GPU providers the settings name cannot run here (None: they can, the
    settings name none, or CPU fallback is allowed)."""
    wanted = settings.get("providers", ["CPUExecutionProvider"])
    gpu = [provider_name(p) for p in wanted if provider_name(p) in GPU_PROVIDERS]
    if not gpu or set(available) & set(gpu) or cpu_fallback_allowed():
        return None
    return (f"this artifact runs on the GPU through onnxruntime's {' or '.join(gpu)}, which "
            f"this onnxruntime lacks (it has {', '.join(sorted(available)) or 'none'}): "
            "install onnxruntime-gpu (on a Jetson, NVIDIA's JetPack build), or allow CPU "
            f"fallback with --allow-cpu-fallback or {CPU_FALLBACK_ENV}=1")


def session_providers(model_path: str, settings: dict[str, Any], where: str | None = None) -> list:
    """The providers to open a session with here: as the artifact names them, or the
    CPU alone where it names GPU providers this onnxruntime lacks and CPU fallback is
    allowed. Raises NotRunnableHere (exit 2) where they are missing and it is not."""
    import onnxruntime as ort

    wanted = settings.get("providers", ["CPUExecutionProvider"])
    available = list(ort.get_available_providers())
    gpu = [provider_name(p) for p in wanted if provider_name(p) in GPU_PROVIDERS]
    if gpu and not set(available) & set(gpu):
        why = missing_gpu_providers(settings, available)
        if why:
            raise NotRunnableHere(why.replace("this onnxruntime",
                                              f"this onnxruntime {ort.__version__}"), where)
        return ["CPUExecutionProvider"]
    providers = []
    for entry in wanted:
        name = provider_name(entry)
        if name not in available:
            continue
        options = {} if isinstance(entry, str) else dict(entry[1])
        if name == "TensorrtExecutionProvider" and options.get("trt_engine_cache_enable") == "True":
            path = _trt_cache_dir(model_path)
            os.makedirs(path, exist_ok=True)
            options["trt_engine_cache_path"] = path
        providers.append((name, options) if options else name)
    return providers or ["CPUExecutionProvider"]

_ORT_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64",
              "tensor(float16)": "float16", "tensor(int8)": "int8", "tensor(int16)": "int16",
              "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(uint8)": "uint8",
              "tensor(uint16)": "uint16", "tensor(uint32)": "uint32", "tensor(uint64)": "uint64",
              "tensor(bool)": "bool"}
_LEVELS = ("ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_LAYOUT",
           "ORT_ENABLE_ALL")
_MODES = ("ORT_SEQUENTIAL", "ORT_PARALLEL")


def check_settings(settings: Any, where: str | None) -> dict:
    """The session settings of a manifest, validated (a tampered value is one line)."""
    def bad(why: str) -> ArtifactError:
        return ArtifactError(f"manifest.json's onnxruntime settings are damaged: {why}", where)

    if settings is None:
        return {}
    if not isinstance(settings, dict):
        raise bad("not an object")
    level = settings.get("graph_optimization_level", "ORT_ENABLE_ALL")
    if level not in _LEVELS:
        raise bad(f"graph_optimization_level {level!r} is not one of {', '.join(_LEVELS)}")
    mode = settings.get("execution_mode", "ORT_SEQUENTIAL")
    if mode not in _MODES:
        raise bad(f"execution_mode {mode!r} is not one of {', '.join(_MODES)}")
    for key in ("intra_op_num_threads", "inter_op_num_threads"):
        value = settings.get(key, 0)
        if type(value) is not int or not 0 <= value <= 4096:
            raise bad(f"{key} {value!r} is not a thread count")
    providers = settings.get("providers", ["CPUExecutionProvider"])

    def provider_ok(p) -> bool:
        if isinstance(p, str):
            return p.endswith("ExecutionProvider")
        return isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and \
            p[0].endswith("ExecutionProvider") and isinstance(p[1], dict) and \
            all(isinstance(k, str) and isinstance(v, str) for k, v in p[1].items())
    if not isinstance(providers, list) or not providers or not all(map(provider_ok, providers)):
        raise bad(f"providers {str(providers)[:200]} is not a list of execution providers "
                  "(names, or [name, {option: value}])")
    return settings


def session_options(settings: dict, threads: int | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                          settings.get("graph_optimization_level", "ORT_ENABLE_ALL"))
    so.execution_mode = getattr(ort.ExecutionMode, settings.get("execution_mode", "ORT_SEQUENTIAL"))
    so.intra_op_num_threads = int(threads if threads else settings.get("intra_op_num_threads", 0))
    so.inter_op_num_threads = int(settings.get("inter_op_num_threads", 1))
    so.log_severity_level = 3
    return so


class OrtRunner:
    backend = "ort"

    def __init__(self, model_path: str, settings: dict[str, Any], threads: int | None = None,
                 where: str | None = None):
        import onnxruntime as ort

        settings = check_settings(settings, where)
        providers = session_providers(model_path, settings, where)
        try:
            self.session = ort.InferenceSession(model_path, session_options(settings, threads),
                                                providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"onnxruntime {ort.__version__} cannot load the model: "
                                 f"{str(e).splitlines()[0] if str(e) else type(e).__name__}",
                                 where) from None
        named_gpu = [provider_name(p) for p in providers if provider_name(p) in GPU_PROVIDERS]
        if named_gpu and not set(self.session.get_providers()) & set(GPU_PROVIDERS) \
                and not cpu_fallback_allowed():
            # The provider is built in but its libraries (CUDA, cuDNN, TensorRT) did not load.
            raise NotRunnableHere(
                f"onnxruntime could not start {' or '.join(named_gpu)} here (its CUDA/TensorRT "
                "libraries did not load; the session fell back to the CPU): check the CUDA "
                f"install, or allow CPU fallback with --allow-cpu-fallback or "
                f"{CPU_FALLBACK_ENV}=1", where)
        self.inputs = [InputInfo(i.name, np.dtype(_ORT_TYPES.get(i.type, "float32")),
                                 tuple(i.shape)) for i in self.session.get_inputs()]
        self.input_names = [i.name for i in self.inputs]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._unknown = [i.name for i in self.session.get_inputs() if i.type not in _ORT_TYPES]
        self.where = where

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outputs = self.session.run(None, {k: inputs[k] for k in self.input_names})
        except Exception as e:
            from edgec_runtime.errors import InputError
            text = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise InputError(f"onnxruntime refused the inputs: {text}", self.where) from None
        return dict(zip(self.output_names, outputs))

    def timed_call(self, feed: Mapping[str, np.ndarray]):
        """A no-argument callable that runs ``feed`` once (what bench times)."""
        session, names = self.session, None
        feed = {k: feed[k] for k in self.input_names}
        return lambda: session.run(names, feed)
