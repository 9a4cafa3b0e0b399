"""`edgec compile` through the TVM backend: ResNet-18 on this host matches onnxruntime,
Jetson and Raspberry Pi specs give aarch64 modules, a model TVM cannot import goes to
onnxruntime under `auto` and is an exit-3 model error under `tvm`, and `edgec bench`
through a loopback RPC tracker agrees with a local bench."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import edgec
from edgec.testing import models
from edgec.testing.required import import_or_missing

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "spec_examples" / "digits.onnx"
DIGITS_DATA = REPO / "spec_examples" / "data" / "digits.npz"

import_or_missing("tvm")


def edgec_cli(*args, cwd, timeout=900):
    return subprocess.run([sys.executable, "-m", "edgec", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def test_resnet18_on_host_matches_onnxruntime(tmp_path):
    onnx.save(models.resnet18(), tmp_path / "resnet18.onnx")
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    np.savez(tmp_path / "x.npz", input=x)
    spec = tmp_path / "host.edge"
    spec.write_text('target host\naccuracy {\n  metric max-abs-error\n  tolerance 0.01 %\n'
                    '  data "x.npz"\n}\noptimize {\n  backend tvm\n}\n')
    art = edgec.compile(tmp_path / "resnet18.onnx", spec, out=tmp_path / "out",
                        cache_dir=str(tmp_path / "cache"))
    assert art.manifest["backend"]["name"] == "tvm"
    assert art.manifest["backend"]["tuned"] is False
    assert (tmp_path / "out" / "model.so").exists()
    name = onnx.load(tmp_path / "resnet18.onnx").graph.input[0].name
    want = ort.InferenceSession(str(tmp_path / "resnet18.onnx")).run(None, {name: x[:1]})[0]
    got = next(iter(art.run({name: x[:1]}).values()))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("spec_name,extra", [("jetson.edge", []), ("rpi4.edge", ["--backend", "tvm"])])
def test_device_specs_give_aarch64_modules(tmp_path, spec_name, extra):
    result = edgec_cli("compile", DIGITS, "--spec", REPO / "spec_examples" / spec_name, "-o",
                       "out", "--cache-dir", tmp_path / "cache", "-q", *extra, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    described = subprocess.run(["file", str(tmp_path / "out" / "model.so")], capture_output=True,
                               text=True).stdout
    assert "ARM aarch64" in described
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["backend"]["runnable_here"] is False
    assert manifest["latency"]["where"] == "estimated"
    run = edgec_cli("run", "out", "--inputs", REPO / "spec_examples" / "data" / "digits.npz",
                    cwd=tmp_path)
    # Decided on this machine, not from the manifest's flag: the module is aarch64 code.
    assert run.returncode == 2 and "cannot run here" in run.stderr, run.stderr
    assert "aarch64" in run.stderr and "x86_64" in run.stderr


def _loop_model(path: Path) -> None:
    """Relu, then a Loop adding 1 three times: onnxruntime runs it, TVM's importer has no Loop."""
    from onnx import TensorProto, helper, numpy_helper
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["v_in", "one"], ["v_out"], name="body_add")],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, ["N", 3])])
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu_0"),
         helper.make_node("Loop", ["trips", "cond", "r"], ["y"], body=body, name="repeat_add")],
        "loop", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(np.array(3, np.int64), "trips"),
                     numpy_helper.from_array(np.array(True), "cond"),
                     numpy_helper.from_array(np.ones(3, np.float32), "one")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_a_model_tvm_cannot_import(tmp_path):
    _loop_model(tmp_path / "m.onnx")
    spec = tmp_path / "s.edge"
    # With a tuning budget, so that the TVM candidate is tried (an untuned one is not built
    # once onnxruntime has measured the same configuration): its import fails first.
    spec.write_text('target host\naccuracy {\n  metric max-abs-error\n  tolerance 0.0001\n}\n'
                    'optimize {\n  backend auto\n  tuning 8 trials\n}\n')
    auto = edgec_cli("compile", "m.onnx", "--spec", spec, "-o", "auto", "--cache-dir", "cache",
                     "-q", cwd=tmp_path)
    assert auto.returncode == 0, auto.stderr
    manifest = json.loads((tmp_path / "auto" / "manifest.json").read_text())
    assert manifest["backend"]["name"] == "ort"
    tvm_candidate = next(c for c in manifest["candidates"] if c.get("backend") == "tvm")
    assert tvm_candidate["status"] == "error" and "'repeat_add' (Loop)" in tvm_candidate["reason"]
    forced = edgec_cli("compile", "m.onnx", "--spec", spec, "-o", "tvm", "--backend", "tvm",
                       "--cache-dir", "cache", cwd=tmp_path)
    assert forced.returncode == 3, forced.stderr
    assert "node 'repeat_add' (Loop)" in forced.stderr and "Traceback" not in forced.stderr
    assert not (tmp_path / "tvm").exists()


def test_bench_over_rpc_measures_the_same_artifact_there(tmp_path, rpc_tracker):
    """`bench --rpc-tracker` times the artifact on the device the tracker hands out, and
    plain `bench` on this host: both measure, and say where. How fast either is, and
    whether the two agree, is a benchmark's question (timings under load are not a
    pass/fail matter)."""
    spec = tmp_path / "s.edge"
    spec.write_text('target host\noptimize {\n  backend tvm\n}\n')
    onnx.save(models.mlp(batch=16, sizes=(256, 512, 512, 10)), tmp_path / "m.onnx")
    built = edgec_cli("compile", "m.onnx", "--spec", spec, "-o", "out", "--cache-dir", "cache",
                      "-q", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    local = json.loads(edgec_cli("bench", "out", "--json", "--threads", "1", cwd=tmp_path).stdout)
    remote_run = edgec_cli("bench", "out", "--json", "--threads", "1", "--rpc-tracker",
                           f"{rpc_tracker.host}:{rpc_tracker.port}", "--rpc-key", rpc_tracker.key,
                           cwd=tmp_path)
    assert remote_run.returncode == 0, remote_run.stderr
    remote = json.loads(remote_run.stdout)
    assert local["where"] == "host"
    assert remote["where"] == f"rpc://{rpc_tracker.host}:{rpc_tracker.port}/{rpc_tracker.key}"
    for stats in (local, remote):
        assert stats["backend"] == "tvm"
        assert Path(stats["artifact"]).resolve() == (tmp_path / "out").resolve()
        assert stats["samples"] > 0
        assert 0 < stats["p50_ms"] <= stats["p90_ms"] and stats["mean_ms"] > 0


@pytest.fixture
def legalize_tvm_registered():
    """legalize-tvm and its passes in the process's registry even where the installed
    metadata predates them (an editable install not reinstalled since)."""
    from edgec.passes import legalize_tvm
    from edgec.passmgr import default_registry

    registry = default_registry()
    added = []
    for cls in (legalize_tvm.LegalizeTVM, legalize_tvm.ExpandFunctions, legalize_tvm.LowerCastLike,
                legalize_tvm.BindDims, legalize_tvm.MaxAtLowest, legalize_tvm.WidenHalf,
                legalize_tvm.LowerIsInf, legalize_tvm.GuardBitShift):
        if cls.name not in registry.names():
            registry.register(cls)
            added.append(cls.name)
    yield
    for name in added:
        registry._entries.pop(name, None)


def test_exporter_style_model_compiles_for_tvm_and_matches_onnxruntime(tmp_path, legalize_tvm_registered):
    """A jax2tf/Paddle2ONNX-style graph (run-time Reshape shape and Resize sizes) that TVM
    refuses as written: the tvm candidate's legalize-tvm binds the batch and folds them."""
    from edgec.backends.tvm import TVMBackend
    from edgec.diagnostics import ModelError

    proto = models.exporter_style_cnn()
    with pytest.raises(ModelError) as raw:
        TVMBackend().check_model(proto)
    assert "fold-constants" in raw.value.diagnostics[0].message  # the rewrite it needs
    onnx.save(proto, tmp_path / "cnn.onnx")
    spec = tmp_path / "host.edge"
    spec.write_text("target host\nbudget {\n  latency < 10 s p50 at batch 1\n}\n"
                    "optimize {\n  backend tvm\n}\n")
    art = edgec.compile(tmp_path / "cnn.onnx", spec, out=tmp_path / "out",
                        cache_dir=str(tmp_path / "cache"))
    assert art.manifest["backend"]["name"] == "tvm"
    assert "legalize-tvm" in art.manifest["configuration"]["pipeline"]
    assert art.manifest["backend"]["details"]["batch"] == 1  # legalize-tvm bound it
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    want = ort.InferenceSession(proto.SerializeToString()).run(None, {"image": x})[0]
    got = art.run({"image": x})["probs"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=0)


@pytest.mark.parametrize("target", ["raspberry-pi-4",
                                    pytest.param("jetson-orin-nano", marks=pytest.mark.slow)])
def test_exporter_style_model_cross_compiles_for_tvm(tmp_path, legalize_tvm_registered, target):
    onnx.save(models.exporter_style_cnn(), tmp_path / "cnn.onnx")
    spec = tmp_path / "device.edge"
    spec.write_text(f"target {target}\nbudget {{\n  latency < 10 s p50 at batch 1\n}}\n"
                    "optimize {\n  backend tvm\n}\n")
    art = edgec.compile(tmp_path / "cnn.onnx", spec, out=tmp_path / "out",
                        cache_dir=str(tmp_path / "cache"), allow_over_budget=True)
    assert art.manifest["backend"]["name"] == "tvm"
    described = subprocess.run(["file", str(tmp_path / "out" / "model.so")], capture_output=True,
                               text=True).stdout
    assert "ARM aarch64" in described


@pytest.fixture(scope="module")
def tuned_digits(tmp_path_factory):
    """digits.onnx (input ``N``x1x8x8, N symbolic) compiled with `backend tvm` and `tuning 2
    trials` (MetaSchedule crashed on the symbolic batch: exit 1 in task 0). The folder."""
    tmp = tmp_path_factory.mktemp("tuned-digits")
    spec = tmp / "s.edge"
    spec.write_text('target host\naccuracy {\n  metric top1-agreement\n  tolerance 1 %\n'
                    f'  data "{DIGITS_DATA}"\n}}\noptimize {{\n  backend tvm\n'
                    '  tuning 2 trials\n}\n')
    built = edgec_cli("compile", DIGITS, "--spec", spec, "-o", "out", "--cache-dir", "cache",
                      "-q", cwd=tmp)
    assert built.returncode == 0, built.stderr
    return tmp / "out"


def test_tuning_binds_symbolic_batch_to_spec_batch(tuned_digits, tmp_path):
    manifest = json.loads((tuned_digits / "manifest.json").read_text())
    backend = manifest["backend"]
    details = backend["details"]
    assert backend["name"] == "tvm" and backend["tuned"]
    assert details["tuning"]["tasks_untuned"] == 0 and details["tuning"]["tasks_dynamic"] == 0
    assert details["batch"] == 1
    assert details["inputs"] == [{"name": "input", "dtype": "float32", "shape": [1, 1, 8, 8]}]
    assert any("takes batch 1 only" in note and "(N)" in note for note in backend["notes"])
    assert "takes batch 1 only" in (tuned_digits / "report.txt").read_text()
    assert manifest["accuracy"]["held"]  # scored batch by batch on every evaluation sample

    x = np.load(DIGITS_DATA)["input"][:1]
    np.savez(tmp_path / "one.npz", input=x)
    ran = edgec_cli("run", tuned_digits, "--inputs", "one.npz", "-o", "y.npz", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    want = ort.InferenceSession(str(DIGITS)).run(None, {"input": x})[0]
    np.testing.assert_allclose(np.load(tmp_path / "y.npz")["logits"], want, rtol=1e-4, atol=1e-4)


def test_module_bound_to_a_batch_runs_other_batches_a_batch_at_a_time(tuned_digits, tmp_path):
    # The runtime runs a fixed-batch module B rows at a time (DESIGN's batch-leading
    # layout): all 359 samples go through the batch-1 module and match onnxruntime.
    data = np.load(DIGITS_DATA)["input"]
    ran = edgec_cli("run", tuned_digits, "--inputs", DIGITS_DATA, "-o", "y.npz", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    want = ort.InferenceSession(str(DIGITS)).run(None, {"input": data})[0]
    np.testing.assert_allclose(np.load(tmp_path / "y.npz")["logits"], want, rtol=1e-4, atol=1e-4)
    # Fed another batch directly, the module says why it takes one batch only (exit 2).
    from edgec_runtime.errors import InputError
    from edgec_runtime.tvm_runner import TVMRunner

    details = json.loads((tuned_digits / "manifest.json").read_text())["backend"]["details"]
    runner = TVMRunner(str(tuned_digits / details["module"]), details)
    with pytest.raises(InputError) as caught:
        runner.run({"input": data[:3]})
    assert caught.value.exit_code == 2 and "takes batch 1 only" in str(caught.value)
