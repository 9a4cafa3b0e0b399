"""The onnxruntime backend: the artifact is the optimized ONNX plus the session options it
was measured with, and runs with onnxruntime alone (on any machine onnxruntime supports).
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np
import onnx

from edgec.backends.base import BackendError, BuildOptions, BuildResult, LatencyStats, time_calls
from edgec.diagnostics import Diagnostic, ModelError

SESSION_FILE = "session.json"
MODEL_FILE = "model.onnx"


def session_options(settings: dict[str, Any]):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                          settings.get("graph_optimization_level", "ORT_ENABLE_ALL"))
    so.execution_mode = getattr(ort.ExecutionMode, settings.get("execution_mode", "ORT_SEQUENTIAL"))
    so.intra_op_num_threads = int(settings.get("intra_op_num_threads", 0))
    so.inter_op_num_threads = int(settings.get("inter_op_num_threads", 1))
    so.log_severity_level = 3
    return so


class OrtRunner:
    def __init__(self, model_path: str, settings: dict[str, Any]):
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(model_path, session_options(settings),
                                                providers=settings.get("providers",
                                                                       ["CPUExecutionProvider"]))
        except Exception as e:  # onnxruntime raises its own exception types
            raise BackendError(Diagnostic.error(
                f"onnxruntime cannot load the model: {str(e).splitlines()[0]}")) from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.session.run(None, {k: inputs[k] for k in self.input_names})
        return dict(zip(self.output_names, outputs))


class OrtBackend:
    name = "ort"
    measures_over_rpc = False  # onnxruntime has no TVM RPC runtime: measured here only

    def unavailable_reason(self, target) -> str | None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "onnxruntime is not installed"
        return None

    def check_model(self, model: onnx.ModelProto) -> None:
        import onnxruntime as ort

        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ModelError(Diagnostic.error(
                f"onnxruntime cannot run the model: {str(e).splitlines()[0]}")) from None

    def settings(self, options: BuildOptions) -> dict[str, Any]:
        return {"graph_optimization_level": "ORT_ENABLE_ALL", "execution_mode": "ORT_SEQUENTIAL",
                "intra_op_num_threads": options.threads or 0, "inter_op_num_threads": 1,
                "providers": ["CPUExecutionProvider"]}

    def build(self, model: onnx.ModelProto, target, out_dir: str,
              options: BuildOptions) -> BuildResult:
        # The compile driver has already written model.onnx; the backend adds how to run it.
        settings = self.settings(options)
        with open(os.path.join(out_dir, SESSION_FILE), "w") as f:
            json.dump(settings, f, indent=2, sort_keys=True)
            f.write("\n")
        import onnxruntime as ort

        return BuildResult(
            backend="ort", files=[SESSION_FILE], runnable_here=True,
            details={"model": MODEL_FILE, "session": SESSION_FILE,
                     "onnxruntime_version": ort.__version__, "settings": settings},
            tuned=True,  # onnxruntime's kernels need no tuning
            notes=["onnxruntime CPU execution provider, all graph optimizations"])

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
