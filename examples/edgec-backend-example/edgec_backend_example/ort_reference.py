"""The ``ort-reference`` backend: the optimized ONNX run by onnxruntime with every graph
optimization off, one thread, nodes in order.

What it is for: a reference build of exactly the graph edgec's passes produced, with
no rewrite of onnxruntime's own in between. When an ``ort`` artifact and an
``ort-reference`` artifact of the same model disagree, onnxruntime's optimizer did it;
when they agree with each other but not with the original model, edgec's passes did.

It uses edgec's public backend API only (`edgec.backends`): a plugin backend declares
its `Capabilities`, builds into the artifact folder, loads back and measures.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np
import onnx

from edgec.backends import BackendError, BuildOptions, BuildResult, Capabilities, LatencyStats
from edgec.backends.base import time_calls
from edgec.diagnostics import Diagnostic, ModelError

SETTINGS_FILE = "ort-reference.json"
MODEL_FILE = "model.onnx"  # written by edgec before build(): the optimized ONNX


class OrtReferenceRunner:
    """An onnxruntime session with graph optimizations off, on the CPU."""

    def __init__(self, model_path: str, settings: Mapping[str, Any]):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                                   settings["graph_optimization_level"])
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = int(settings["intra_op_num_threads"])
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(model_path, options,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise BackendError(Diagnostic.error(
                f"onnxruntime cannot load {model_path}: {str(e).splitlines()[0]}")) from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.session.run(None, {name: inputs[name] for name in self.input_names})
        return dict(zip(self.output_names, outputs))


class OrtReferenceBackend:
    name = "ort-reference"
    # No int8 kernels: the Q/DQ -> QLinear fusions are graph optimizations, so with them
    # off a Q/DQ model computes in fp32 between quantize and dequantize. Not tried by
    # `backend auto` (in_auto stays False): it is a reference, never the fastest.
    capabilities = Capabilities(
        precisions=("fp32", "fp16"),
        precision_notes={"int8": "with graph optimizations off onnxruntime runs Q/DQ models "
                                 "in fp32 between quantize and dequantize"})

    def describe_target(self, target) -> dict[str, Any]:
        return {"execution_providers": ["CPUExecutionProvider"]}

    def unavailable_reason(self, target) -> str | None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "the ort-reference backend needs onnxruntime (pip install onnxruntime)"
        if target.accelerator is not None:
            return (f"the ort-reference backend runs on the CPU only, and "
                    f"{target.name} has a {target.accelerator.kind} accelerator")
        return None

    def check_model(self, model: onnx.ModelProto, *, model_path: str | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:  # from the file where there is one: external weights resolve beside it
            ort.InferenceSession(model_path or model.SerializeToString(), options,
                                 providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ModelError(Diagnostic.error(
                f"onnxruntime cannot run the model: {str(e).splitlines()[0]}")) from None

    def build(self, model: onnx.ModelProto, target, out_dir: str, options: BuildOptions, *,
              model_path: str | None = None) -> BuildResult:
        import onnxruntime as ort

        settings = {"graph_optimization_level": "ORT_DISABLE_ALL",
                    "intra_op_num_threads": 1}
        with open(os.path.join(out_dir, SETTINGS_FILE), "w") as f:
            json.dump(settings, f, indent=2, sort_keys=True)
            f.write("\n")
        return BuildResult(
            backend=self.name, files=[SETTINGS_FILE], runnable_here=True,
            details={"model": MODEL_FILE, "settings": settings,
                     "onnxruntime_version": ort.__version__},
            tuned=True,  # nothing to tune
            notes=["onnxruntime with graph optimizations off, one thread: a reference "
                   "build of the graph exactly as edgec's passes left it"])

    def load(self, artifact_dir: str, details: dict[str, Any]) -> OrtReferenceRunner:
        return OrtReferenceRunner(os.path.join(artifact_dir, details.get("model", MODEL_FILE)),
                                  details["settings"])

    def measure(self, artifact_dir: str, details: dict[str, Any],
                inputs: Mapping[str, np.ndarray], options: BuildOptions) -> LatencyStats:
        if options.rpc is not None:
            raise BackendError(Diagnostic.error(
                "the ort-reference backend is measured on this host only"), exit_code=2)
        runner = self.load(artifact_dir, details)
        return LatencyStats.from_times(time_calls(lambda: runner.run(inputs)), "host")
