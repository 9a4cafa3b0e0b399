"""The planner's LSTM int8 candidates end to end: a bidirectional LSTM compiled for the
host with `search fastest` builds and scores "int8 (LSTM, attention; dynamic)"
(DynamicQuantizeLSTM) against the fp32 model, and whichever int8 candidate wins is
held to not-slower-than-fp32 like any other."""

import json
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DYNAMIC = "int8 (LSTM, attention; dynamic) on ort"


def bilstm_model(steps: int = 24, features: int = 32, hidden: int = 64) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((2, 4 * hidden, features)) * 0.2).astype(np.float32), "W"),
             numpy_helper.from_array((rng.standard_normal((2, 4 * hidden, hidden)) * 0.1).astype(np.float32), "R"),
             numpy_helper.from_array((rng.standard_normal((2, 8 * hidden)) * 0.1).astype(np.float32), "B")]
    graph = helper.make_graph(
        [helper.make_node("LSTM", ["x", "W", "R", "B"], ["y"], name="bilstm", direction="bidirectional",
                          hidden_size=hidden)],
        "bilstm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [steps, 1, features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [steps, 2, 1, hidden])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def test_a_bilstm_gets_a_dynamic_int8_candidate_scored_and_judged(tmp_path):
    onnx.save(bilstm_model(), tmp_path / "bilstm.onnx")
    # Per-sample feeds: the model's leading axis is time, not batch.
    data = np.random.default_rng(1).standard_normal((8, 24, 1, 32)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=data)
    (tmp_path / "host.edge").write_text(f"""target host
budget {{
  latency < 10 s p50 at batch 1
}}
accuracy {{
  metric sqnr
  tolerance 30 dB
  data "{tmp_path / 'data.npz'}"
  layout per-sample
}}
optimize {{
  precision fp32, int8
  backend ort
  search fastest
}}
""")
    result = subprocess.run(
        [sys.executable, "-m", "edgec", "compile", str(tmp_path / "bilstm.onnx"), "--spec",
         str(tmp_path / "host.edge"), "-o", "out", "--cache-dir", str(tmp_path / "cache"),
         "--threads", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    candidates = {c["label"]: c for c in manifest["candidates"]}
    dynamic = candidates[DYNAMIC]
    # Built and scored on the module (no QDQ op to quantize: the static policies give
    # the fp32 model back and are not built again).
    assert dynamic["status"] != "skipped" and dynamic["accuracy_held"], dynamic
    assert dynamic["accuracy"] >= 30
    assert candidates["int8 (Conv, MatMul, Gemm) on ort"]["status"] == "skipped"
    verdict = next(b for b in dynamic["budgets"] if b["name"] == "not-slower-than-fp32")
    assert verdict["status"] in ("held", "missed")
    chosen = onnx.load(str(tmp_path / "out" / "model.onnx"))
    ops = {n.op_type for n in chosen.graph.node}
    if manifest["configuration"]["precision"] == "int8":
        assert "DynamicQuantizeLSTM" in ops and "LSTM" not in ops
        held = next(b for b in manifest["budgets"] if b["name"] == "not-slower-than-fp32")
        assert held["status"] == "held" and "side by side, interleaved" in held["detail"]
    else:
        assert ops == {"LSTM"}


def test_the_dynamic_candidates_are_offered_for_attention_and_lstm_not_for_a_softmax_head():
    """A transformer's Softmax feeds its P·V MatMul and an LSTM is an LSTM: both get the
    dynamic candidates. A classifier whose MatMul head ends in an output Softmax has
    MatMul and Softmax too, but nothing quantize-dynamic could change."""
    from edgec.planner.plan import _op_types
    from edgec.planner.search import may_have_lstm_or_attention
    from edgec.testing.models import mlp, transformer_encoder

    assert may_have_lstm_or_attention(_op_types(transformer_encoder().graph))
    assert may_have_lstm_or_attention(_op_types(bilstm_model().graph))
    head = mlp()
    logits = head.graph.output[0].name
    head.graph.node.append(helper.make_node("Softmax", [logits], ["probabilities"], axis=-1))
    head.graph.output[0].name = "probabilities"
    ops = _op_types(head.graph)
    assert {"MatMul", "Softmax"} <= ops
    assert not may_have_lstm_or_attention(ops)
