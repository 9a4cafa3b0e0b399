"""No int8 configuration slower than fp32 is ever chosen: the planner compares each
int8 candidate's measured latency with fp32's (measured the same way, in the same
compile) and an int8 one that is slower misses "not-slower-than-fp32".

The compiled model is built to be slow in int8: depthwise 1x1 convolutions separated
by Tanh, which onnxruntime has no int8 kernel for, so every Conv is an int8 island with
a QuantizeLinear before it and a DequantizeLinear after it, and the one multiply-add
per element it saves cannot pay for them (about 3x slower than fp32 here)."""

import json
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgec.planner.search import Configuration, Evaluation, choose, reject_slower_than_fp32


def islands_model(blocks: int = 8, channels: int = 16, size: int = 96) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "input"
    for i in range(blocks):
        w = rng.uniform(0.5, 1.5, (channels, 1, 1, 1)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"),
                  numpy_helper.from_array(np.zeros(channels, np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}",
                                   group=channels),
                  helper.make_node("Tanh", [f"c{i}"], [f"t{i}"], name=f"tanh{i}")]
        x = f"t{i}"
    graph = helper.make_graph(
        nodes, "islands", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", channels, size, size])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", channels, size, size])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_an_int8_candidate_slower_than_fp32_is_never_chosen(tmp_path):
    onnx.save(islands_model(), tmp_path / "islands.onnx")
    data = np.random.default_rng(1).standard_normal((16, 16, 96, 96)).astype(np.float32)
    np.savez(tmp_path / "data.npz", input=data)
    (tmp_path / "host.edge").write_text(f"""target host
budget {{
  latency < 10 s p50 at batch 1
}}
accuracy {{
  metric sqnr
  tolerance 20 dB
  data "{tmp_path / 'data.npz'}"
}}
optimize {{
  precision fp32, int8
  backend ort
  search fastest
}}
""")
    result = subprocess.run(
        [sys.executable, "-m", "edgec", "compile", str(tmp_path / "islands.onnx"), "--spec",
         str(tmp_path / "host.edge"), "-o", "out", "--cache-dir", str(tmp_path / "cache"),
         "--threads", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    measured = json.loads((tmp_path / "out" / "measurements.json").read_text())
    latency = {c["label"]: c["latency"]["p50_ms"] for c in measured["candidates"] if c["latency"]}
    fp32 = latency["fp32 on ort"]
    chosen = manifest["configuration"]["label"]
    assert latency[chosen] <= fp32
    int8 = [c for c in manifest["candidates"] if c.get("precision") == "int8"
            and c["status"] != "skipped"]
    assert int8, manifest["candidates"]
    for c in int8:
        verdict = next(b for b in c["budgets"] if b["name"] == "not-slower-than-fp32")
        if latency[c["label"]] > fp32:
            assert verdict["status"] == "missed"
            assert c["status"] != "chosen" and "not-slower-than-fp32 missed" in c["reason"]
    if manifest["configuration"]["precision"] == "int8":
        # Confirmed side by side, fp32 and the winner run in turn.
        verdict = next(b for b in manifest["budgets"] if b["name"] == "not-slower-than-fp32")
        assert verdict["status"] == "held" and "side by side, interleaved" in verdict["detail"]
    # The model is built so that int8 loses: the rule must have had work to do.
    assert any(latency[c["label"]] > fp32 for c in int8), latency
    # Each int8 candidate says how onnxruntime ran it: Q/DQ transitions, node precisions.
    assert all(c["int8_executed"]["transitions"] > 0 and c["int8_executed"]["nodes"]["fp32"] >= 8
               for c in int8), int8  # the Tanh islands
    report = (tmp_path / "out" / "report.txt").read_text()
    assert "compile time per phase:" in report


def _evaluation(label: str, precision: str, ms: float) -> Evaluation:
    config = Configuration(label, precision, "", "", "ort")
    return Evaluation(config, latency_s=ms / 1e3, latency_where="host", accuracy_held=True,
                      budgets=[{"name": "accuracy", "status": "held", "detail": ""}])


def test_an_int8_winner_slower_side_by_side_is_rejected_and_fp32_ships(monkeypatch):
    """Measured minutes apart on a busy machine, int8 looked faster; run in turn with
    fp32 it is slower, so the choice is made again."""
    from edgec.planner import plan as plan_module

    from types import SimpleNamespace

    from edgec.planner.evaluate import Attempt

    fp32 = _evaluation("fp32 on ort", "fp32", 15.6)
    lucky = _evaluation("int8 (contiguous regions) on ort", "int8", 9.0)
    tried = [Attempt(e, e.config.label) for e in (fp32, lucky)]
    ctx = SimpleNamespace(spec=SimpleNamespace(optimize=SimpleNamespace(search="fastest")),
                          build_options=SimpleNamespace(progress=lambda *a: None))
    timed = []

    def interleaved(ctx, *attempts, **options):
        timed.append([a.evaluation for a in attempts])
        return (17.0, 15.0)
    monkeypatch.setattr(plan_module, "_interleaved", interleaved)
    winner, _, runoff = plan_module._choose_not_slower_than_fp32(ctx, tried, [fp32, lucky])
    assert timed == [[lucky, fp32]]  # 9 ms is not within noise of 15.6: no run-off
    assert winner is fp32 and runoff is None
    verdict = next(b for b in lucky.budgets if b["name"] == "not-slower-than-fp32")
    assert verdict["status"] == "missed" and "17 ms against 15 ms" in verdict["detail"]


def test_reject_slower_than_fp32_marks_the_slower_int8_and_choose_skips_it():
    fp32 = _evaluation("fp32 on ort", "fp32", 15.6)
    slow = _evaluation("int8 (Conv, MatMul, Gemm) on ort", "int8", 29.9)
    fast = _evaluation("int8 (contiguous regions) on ort", "int8", 9.0)
    assert reject_slower_than_fp32([fp32, slow, fast]) is fp32
    assert not slow.held and slow.missed()[0]["name"] == "not-slower-than-fp32"
    assert "29.9 ms against fp32 on ort's 15.6 ms" in slow.rejection()
    assert fast.held
    assert choose([fp32, slow, fast], "fastest")[0] is fast
    # Without a faster int8 candidate, fp32 ships.
    fp32, slow = _evaluation("fp32 on ort", "fp32", 15.6), _evaluation("int8 on ort", "int8", 29.9)
    reject_slower_than_fp32([fp32, slow])
    assert choose([fp32, slow], "fastest")[0] is fp32
