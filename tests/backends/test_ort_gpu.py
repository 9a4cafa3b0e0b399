"""onnxruntime artifacts for GPU targets (issue 11): the session names the providers a
Jetson's onnxruntime-gpu offers (TensorRT, then CUDA, then CPU) with the precision the
model was planned in; where onnxruntime has neither GPU provider, loading says so in one
line (exit 2) unless CPU fallback is allowed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

import edgec
from edgec.backends import BackendError
from edgec.backends.ort import CPU_FALLBACK_ENV, gpu_providers, model_precision
from edgec.dsl import check_text

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "spec_examples" / "digits.onnx"
DATA = REPO / "spec_examples" / "data" / "digits.npz"

pytestmark = pytest.mark.skipif(
    bool({"CUDAExecutionProvider", "TensorrtExecutionProvider"}
         & set(ort.get_available_providers())),
    reason="this onnxruntime has GPU providers: the refusal cannot be shown here")


def edgec_cli(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "edgec", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def jetson_fp16(tmp_path_factory):
    folder = tmp_path_factory.mktemp("jetson")
    spec = folder / "jetson.edge"
    spec.write_text(f'target jetson-orin-nano\nbudget {{ latency < 15 ms }}\n'
                    f'accuracy {{ data "{DATA}" }}\n'
                    'optimize { precision fp16; backend ort }\n')
    edgec.compile(DIGITS, spec, out=folder / "out", cache_dir=str(folder / "cache"))
    return folder / "out"


def test_jetson_session_names_tensorrt_then_cuda_then_cpu(jetson_fp16):
    session = json.loads((jetson_fp16 / "session.json").read_text())
    names = [p if isinstance(p, str) else p[0] for p in session["providers"]]
    assert names == ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                     "CPUExecutionProvider"]
    assert session["providers"][0][1]["trt_fp16_enable"] == "True"
    manifest = json.loads((jetson_fp16 / "manifest.json").read_text())
    details = manifest["backend"]["details"]
    assert details["precision"] == "fp16" and "onnxruntime-gpu" in details["requires"]
    assert manifest["backend"]["runnable_here"] is False      # no GPU provider here
    assert manifest["latency"]["where"] == "estimated"
    assert "GPU kernels, 5 us launch each" in (jetson_fp16 / "report.txt").read_text()


def test_missing_gpu_providers_is_one_line_unless_cpu_fallback(jetson_fp16, tmp_path):
    run = edgec_cli("run", jetson_fp16, "--inputs", DATA, cwd=tmp_path)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "lacks" in lines[0] and "--allow-cpu-fallback" in lines[0]
    bench = edgec_cli("bench", jetson_fp16, cwd=tmp_path)
    assert bench.returncode == 2 and "TensorrtExecutionProvider" in bench.stderr
    allowed = edgec_cli("run", jetson_fp16, "--inputs", DATA, "--allow-cpu-fallback",
                        "-o", tmp_path / "y.npz", cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stderr
    by_env = edgec_cli("run", jetson_fp16, "--inputs", DATA, cwd=tmp_path,
                       env={CPU_FALLBACK_ENV: "1"})
    assert by_env.returncode == 0, by_env.stderr


def test_python_api_refuses_too(jetson_fp16, monkeypatch):
    monkeypatch.delenv(CPU_FALLBACK_ENV, raising=False)
    with pytest.raises(BackendError) as error:
        edgec.load(str(jetson_fp16)).runner()
    assert error.value.exit_code == 2


def test_precision_sets_the_tensorrt_flags():
    from edgec.testing import models
    assert model_precision(models.mlp()) == "fp32"
    fp32, fp16, int8 = (gpu_providers(p)[0][1] for p in ("fp32", "fp16", "int8"))
    assert (fp32["trt_fp16_enable"], fp32["trt_int8_enable"]) == ("False", "False")
    assert (fp16["trt_fp16_enable"], fp16["trt_int8_enable"]) == ("True", "False")
    assert (int8["trt_fp16_enable"], int8["trt_int8_enable"]) == ("True", "True")


def test_cuda_targets_try_fp16_by_default():
    def precisions(text):
        spec, diagnostics = check_text(text, "<t>")
        assert spec is not None, [d.render() for d in diagnostics]
        return spec.optimize.precisions
    assert precisions("target jetson-orin-nano\n") == ("fp32", "fp16")
    assert precisions("target raspberry-pi-4\n") == ("fp32",)
    assert precisions("target jetson-orin-nano\noptimize { precision fp32 }\n") == ("fp32",)
