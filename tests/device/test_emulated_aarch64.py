"""Artifacts cross-compiled for Arm boards run on an emulated board (an arm64 Debian root
under ``qemu-aarch64-static -cpu <the board's CPU>``) through the device runtime, and
match onnxruntime fp32 on this host; and a TVM candidate for the Raspberry Pi 4 is scored
on its own outputs over an RPC server running on the emulated board.

The digits model and ResNet-18 (a 47 MB module, about 20 s for one sample under qemu
here) run in CI once the root is cached.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import edgec
from edgec.testing import device_root as dr
from edgec.testing import models

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "spec_examples" / "digits.onnx"
DIGITS_DATA = REPO / "spec_examples" / "data" / "digits.npz"
RPI4 = REPO / "spec_examples" / "rpi4.edge"
FP32_TOLERANCE = 1e-4


def host_reference(model_path: Path, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime fp32 on this host, one sample at a time when the batch is fixed."""
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    fixed = shape[0] if isinstance(shape[0], int) else None
    total = len(next(iter(inputs.values())))
    step = fixed or total
    chunks = [session.run(None, {k: v[i:i + step] for k, v in inputs.items()})
              for i in range(0, total, step)]
    return [np.concatenate([c[j] for c in chunks]) for j in range(len(chunks[0]))]


def run_on_device(device_root, artifact: Path, inputs: Path, cpu: str, name: str,
                  timeout: float = 1800) -> dict[str, np.ndarray]:
    """``python3 -m edgec_runtime run`` inside the emulated board; its outputs."""
    art = device_root.stage(artifact, f"{name}/artifact")
    feed = device_root.stage(inputs, f"{name}/inputs.npz")
    out = f"{device_root.work}/{name}/outputs.npz"
    result = device_root.python(["-m", "edgec_runtime", "run", art, "--inputs", feed,
                                 "-o", out], cpu=cpu, timeout=timeout)
    assert result.returncode == 0, \
        f"edgec_runtime run exited {result.returncode} under -cpu {cpu}:\n" \
        f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    with np.load(device_root.host_path(out)) as npz:
        return {key: npz[key] for key in npz.files}


def compile_for(tmp_path: Path, model: Path, spec: Path, backend: str, **options):
    out = tmp_path / f"out-{backend}"
    artifact = edgec.compile(model, spec, out=out, backend=backend,
                             cache_dir=str(tmp_path / "cache"), **options)
    return out, artifact.manifest


def assert_matches_host(got: dict[str, np.ndarray], want: list[np.ndarray], manifest: dict):
    assert manifest["configuration"]["precision"] == "fp32"
    assert len(got) == len(want)
    errors = []
    for value, reference in zip(got.values(), want):
        assert value.shape == reference.shape
        errors.append(float(np.abs(value.astype(np.float64) - reference).max()))
    print(f"max abs error vs host onnxruntime fp32: {max(errors):.3g}")
    assert max(errors) <= FP32_TOLERANCE, errors
    return max(errors)


def _digits_inputs() -> dict[str, np.ndarray]:
    with np.load(DIGITS_DATA) as npz:
        return {key: npz[key] for key in npz.files}


@pytest.mark.parametrize("backend", ["tvm", "ort"])
def test_rpi4_digits_on_emulated_cortex_a72(device_root, tmp_path, backend):
    out, manifest = compile_for(tmp_path, DIGITS, RPI4, backend)
    assert manifest["target"]["name"] == "raspberry-pi-4"
    if backend == "tvm":
        assert manifest["backend"]["details"]["arch"] == "aarch64"
    got = run_on_device(device_root, out, DIGITS_DATA, "cortex-a72", f"rpi4-{backend}")
    want = host_reference(DIGITS, _digits_inputs())
    assert_matches_host(got, want, manifest)
    # top-1 agreement on all 359 samples
    assert (next(iter(got.values())).argmax(-1) == want[0].argmax(-1)).all()


@pytest.mark.parametrize("target,cpu,backend", [
    ("raspberry-pi-5", "cortex-a76", "tvm"),
    ("raspberry-pi-5", "cortex-a76", "ort"),
    ("generic-aarch64", "cortex-a53", "tvm"),
])
def test_aarch64_targets_on_their_cpu(device_root, tmp_path, target, cpu, backend):
    spec = tmp_path / f"{target}.edge"
    spec.write_text(f'target {target}\naccuracy {{\n  metric top1-agreement\n'
                    f'  tolerance 2 %\n  data "{DIGITS_DATA}"\n}}\n'
                    'optimize {\n  precision fp32\n}\n')
    out, manifest = compile_for(tmp_path, DIGITS, spec, backend)
    got = run_on_device(device_root, out, DIGITS_DATA, cpu, f"{target}-{backend}")
    assert_matches_host(got, host_reference(DIGITS, _digits_inputs()), manifest)
    if target == "raspberry-pi-5" and backend == "tvm":
        # Runnability is decided on the device: the module compiled for the Pi 5's CPU
        # (+dotprod, +fullfp16) is refused on a Cortex-A72, one line naming them, exit 2.
        art = f"{device_root.work}/{target}-{backend}/artifact"
        refused = device_root.python(["-m", "edgec_runtime", "check", art],
                                     cpu="cortex-a72", timeout=600)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "dotprod" in refused.stderr and "fullfp16" in refused.stderr


SLIM_TVM = ("numpy", "numpy.libs", "numpy-*.dist-info", "tvm_ffi", "apache_tvm_ffi-*.dist-info",
            "typing_extensions.py", "typing_extensions-*.dist-info")


def test_tvm_artifact_runs_with_the_runtime_alone(device_root, tmp_path):
    """A TVM artifact runs on the board with numpy, apache-tvm-ffi and libtvm_runtime.so
    alone (the device install README gives): no apache-tvm package, no onnxruntime."""
    import shutil

    site = device_root.host_path(dr.SITE)
    slim = device_root.host_path(f"{device_root.work}/slim-tvm")
    if slim.exists():
        shutil.rmtree(slim)
    slim.mkdir(parents=True)
    for pattern in SLIM_TVM:
        for entry in site.glob(pattern):
            copy = shutil.copytree if entry.is_dir() else shutil.copy2
            copy(entry, slim / entry.name, **({"copy_function": os.link} if entry.is_dir()
                                                else {}))
    shutil.copy2(next(site.glob("tvm/**/libtvm_runtime.so")), slim / "libtvm_runtime.so")
    out, manifest = compile_for(tmp_path, DIGITS, RPI4, "tvm")
    art = device_root.stage(out, "slim/artifact")
    feed = device_root.stage(DIGITS_DATA, "slim/inputs.npz")
    env = {"PYTHONPATH": f"{device_root.work}/src:{device_root.work}/slim-tvm",
           "EDGEC_TVM_RUNTIME_LIB": f"{device_root.work}/slim-tvm/libtvm_runtime.so",
           "EDGEC_TVM_RUNTIME_VERSION": manifest["backend"]["details"]["tvm_version"]}
    probe = device_root.python(["-c", "import importlib.util as u; print([m for m in "
                                "('tvm', 'onnxruntime', 'onnx') if u.find_spec(m)])"], env=env)
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr
    result = device_root.python(["-m", "edgec_runtime", "run", art, "--inputs", feed, "-o",
                                 f"{device_root.work}/slim/outputs.npz"], cpu="cortex-a72", env=env,
                                timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    with np.load(device_root.host_path(f"{device_root.work}/slim/outputs.npz")) as npz:
        got = {key: npz[key] for key in npz.files}
    assert_matches_host(got, host_reference(DIGITS, _digits_inputs()), manifest)
    size = sum(f.stat().st_size for f in slim.rglob("*") if f.is_file())
    print(f"slim TVM device install: {size / 1e6:.1f} MB")


def test_rpi4_tvm_accuracy_scored_on_the_module_over_emulated_rpc(emulated_rpc, tmp_path):
    """compile --rpc-tracker with an emulated device: the candidate's accuracy is scored
    on the module's own outputs there, and latency is not taken from the emulator."""
    out, manifest = compile_for(tmp_path, DIGITS, RPI4, "tvm", rpc=emulated_rpc)
    accuracy = manifest["accuracy"]
    print(json.dumps(accuracy, indent=1))
    assert accuracy["scored_on"] == "module"
    assert accuracy["scored_where"].startswith("rpc://127.0.0.1:")
    assert "(emulated)" in accuracy["scored_where"]
    assert "module's own outputs" in accuracy["detail"]
    assert accuracy["value"] == 1.0
    assert manifest["latency"]["measured"] is False
    assert "emulator" in manifest["latency"]["why"]
    chosen = [c for c in manifest["candidates"] if c["status"] == "chosen"]
    assert chosen and chosen[0]["accuracy_scored_on"] == "module"
    report = (out / "report.txt").read_text()
    assert "scored on the module's own outputs" in report


@pytest.mark.parametrize("backend", ["tvm", "ort"])
def test_rpi4_resnet18_on_emulated_cortex_a72(device_root, tmp_path, backend):
    model = tmp_path / "resnet18.onnx"
    onnx.save(models.resnet18(), model)
    name = onnx.load(model).graph.input[0].name
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    np.savez(tmp_path / "x.npz", **{name: x})
    spec = tmp_path / "rpi4-resnet.edge"
    spec.write_text(RPI4.read_text().replace('data "data/digits.npz"', 'data "x.npz"')
                    .replace("precision fp32, int8", "precision fp32")
                    .replace("prune up to 30 % structured", ""))
    started = time.monotonic()
    out, manifest = compile_for(tmp_path, model, spec, backend, allow_over_budget=True)
    compiled = time.monotonic()
    got = run_on_device(device_root, out, tmp_path / "x.npz", "cortex-a72",
                        f"resnet18-{backend}", timeout=3600)
    print(f"resnet18 {backend}: compile {compiled - started:.0f} s, on the emulated "
          f"Cortex-A72 (1 sample, copy included) {time.monotonic() - compiled:.0f} s")
    want = host_reference(model, {name: x})
    scale = max(1.0, float(np.abs(want[0]).max()))
    error = float(np.abs(next(iter(got.values())) - want[0]).max())
    print(f"resnet18 {backend}: max abs error {error:.3g} (output scale {scale:.3g})")
    assert manifest["configuration"]["precision"] == "fp32"
    assert error <= FP32_TOLERANCE * scale
    (tmp_path / "error.json").write_text(json.dumps({"error": error}))


def test_rpi4_dynamic_int8_lstm_recognizer_on_emulated_cortex_a72(device_root, tmp_path):
    """The recognizer's BiLSTM in onnxruntime's contrib int8 form (DynamicQuantizeLSTM,
    from quantize-dynamic{ops=LSTM}) runs on the board as it runs here: the artifact's
    model on the emulated Cortex-A72 against the same model in onnxruntime on this host
    (SQNR >= 30 dB: the activations are quantized at run time, and Arm's and x86's int8
    kernels may round differently), and the decoded sequences agree."""
    import subprocess
    import sys

    from edgec.metrics import evaluate
    from edgec.testing.corpus import MODELS

    crnn = MODELS["crnn"](width=64)
    onnx.save(crnn.model, tmp_path / "rec.onnx")
    inputs, _ = crnn.data(8, 1)
    np.savez(tmp_path / "x.npz", **inputs)
    quantized = tmp_path / "rec-int8.onnx"
    opt = subprocess.run([sys.executable, "-m", "edgec", "opt", str(tmp_path / "rec.onnx"), "-p",
                          "quantize-dynamic{ops=LSTM}", "-o", str(quantized)],
                         capture_output=True, text=True)
    assert opt.returncode == 0, opt.stderr
    assert "DynamicQuantizeLSTM" in {n.op_type for n in onnx.load(quantized).graph.node}
    spec = tmp_path / "rpi4.edge"
    spec.write_text(f'target raspberry-pi-4\naccuracy {{\n  metric sqnr\n  tolerance 30 dB\n'
                    f'  data "{tmp_path / "x.npz"}"\n}}\noptimize {{\n  precision fp32\n  backend ort\n}}\n')
    out, manifest = compile_for(tmp_path, quantized, spec, "ort")
    assert "DynamicQuantizeLSTM" in {n.op_type for n in onnx.load(out / "model.onnx").graph.node}
    got = run_on_device(device_root, out, tmp_path / "x.npz", "cortex-a72", "rpi4-int8-lstm")
    want = host_reference(out / "model.onnx", inputs)
    value = evaluate("sqnr", 0, want, list(got.values()))
    print(f"board against host: {value.value:.1f} dB")
    assert value.value >= 30
    assert (next(iter(got.values())).argmax(-1) == want[0].argmax(-1)).mean() >= 0.99
