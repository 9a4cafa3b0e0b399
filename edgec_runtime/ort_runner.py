"""Running an ort artifact: the optimized ONNX with the session settings it was
measured with. Needs numpy and onnxruntime only."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from edgec_runtime.errors import ArtifactError, ModelLoadError
from edgec_runtime.feeds import InputInfo

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
    if not isinstance(providers, list) or not providers or \
            not all(isinstance(p, str) and p.endswith("ExecutionProvider") for p in providers):
        raise bad(f"providers {providers!r} is not a list of execution provider names")
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
        available = ort.get_available_providers()
        providers = [p for p in settings.get("providers", ["CPUExecutionProvider"])
                     if p in available] or ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(model_path, session_options(settings, threads),
                                                providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"onnxruntime {ort.__version__} cannot load the model: "
                                 f"{str(e).splitlines()[0] if str(e) else type(e).__name__}",
                                 where) from None
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
