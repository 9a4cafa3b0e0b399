"""`edgec compile` end to end with the onnxruntime backend: the artifact, the manifest, the
cache (no-op recompiles, byte-identical clean builds), depfiles, budgets and exit codes,
and kill -9 in the middle of a compile."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import edgec
from edgec.diagnostics import BudgetError

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "spec_examples" / "digits.onnx"
DATA = REPO / "spec_examples" / "data" / "digits.npz"


def write_spec(path: Path, latency="50 ms", tolerance="1 %", backend="ort", extra="") -> Path:
    path.write_text(f"""
target host
budget {{
  latency < {latency} p50 at batch 1
  size < 10 MiB
}}
accuracy {{
  metric top1-agreement
  tolerance {tolerance}
  data "{DATA}"
}}
optimize {{
  precision fp32
  backend {backend}
{extra}
}}
""")
    return path


def edgec_cli(*args, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "edgec", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def spec(tmp_path):
    return write_spec(tmp_path / "host.edge")


def test_compile_writes_a_complete_artifact(tmp_path, spec):
    art = edgec.compile(DIGITS, spec, out=tmp_path / "out", cache_dir=str(tmp_path / "cache"))
    files = set(os.listdir(tmp_path / "out"))
    assert {"manifest.json", "measurements.json", "model.onnx", "session.json",
            "report.txt"} <= files
    m = art.manifest
    assert m["format_version"] == 1 and m["budgets_held"] is True
    assert m["backend"]["name"] == "ort" and m["configuration"]["precision"] == "fp32"
    assert m["candidates"][0]["status"] == "chosen"
    assert {b["name"] for b in m["budgets"]} == {"latency", "size", "accuracy"}
    assert all(b["status"] == "held" for b in m["budgets"])
    assert m["accuracy"]["value"] == 1.0
    assert m["files"]["model.onnx"]["sha256"]
    # The artifact runs, and agrees with onnxruntime on the original model.
    x = np.load(DATA)["input"][:8]
    want = ort.InferenceSession(str(DIGITS)).run(None, {"input": x})[0]
    got = edgec.load(tmp_path / "out").run({"input": x})["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    lat = art.measurements["latency"]
    assert lat["p50_ms"] > 0 and lat["where"] == "host"
    assert "report.html" in files


def test_identical_recompile_is_a_no_op(tmp_path, spec):
    out, cache = tmp_path / "out", str(tmp_path / "cache")
    edgec.compile(DIGITS, spec, out=out, cache_dir=cache)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    dir_mtime = out.stat().st_mtime_ns
    result = edgec_cli("compile", DIGITS, "--spec", spec, "-o", out, "--cache-dir", cache,
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "is up to date" in result.stderr
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    assert after == before and out.stat().st_mtime_ns == dir_mtime


def test_cache_copies_a_previous_build(tmp_path, spec):
    cache = str(tmp_path / "cache")
    edgec.compile(DIGITS, spec, out=tmp_path / "a", cache_dir=cache)
    result = edgec_cli("compile", DIGITS, "--spec", spec, "-o", tmp_path / "b", "--cache-dir",
                       cache, cwd=tmp_path)
    assert result.returncode == 0 and "copied from the cache" in result.stderr
    assert (tmp_path / "a" / "manifest.json").read_bytes() == \
        (tmp_path / "b" / "manifest.json").read_bytes()


def test_a_cache_dir_that_is_a_file_is_refused_before_any_work(tmp_path, spec):
    """It cached nothing, silently, on every compile."""
    cache = tmp_path / "cache"
    cache.write_text("mine")
    result = edgec_cli("compile", DIGITS, "--spec", spec, "-o", tmp_path / "out", "--cache-dir",
                       cache, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"{cache}: error: the cache folder is not a folder" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() and cache.read_text() == "mine"


def test_clean_builds_are_byte_identical(tmp_path, spec):
    for name in ("a", "b"):
        edgec.compile(DIGITS, spec, out=tmp_path / name, cache_dir=str(tmp_path / f"cache-{name}"))
    for f in ("manifest.json", "model.onnx", "session.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_a_changed_spec_rebuilds(tmp_path, spec):
    cache = str(tmp_path / "cache")
    first = edgec.compile(DIGITS, spec, out=tmp_path / "out", cache_dir=cache).manifest
    write_spec(spec, latency="40 ms")
    second = edgec.compile(DIGITS, spec, out=tmp_path / "out", cache_dir=cache).manifest
    assert first["cache_key"] != second["cache_key"]


def test_depfile_lists_model_spec_includes_and_data(tmp_path):
    base = tmp_path / "base.edge"
    base.write_text(f'accuracy {{\n  metric top1-agreement\n  tolerance 1 %\n  data "{DATA}"\n}}\n')
    spec = tmp_path / "team.edge"
    spec.write_text('include "base.edge"\ntarget host\noptimize {\n  backend ort\n}\n')
    dep = tmp_path / "out.d"
    result = edgec_cli("compile", DIGITS, "--spec", spec, "-o", "out", "--depfile", dep,
                       "--cache-dir", tmp_path / "cache", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = dep.read_text()
    assert text.startswith("out/manifest.json:")
    for needed in (str(DIGITS), str(spec), str(base), str(DATA)):
        assert needed in text


def test_missed_latency_budget_exits_4_and_writes_nothing(tmp_path):
    spec = write_spec(tmp_path / "tight.edge", latency="1 ns")
    result = edgec_cli("compile", DIGITS, "--spec", spec, "-o", "out", "--cache-dir",
                       tmp_path / "cache", cwd=tmp_path)
    assert result.returncode == 4, result.stderr
    assert "budget cannot be met" in result.stderr and "misses latency: p50" in result.stderr
    assert "against 1 ns" in result.stderr and "best candidate: fp32 on ort" in result.stderr
    assert not (tmp_path / "out").exists()
    allowed = edgec_cli("compile", DIGITS, "--spec", spec, "-o", "out", "--cache-dir",
                        tmp_path / "cache", "--allow-over-budget", cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["over_budget"] is True and manifest["budgets_held"] is False
    with pytest.raises(BudgetError):
        edgec.compile(DIGITS, spec, out=tmp_path / "api", cache_dir=str(tmp_path / "cache"))


def test_json_output_is_one_document(tmp_path, spec):
    result = edgec_cli("compile", DIGITS, "--spec", spec, "-o", "out", "--json", "--cache-dir",
                       tmp_path / "cache", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is True and doc["outcome"] == "ok"
    assert doc["configuration"]["backend"] == "ort"


def test_run_bench_inspect(tmp_path, spec):
    edgec.compile(DIGITS, spec, out=tmp_path / "out", cache_dir=str(tmp_path / "cache"))
    x = np.load(DATA)["input"][:4]
    np.savez(tmp_path / "in.npz", input=x)
    run = edgec_cli("run", "out", "--inputs", "in.npz", "-o", "y.npz", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert np.load(tmp_path / "y.npz")["logits"].shape == (4, 10)
    bench = edgec_cli("bench", "out", "--json", cwd=tmp_path)
    assert bench.returncode == 0, bench.stderr
    stats = json.loads(bench.stdout)
    assert 0 < stats["p50_ms"] <= stats["p90_ms"]
    inspect = edgec_cli("inspect", "out", cwd=tmp_path)
    assert inspect.returncode == 0 and "ALL BUDGETS HOLD" in inspect.stdout
    missing = edgec_cli("inspect", "nowhere", cwd=tmp_path)
    assert missing.returncode == 2 and "not an edgec artifact" in missing.stderr


def test_bad_spec_and_bad_model_exit_codes(tmp_path, spec):
    bad_spec = tmp_path / "bad.edge"
    bad_spec.write_text("target hots\n")
    r = edgec_cli("compile", DIGITS, "--spec", bad_spec, "-o", "out", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    r = edgec_cli("compile", "bad.onnx", "--spec", spec, "-o", "out", cwd=tmp_path)
    assert r.returncode == 3 and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_kill_9_during_compile_leaves_no_partial_output(tmp_path):
    # A tuning-free but slow-enough compile: a large synthetic data set for accuracy.
    big = tmp_path / "big.npz"
    rng = np.random.default_rng(0)
    np.savez(big, input=rng.random((20000, 1, 8, 8), dtype=np.float32))
    spec = tmp_path / "slow.edge"
    spec.write_text(f'target host\naccuracy {{\n  metric top1-agreement\n  tolerance 1 %\n'
                    f'  data "{big}"\n}}\noptimize {{\n  backend ort\n}}\n')
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-m", "edgec", "compile", str(DIGITS), "--spec",
                             str(spec), "-o", "out", "--cache-dir", str(cache), "-q"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any(".edgec-tmp-" in n for n in os.listdir(tmp_path)) or proc.poll() is not None:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the compile finished before it could be killed"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out = tmp_path / "out"
    if out.exists():  # the kill came after the swap: then OUT is the whole new artifact
        from edgec.artifact import read_manifest, verify_files
        manifest = read_manifest(str(out))
        assert manifest is not None and verify_files(str(out), manifest) == []
    # The next compile cleans the dead process's staging folder and succeeds.
    result = edgec_cli("compile", DIGITS, "--spec", spec, "-o", "out", "--cache-dir", cache,
                       "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "manifest.json").exists()
    assert not [n for n in os.listdir(tmp_path) if ".edgec-tmp-" in n]


def test_a_model_with_a_scalar_output_compiles(tmp_path):
    """An output with no batch axis (a sum over the whole feed) is compared chunk by chunk
    instead of crashing the accuracy check ('zero-dimensional arrays cannot be
    concatenated')."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("ReduceSum", ["y"], ["total"], keepdims=0)],
        "scalar_output",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("total", TensorProto.FLOAT, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "scalar.onnx"
    path.write_bytes(model.SerializeToString())
    spec = tmp_path / "s.edge"
    spec.write_text("target host\naccuracy {\n  metric max-abs-error\n  tolerance 0.001\n}\n"
                    "optimize {\n  backend ort\n}\n")
    result = edgec_cli("compile", path, "--spec", spec, "-o", tmp_path / "out",
                       "--cache-dir", tmp_path / "cache", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    outputs = edgec.load(tmp_path / "out").run({"x": np.ones((3, 4), np.float32)})
    assert float(outputs["total"]) == 12.0


def test_candidate_outputs_of_another_shape_are_a_candidate_error_not_a_crash():
    """Found by the mutated-ONNX campaign: a candidate whose outputs differ in shape from
    the original's made the metric crash (exit 1) on a broadcast error; it is now that
    candidate's error, named."""
    from edgec.planner.samples import outputs_mismatch as _outputs_mismatch

    same = [np.zeros((4, 10))]
    assert _outputs_mismatch(same, [np.ones((4, 10))]) is None
    assert "shape [32, 8, 16, 16], the original's [256, 16, 16]" in _outputs_mismatch(
        [np.zeros((256, 16, 16))], [np.zeros((32, 8, 16, 16))])
    assert "2 outputs, the original has 1" in _outputs_mismatch(same, same * 2)


def test_out_of_memory_is_one_line_exit_3(tmp_path, monkeypatch, capsys):
    """A model whose own computation does not fit in memory (found by the mutated-ONNX
    campaign under a 2 GB limit) is one line, exit 3: not 'internal error: this is a bug'."""
    import edgec.cli
    import edgec.compiler

    def exhausted(*args, **kwargs):
        raise MemoryError((100000, 1000))

    monkeypatch.setattr(edgec.compiler, "compile_model", exhausted)
    code = edgec.cli.main(["compile", str(DIGITS), "--spec", str(REPO / "spec_examples" / "host.edge"),
                           "-o", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 3
    assert err.splitlines()[0] == "error: out of memory: running the model (or a candidate) on " \
        "the samples needs more memory than this machine allows"
    assert "internal error" not in err
