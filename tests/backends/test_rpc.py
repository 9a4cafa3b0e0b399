"""TVM RPC on the command line: an unreachable tracker, an unknown key and a backend that
cannot be measured over RPC are one-line usage errors (exit 2); with `backend auto` the
TVM candidates are measured over RPC and the others say how they were judged.

These assert what was measured and where, never how fast."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import edgec
from edgec.testing.required import import_or_missing

import_or_missing("tvm")

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "spec_examples" / "digits.onnx"
DATA = REPO / "spec_examples" / "data" / "digits.npz"


def edgec_cli(*args, cwd, timeout=900):
    return subprocess.run([sys.executable, "-m", "edgec", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(result, code: int = 2) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends


def write_spec(path: Path, backend: str) -> Path:
    path.write_text(f'target host\naccuracy {{\n  metric top1-agreement\n  tolerance 1 %\n'
                    f'  data "{DATA}"\n}}\noptimize {{\n  backend {backend}\n}}\n')
    return path


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """digits compiled untuned for this host with each backend: {"tvm": dir, "ort": dir}."""
    tmp = tmp_path_factory.mktemp("rpc-artifacts")
    out = {}
    for backend in ("tvm", "ort"):
        spec = write_spec(tmp / f"{backend}.edge", backend)
        built = edgec_cli("compile", DIGITS, "--spec", spec, "-o", backend, "--cache-dir",
                          "cache", "-q", cwd=tmp)
        assert built.returncode == 0, built.stderr
        out[backend] = tmp / backend
    return out


def test_unreachable_rpc_tracker_is_a_usage_error(tmp_path, artifacts):
    tracker = f"127.0.0.1:{closed_port()}"
    compiled = edgec_cli("compile", DIGITS, "--spec", write_spec(tmp_path / "s.edge", "tvm"),
                         "-o", "out", "--cache-dir", "cache", "--rpc-tracker", tracker,
                         "--rpc-key", "local", cwd=tmp_path)
    assert f"cannot reach the RPC tracker {tracker}" in one_line_error(compiled)
    assert not (tmp_path / "out").exists()
    benched = edgec_cli("bench", artifacts["tvm"], "--rpc-tracker", tracker, "--rpc-key", "local",
                        cwd=tmp_path)
    assert f"cannot reach the RPC tracker {tracker}" in one_line_error(benched)


def test_rpc_key_without_a_device_is_a_usage_error(tmp_path, artifacts, rpc_tracker):
    tracker = f"{rpc_tracker.host}:{rpc_tracker.port}"
    benched = edgec_cli("bench", artifacts["tvm"], "--rpc-tracker", tracker, "--rpc-key",
                        "no-such-board", cwd=tmp_path)
    line = one_line_error(benched)
    assert "no device server is registered under key 'no-such-board'" in line
    assert f"(keys there: {rpc_tracker.key})" in line


def test_ort_backend_with_rpc_tracker_is_a_usage_error(tmp_path, artifacts, rpc_tracker):
    rpc = ["--rpc-tracker", f"{rpc_tracker.host}:{rpc_tracker.port}", "--rpc-key",
           rpc_tracker.key]
    compiled = edgec_cli("compile", DIGITS, "--spec", write_spec(tmp_path / "s.edge", "ort"),
                         "-o", "out", "--cache-dir", "cache", *rpc, cwd=tmp_path)
    assert "the ort backend cannot be measured (or tuned) over TVM RPC" in \
        one_line_error(compiled)
    forced = edgec_cli("compile", DIGITS, "--spec", write_spec(tmp_path / "a.edge", "auto"),
                       "-o", "out", "--cache-dir", "cache", "--backend", "ort", *rpc,
                       cwd=tmp_path)
    assert "the ort backend cannot be measured" in one_line_error(forced)
    benched = edgec_cli("bench", artifacts["ort"], *rpc, cwd=tmp_path)
    line = one_line_error(benched)
    assert "--rpc-tracker" in line and "'ort'" in line and "on the device" in line


ORT_NOTE = ("the ort backend cannot be measured over TVM RPC: its latency was measured on "
            "this host")


def rpc_args(rpc_tracker) -> list[str]:
    return ["--rpc-tracker", f"{rpc_tracker.host}:{rpc_tracker.port}", "--rpc-key",
            rpc_tracker.key]


def test_auto_backend_over_rpc_measures_tvm_there_and_says_how_ort_was_judged(
        tmp_path, rpc_tracker):
    # One MatMul: one tuning task (1 trial, through the tracker), so that the TVM
    # candidate is tuned and built rather than skipped as an untuned one that cannot win.
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((32, 32)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="matmul_0")], "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 32])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "m.onnx")
    spec = tmp_path / "s.edge"
    spec.write_text("target host\naccuracy {\n  metric max-abs-error\n  tolerance 0.001\n}\n"
                    "optimize {\n  backend auto\n  search fastest\n  tuning 1 trials\n}\n")
    where = f"rpc://{rpc_tracker.host}:{rpc_tracker.port}/{rpc_tracker.key}"
    built = edgec_cli("compile", "m.onnx", "--spec", spec, "-o", "out", "--cache-dir", "cache",
                      "-q", "--allow-over-budget", *rpc_args(rpc_tracker), cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    by_backend = {c["backend"]: c for c in manifest["candidates"] if "backend" in c}
    assert by_backend["tvm"]["latency_where"] == where, by_backend["tvm"]
    assert by_backend["tvm"]["tuned"] and "latency_note" not in by_backend["tvm"]
    assert by_backend["ort"]["latency_where"] == "host"
    assert by_backend["ort"]["latency_note"] == ORT_NOTE
    assert f"note: {ORT_NOTE}" in (tmp_path / "out" / "report.txt").read_text()


def test_auto_backend_over_rpc_with_host_edge_is_not_an_error(tmp_path, rpc_tracker):
    # The issue's case: host.edge (backend auto, no tuning) with a tracker exited 1.
    built = edgec_cli("compile", DIGITS, "--spec", REPO / "spec_examples" / "host.edge",
                      "-o", "out", "--cache-dir", "cache", "-q", "--allow-over-budget",
                      *rpc_args(rpc_tracker), cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    ort = [c for c in manifest["candidates"] if c.get("backend") == "ort"
           and c["status"] != "skipped"]
    assert ort and all(c["latency_where"] == "host" and c["latency_note"] == ORT_NOTE
                       for c in ort)
    # The untuned TVM candidate is either measured on the device or not built at all
    # (it cannot beat onnxruntime untuned), and says which.
    for c in manifest["candidates"]:
        if c.get("backend") == "tvm":
            assert (c.get("latency_where") or "").startswith("rpc://") or "not built" in c["reason"]


def test_auto_backend_over_rpc_estimates_ort_for_a_target_not_at_hand(
        tmp_path, rpc_tracker, monkeypatch):
    # As for a Raspberry Pi behind the tracker: TVM's module is measured on the device,
    # onnxruntime's latency can only be estimated. (The loopback device is this x86 host,
    # so the target is host, taken as not at hand.)
    from edgec.planner import plan

    monkeypatch.setattr(plan, "target_at_hand", lambda target: False)
    art = edgec.compile(DIGITS, write_spec(tmp_path / "s.edge", "auto"), tmp_path / "out",
                        cache_dir=str(tmp_path / "cache"), rpc=rpc_tracker,
                        allow_over_budget=True)
    by_backend = {c["backend"]: c for c in art.manifest["candidates"] if "backend" in c}
    assert by_backend["tvm"]["latency_where"].startswith("rpc://127.0.0.1:")
    assert by_backend["ort"]["latency_where"] == "estimated"
    assert "estimated from the target description" in by_backend["ort"]["latency_note"]
