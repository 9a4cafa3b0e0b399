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


# One implementation of loading and running: the device runtime's.
from edgec_runtime.ort_runner import OrtRunner as _RuntimeOrtRunner  # noqa: E402
from edgec_runtime.ort_runner import session_options  # noqa: E402,F401


class OrtRunner(_RuntimeOrtRunner):
    """The device runtime's onnxruntime runner; load failures as `BackendError`."""

    def __init__(self, model_path: str, settings: dict[str, Any], threads: int | None = None):
        from edgec_runtime.errors import RuntimeFailure

        try:
            super().__init__(model_path, settings, threads=threads)
        except RuntimeFailure as e:
            raise BackendError(Diagnostic.error(e.message)) from None


class OrtBackend:
    name = "ort"

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
                "with `edgec bench` there"))
        runner = self.load(artifact_dir, details)
        feed = {k: inputs[k] for k in runner.input_names}
        session = runner.session
        times = time_calls(lambda: session.run(None, feed))
        return LatencyStats.from_times(times, "host")
