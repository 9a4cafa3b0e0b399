"""The device runtime (`edgec_runtime`): runs artifacts with numpy and the backend's
runtime alone, decides runnability on the running machine, and is what `edgec run`,
`edgec bench` and `edgec.load` go through."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import edgec
import edgec_runtime
from edgec.testing.required import missing
from edgec.testing.artifacts import (DIGITS, DIGITS_DATA, REPO, built,  # noqa: F401
                                     ort_artifact, tvm_artifact)
from edgec_runtime import host
from edgec_runtime.host import HostFacts

HEAVY = ("onnx", "lark", "networkx", "scipy", "xgboost", "edgec", "tvm", "psutil",
         "cloudpickle", "sympy", "torch")


def _reference(x):
    session = ort.InferenceSession(str(DIGITS), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _closure(artifact, inputs, out):
    """sys.modules after `python3 -m edgec_runtime run` in a fresh interpreter."""
    script = ("import runpy, sys, json\n"
              "sys.argv = ['edgec_runtime', 'run', sys.argv[1], '--inputs', sys.argv[2], '-o', "
              "sys.argv[3]]\n"
              "try:\n    runpy.run_module('edgec_runtime', run_name='__main__')\n"
              "except SystemExit as e:\n    code = e.code\n"
              "print(json.dumps({'code': code, 'modules': sorted(sys.modules)}))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script, str(artifact), str(inputs), str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0, done.stderr
    return result["modules"]


def test_runtime_import_closure_has_no_compiler(ort_artifact, tmp_path):
    modules = _closure(ort_artifact, DIGITS_DATA, tmp_path / "y.npz")
    heavy = [m for m in modules if m.split(".")[0] in HEAVY]
    assert heavy == [], heavy
    assert "onnxruntime" in modules and "edgec_runtime.tvm_runner" not in modules


def test_tvm_runtime_import_closure_is_tvm_ffi_only(tvm_artifact, tmp_path):
    modules = _closure(tvm_artifact, DIGITS_DATA, tmp_path / "y.npz")
    heavy = [m for m in modules if m.split(".")[0] in HEAVY]
    assert heavy == [], heavy  # no `tvm` (compiler, relax, frontends): tvm_ffi + libtvm_runtime
    assert "tvm_ffi" in modules and "onnxruntime" not in modules


@pytest.mark.parametrize("backend", ["ort", "tvm"])
def test_runtime_load_run_matches_onnxruntime(built, backend):
    x = np.load(DIGITS_DATA)["input"][:16]
    got = edgec_runtime.load(built(backend)).run({"input": x})["logits"]
    np.testing.assert_allclose(got, _reference(x), rtol=1e-4, atol=1e-4)


def test_per_sample_feeds_run_one_feed_each(built):
    x = np.load(DIGITS_DATA)["input"][:5]
    art = edgec_runtime.load(built("ort"))
    per_sample = art.run({"input": x[:, None]})["logits"]  # [S, 1, 1, 8, 8]
    assert per_sample.shape == (5, 1, 10)
    np.testing.assert_allclose(per_sample[:, 0], art.run({"input": x})["logits"], atol=1e-5)


def test_runtime_cli_run_bench_check(built, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    art = built("ort")
    run = subprocess.run([sys.executable, "-m", "edgec_runtime", "run", art, "--inputs",
                          DIGITS_DATA, "-o", tmp_path / "y.npz"], capture_output=True, text=True,
                         env=env)
    assert run.returncode == 0, run.stderr
    x = np.load(DIGITS_DATA)["input"]
    np.testing.assert_allclose(np.load(tmp_path / "y.npz")["logits"], _reference(x), atol=1e-4)
    bench = subprocess.run([sys.executable, "-m", "edgec_runtime", "bench", art, "--json"],
                           capture_output=True, text=True, env=env)
    assert bench.returncode == 0, bench.stderr
    assert json.loads(bench.stdout)["samples"] >= 5
    check = subprocess.run([sys.executable, "-m", "edgec_runtime", "check", art],
                           capture_output=True, text=True, env=env)
    assert check.returncode == 0 and "runnable here" in check.stdout


def test_edgec_load_and_run_go_through_the_runtime(built):
    art = edgec.load(built("ort"))
    from edgec_runtime.artifact import Artifact as RuntimeArtifact
    assert isinstance(art._artifact, RuntimeArtifact)
    assert type(art.runner()).__module__ == "edgec_runtime.ort_runner"


def test_runnable_here_ignores_the_compile_hosts_flag(ort_artifact, tmp_path):
    """A manifest written on another host saying runnable_here: false still runs here."""
    path = ort_artifact / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["backend"]["runnable_here"] = False
    manifest["target"]["name"] = "some-other-board"
    path.write_text(json.dumps(manifest))
    from edgec.cli import main
    assert main(["run", str(ort_artifact), "--inputs", str(DIGITS_DATA)]) == 0
    assert edgec.load(ort_artifact).runnable_here


# --------------------------------------------------------------------------- the decision


def _tvm_details(**extra):
    details = {"arch": "aarch64", "triple": "aarch64-linux-gnu", "target_name": "raspberry-pi-4",
               "target": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72",
                          "mattr": ["+neon"]},
               "accelerator": None, "tvm_version": "0.27.0.post1",
               "inputs": [{"name": "input", "dtype": "float32", "shape": ["N", 1, 8, 8]}],
               "outputs": [{"name": "logits", "dtype": "float32", "shape": ["N", 10]}]}
    details.update(extra)
    return details


PI4 = HostFacts("aarch64", frozenset({"fp", "asimd", "evtstrm", "crc32", "cpuid"}),
                {"tvm": "0.27.0", "ort": "1.20.1"}, {"ort.providers": ["CPUExecutionProvider"]})


def test_rpi4_tvm_artifact_runs_on_a_pi():
    assert host.problems("tvm", _tvm_details(), PI4) == []


def test_aarch64_module_refused_on_x86_naming_the_arch():
    x86 = HostFacts("x86_64", frozenset({"sse2", "avx2"}), {"tvm": "0.27.0"})
    [reason] = host.problems("tvm", _tvm_details(), x86)
    assert "aarch64" in reason and "x86_64" in reason


def test_cpu_feature_the_cpu_lacks_is_named():
    details = _tvm_details(target={"kind": "llvm", "mtriple": "aarch64-linux-gnu",
                                   "mcpu": "cortex-a76", "mattr": ["+neon", "+i8mm"]})
    [reason] = host.problems("tvm", details, PI4)
    assert "dotprod" in reason and "fullfp16" in reason and "i8mm" in reason
    pi5 = HostFacts("aarch64", PI4.cpu_features | {"asimddp", "fphp", "asimdhp", "i8mm"},
                    PI4.runtimes)
    assert host.problems("tvm", details, pi5) == []


def test_x86_avx512_module_refused_on_an_avx2_cpu():
    details = _tvm_details(arch="x86_64", triple="x86_64-linux-gnu",
                           target={"kind": "llvm", "mcpu": "znver4",
                                   "mattr": ["+avx512f", "+avx512vnni"]})
    avx2 = HostFacts("x86_64", frozenset({"sse2", "sse4_1", "sse4_2", "ssse3", "popcnt", "cx16",
                                          "avx", "avx2", "fma", "f16c", "bmi1", "bmi2",
                                          "movbe"}), {"tvm": "0.27.0"})
    [reason] = host.problems("tvm", details, avx2)
    assert "avx512f" in reason and "avx512vnni" in reason and "avx2," not in reason


def test_tvm_runtime_missing_or_another_release_is_refused():
    missing = HostFacts("aarch64", PI4.cpu_features, {"tvm": None})
    [reason] = host.problems("tvm", _tvm_details(), missing)
    assert "not installed" in reason and "edgec-runtime[tvm]" in reason
    older = HostFacts("aarch64", PI4.cpu_features, {"tvm": "0.26.0"})
    [reason] = host.problems("tvm", _tvm_details(), older)
    assert "0.26.0" in reason and "0.27" in reason


def test_cuda_module_needs_a_cuda_tvm_runtime():
    details = _tvm_details(accelerator={"kind": "cuda", "arch": "sm_87"},
                           target={"kind": "cuda", "arch": "sm_87",
                                   "host": {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}})
    no_cuda = HostFacts("aarch64", PI4.cpu_features, PI4.runtimes, {"tvm.cuda": False})
    [reason] = host.problems("tvm", details, no_cuda)
    assert "CUDA" in reason
    no_gpu = HostFacts("aarch64", PI4.cpu_features, PI4.runtimes,
                       {"tvm.cuda": True, "cuda.device": False})
    [reason] = host.problems("tvm", details, no_gpu)
    assert "shows none" in reason
    cuda = HostFacts("aarch64", PI4.cpu_features, PI4.runtimes,
                     {"tvm.cuda": True, "cuda.device": True})
    assert host.problems("tvm", details, cuda) == []


def test_ort_runtime_missing_other_major_or_providers_missing():
    details = {"onnxruntime_version": "1.32.0", "settings": {"providers": ["CPUExecutionProvider"]}}
    assert host.problems("ort", details, PI4) == []  # an older 1.x: tried, load says if not
    [reason] = host.problems("ort", details, HostFacts("aarch64", frozenset(), {"ort": None}))
    assert "onnxruntime is not installed" in reason
    [reason] = host.problems("ort", details, HostFacts("aarch64", frozenset(), {"ort": "2.0.0"},
                                                       {"ort.providers": []}))
    assert "2.0.0" in reason and "1.32.0" in reason
    gpu = {**details, "settings": {"providers": [["TensorrtExecutionProvider", {}],
                                                 "CUDAExecutionProvider", "CPUExecutionProvider"]}}
    [reason] = host.problems("ort", gpu, PI4)
    assert "TensorrtExecutionProvider" in reason and "CUDAExecutionProvider" in reason
    jetson = HostFacts("aarch64", frozenset(), {"ort": "1.20.0"},
                       {"ort.providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]})
    assert host.problems("ort", gpu, jetson) == []


def test_feature_names_from_this_machine():
    facts = host.host_facts()
    assert facts.arch == host.normalize_arch(os.uname().machine)
    if facts.arch == "x86_64":
        assert "sse2" in facts.cpu_features


def test_runtime_distribution_needs_no_compiler():
    project = tomllib.loads((REPO / "runtime" / "pyproject.toml").read_text())["project"]
    assert project["name"] == "edgec-runtime"
    deps = " ".join(project["dependencies"] + sum(project["optional-dependencies"].values(), []))
    for heavy in ("onnx>", "onnx ", "lark", "networkx", "xgboost", "scipy"):
        assert heavy not in deps + " "
    assert "onnxruntime" in " ".join(project["optional-dependencies"]["ort"])
    main = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "edgec_runtime" in main["tool"]["setuptools"]["packages"]


def test_tvm_runner_copes_with_unaligned_inputs(built):
    """TVM's kernels assume 64-byte aligned buffers; numpy data often sits at 16 bytes
    (an AVX-512 aligned load on it crashed the process, now and then)."""
    x = np.load(DIGITS_DATA)["input"][:16]
    art = edgec_runtime.load(built("tvm"))
    want = _reference(x)
    raw = np.zeros(x.nbytes + 128, np.uint8)
    for shift in (4, 16, 20, 32, 48):
        base = (-raw.ctypes.data) % 64 + shift
        unaligned = raw[base:base + x.nbytes].view(np.float32).reshape(x.shape)
        unaligned[...] = x
        assert unaligned.ctypes.data % 64 != 0
        np.testing.assert_allclose(art.run({"input": unaligned})["logits"], want, atol=1e-4)


def test_tvm_runtime_library_named_by_environment(built, tmp_path):
    """A device without apache-tvm: tvm-ffi plus a copied libtvm_runtime.so."""
    from edgec_runtime.host import tvm_runtime_library
    library = tvm_runtime_library()
    if library is None:
        missing("tvm", "no libtvm_runtime.so here")
    copy = tmp_path / "lib" / "libtvm_runtime.so"
    copy.parent.mkdir()
    copy.write_bytes(Path(library).read_bytes())
    env = {**os.environ, "PYTHONPATH": str(REPO), "EDGEC_TVM_RUNTIME_LIB": str(copy),
           "EDGEC_TVM_RUNTIME_VERSION": "0.27.0"}
    script = ("import sys, edgec_runtime.tvm_runner as t, edgec_runtime.host as h\n"
              "print(h.tvm_runtime_library(), h.tvm_version())\n"
              "from edgec_runtime.cli import main\n"
              "sys.exit(main(['run', sys.argv[1], '--inputs', sys.argv[2]]))\n")
    done = subprocess.run([sys.executable, "-c", script, str(built("tvm")), str(DIGITS_DATA)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{copy} 0.27.0") and "logits: float32[359, 10]" in done.stdout
    env["EDGEC_TVM_RUNTIME_LIB"] = str(tmp_path / "missing.so")
    done = subprocess.run([sys.executable, "-m", "edgec_runtime", "run", str(built("tvm")),
                           "--inputs", str(DIGITS_DATA)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 2 and "TVM's runtime is not installed" in done.stderr


# The features Linux reports (AT_HWCAP) on each board's CPU.
A72 = {"fp", "asimd", "evtstrm", "crc32", "cpuid"}
A76 = A72 | {"aes", "pmull", "sha1", "sha2", "atomics", "fphp", "asimdhp", "asimdrdm", "lrcpc",
             "dcpop", "asimddp", "ssbs"}
A78 = A76 | {"uscat", "ilrcpc", "flagm", "paca", "pacg"}


@pytest.mark.parametrize("target,cpu,ok", [
    ("raspberry-pi-4", A72, True), ("raspberry-pi-5", A76, True), ("generic-aarch64", A72, True),
    ("jetson-orin-nano", A78, True), ("raspberry-pi-5", A72, False)])
def test_builtin_targets_run_on_their_boards(target, cpu, ok):
    from edgec.dsl import check_text
    spec, diagnostics = check_text(f"target {target}\n", "<t>")
    assert spec is not None, [d.render() for d in diagnostics]
    from edgec.backends.tvm import target_dict

    t = spec.target
    details = _tvm_details(target=target_dict(t), target_name=t.name, arch=t.arch,
                           triple=t.triple, accelerator=None)
    facts = HostFacts("aarch64", frozenset(cpu), {"tvm": "0.27.0"})
    assert (host.problems("tvm", details, facts) == []) is ok, host.problems("tvm", details, facts)


def test_a_scalar_feed_stays_a_scalar():
    """A 0-d input (a sample rate, a threshold) is fed as 0-d: numpy's ascontiguousarray
    would make it 1-d, a shape the model refuses."""
    from edgec_runtime.feeds import InputInfo, conform

    inputs = [InputInfo("x", np.dtype(np.float32), ("N", 4)),
              InputInfo("rate", np.dtype(np.int64), ())]
    _, arrays = conform({"x": np.ones((2, 4), np.float32), "rate": np.int64(16000)}, inputs)
    assert arrays["rate"].shape == ()
    assert arrays["x"].shape == (2, 4)
