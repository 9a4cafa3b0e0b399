"""quantize-dynamic: MatMul(+bias Add) -> DynamicQuantizeMatMul, or standard ops;
numerics against onnxruntime on the model before the pass."""

import subprocess
import sys

import numpy as np
import onnx
import pytest

from edgec.testing.passes import load, run_pass
from edgec.frontend import export_model
from edgec.metrics import evaluate
from edgec.passes.quantize_dynamic import QuantizeDynamic
from edgec.quantization.observe import run
from edgec.testing.models import mlp, transformer_encoder


@pytest.mark.parametrize("fmt", ["contrib", "standard"])
def test_mlp_matmuls_become_dynamic_int8(fmt):
    proto = mlp(batch=4)
    model = load(proto)
    result = run_pass(QuantizeDynamic(format=fmt), model)
    assert result.stats == {"nodes-quantized": 2, "biases-folded": 2, "weight-bits": 7}  # no target: 7-bit
    ops = [n.op_type for n in model.graph]
    if fmt == "contrib":
        assert ops == ["DynamicQuantizeMatMul", "Relu", "DynamicQuantizeMatMul"]
        assert model.opset_imports["com.microsoft"] == 1
        weight = model.graph.nodes[0].inputs[1].const
        assert weight.dtype.short_name == "i8" and np.abs(weight.numpy()).max() <= 63  # 7-bit
    else:
        assert ops.count("MatMulInteger") == 2 and ops.count("DynamicQuantizeLinear") == 2
    assert model.graph.outputs[0].name == "output"
    x = {"input": np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)}
    ref, out = run(proto, x), run(export_model(model), x)
    # Tolerance: activations u8 per tensor at run time, 7-bit weights: >= 30 dB.
    assert evaluate("sqnr", 0, ref, out).value >= 30
    assert not run_pass(QuantizeDynamic(format=fmt), model).modified


def test_transformer_encoder_dynamic_int8_and_exclude():
    proto = transformer_encoder(seq=8, hidden=32, heads=2, layers=1, ffn=64)
    model = load(proto)
    first = next(n for n in model.graph if n.op_type == "MatMul").name
    result = run_pass(QuantizeDynamic(exclude=(first,)), model)
    assert result.stats["nodes-quantized"] == 5  # 6 weight MatMuls, one excluded
    assert any(n.name == first and n.op_type == "MatMul" for n in model.graph)
    x = {"hidden_states": np.random.default_rng(0).standard_normal((3, 8, 32)).astype(np.float32)}
    ref, out = run(proto, x), run(export_model(model), x)
    assert evaluate("cosine-similarity", 0, ref, out).value >= 0.999


# --------------------------------------------------------------------------- LSTM, Attention

def _lstm_model(direction: str, lengths: bool, states: bool, layout: int = 0):
    """One LSTM [T=6, N=3, I=10] -> H=8, outputs Y, Y_h and Y_c; weights at the scale
    of a trained LSTM's (|w| up to ~0.5), so the gates are neither saturated nor linear."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    d, h, i, t, n = 2 if direction == "bidirectional" else 1, 8, 10, 6, 3
    inits = [numpy_helper.from_array((rng.standard_normal((d, 4 * h, i)) * 0.3).astype(np.float32), "W"),
             numpy_helper.from_array((rng.standard_normal((d, 4 * h, h)) * 0.3).astype(np.float32), "R"),
             numpy_helper.from_array((rng.standard_normal((d, 8 * h)) * 0.1).astype(np.float32), "B")]
    x_shape = [n, t, i] if layout else [t, n, i]
    state_shape = [n, d, h] if layout else [d, n, h]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)]
    names = ["X", "W", "R", "B", "", "", ""]
    if lengths:
        inputs.append(helper.make_tensor_value_info("lens", TensorProto.INT32, [n]))
        names[4] = "lens"
    if states:
        inputs += [helper.make_tensor_value_info(s, TensorProto.FLOAT, state_shape) for s in ("h0", "c0")]
        names[5:7] = ["h0", "c0"]
    while names[-1] == "":
        names.pop()
    y_shape = [n, t, d, h] if layout else [t, d, n, h]
    node = helper.make_node("LSTM", names, ["Y", "Y_h", "Y_c"], name="lstm", direction=direction,
                            hidden_size=h, **({"layout": 1} if layout else {}))
    graph = helper.make_graph([node], "g", inputs,
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, y_shape),
                               helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, state_shape),
                               helper.make_tensor_value_info("Y_c", TensorProto.FLOAT, state_shape)], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.checker.check_model(proto)
    feed = {"X": rng.standard_normal(x_shape).astype(np.float32)}
    if lengths:
        feed["lens"] = np.array([6, 3, 1], np.int32)
    if states:
        feed.update({s: (rng.standard_normal(state_shape) * 0.5).astype(np.float32) for s in ("h0", "c0")})
    return proto, feed


def _ort(proto, feed):
    import onnxruntime as ort
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("lengths", [False, True], ids=["no-sequence_lens", "sequence_lens"])
@pytest.mark.parametrize("per_channel", [True, False], ids=["per-row", "per-direction"])
def test_lstm_becomes_dynamic_quantize_lstm(direction, lengths, per_channel):
    proto, feed = _lstm_model(direction, lengths, states=lengths)
    model = load(proto)
    result = run_pass(QuantizeDynamic(ops=("LSTM",), per_channel=per_channel, reduce_range=False), model)
    assert result.stats == {"nodes-quantized": 1, "biases-folded": 0, "weight-bits": 8, "lstm-quantized": 1}
    [node] = list(model.graph)
    assert (node.op_type, node.domain) == ("DynamicQuantizeLSTM", "com.microsoft")
    d = 2 if direction == "bidirectional" else 1
    assert node.inputs[1].const.dims == (d, 10, 32) and node.inputs[2].const.dims == (d, 8, 32)
    assert node.inputs[8].const.dims == ((d, 32) if per_channel else (d,))
    assert node.attr("direction") == direction and node.attr("hidden_size") == 8
    assert (node.inputs[4] is not None) == lengths and [o.name for o in node.outputs] == ["Y", "Y_h", "Y_c"]
    ref, out = _ort(proto, feed), _ort(export_model(model), feed)
    # Tolerance: 8-bit weights per gate row (per direction), x and h quantized to u8 at
    # run time at every step: >= 30 dB on Y and the final states (measured 36-44 dB).
    for name, r, o in zip(("Y", "Y_h", "Y_c"), ref, out):
        assert r.shape == o.shape
        assert evaluate("sqnr", 0, [r], [o]).value >= 30, name
    if lengths:  # steps past a sequence's length are zeros in both
        assert not np.any(out[0][3:, :, 1]) and not np.any(out[0][1:, :, 2])
    assert not run_pass(QuantizeDynamic(ops=("LSTM",)), model).modified


def test_lstm_left_alone_where_dynamic_quantize_lstm_cannot_run_it():
    """Batch-major layout (DynamicQuantizeLSTM has none), default ops (MatMul, Gemm),
    and an excluded LSTM: nothing changes."""
    proto, _ = _lstm_model("forward", False, False, layout=1)
    assert not run_pass(QuantizeDynamic(ops=("LSTM",)), load(proto)).modified
    proto, _ = _lstm_model("forward", False, False)
    assert not run_pass(QuantizeDynamic(), load(proto)).modified
    assert not run_pass(QuantizeDynamic(ops=("LSTM",), exclude=("lstm",)), load(proto)).modified


def test_fused_attention_becomes_qattention():
    """fuse makes com.microsoft::Attention of the encoder's self-attention; ops=Attention
    quantizes its QKV projection (QAttention), the other MatMuls stay fp32."""
    from edgec.passes.fuse import Fuse

    from edgec.passes.infer_shapes import InferShapes

    proto = transformer_encoder(seq=16, hidden=64, heads=4, layers=2, ffn=128)
    model = load(proto)
    run_pass(InferShapes(), model)  # the attention pattern needs x's rank, as in the default pipeline
    assert run_pass(Fuse(patterns=("attention",)), model).stats["attention"] == 2
    fused = export_model(model)
    result = run_pass(QuantizeDynamic(ops=("Attention",), reduce_range=False), model)
    assert result.stats["attention-quantized"] == 2 and result.stats["nodes-quantized"] == 2
    ops = [n.op_type for n in model.graph]
    assert ops.count("QAttention") == 2 and ops.count("DynamicQuantizeLinear") == 2
    assert "Attention" not in ops and ops.count("MatMul") == 6  # output projection, two FFN
    q = next(n for n in model.graph if n.op_type == "QAttention")
    assert q.attr("num_heads") == 4 and q.inputs[1].const.dims == (64, 192) and q.inputs[4].const.dims == (192,)
    x = {"hidden_states": np.random.default_rng(0).standard_normal((2, 16, 64)).astype(np.float32)}
    ref, out = run(proto, x), run(export_model(model), x)
    # Tolerance: u8 input per tensor at run time, 8-bit per-column weights: >= 30 dB
    # against the unfused fp32 model (measured ~40 dB).
    assert evaluate("sqnr", 0, ref, out).value >= 30
    assert evaluate("sqnr", 0, run(fused, x), out).value >= 30
    assert not run_pass(QuantizeDynamic(ops=("Attention",)), model).modified


def test_attention_with_qkv_hidden_sizes_is_left_alone():
    from edgec.passes.fuse import Fuse

    model = load(transformer_encoder(seq=8, hidden=32, heads=2, layers=1, ffn=64))
    run_pass(Fuse(patterns=("attention",)), model)
    attention = next(n for n in model.graph if n.op_type == "Attention")
    attention.set_attr("qkv_hidden_sizes", [32, 32, 32])
    assert not run_pass(QuantizeDynamic(ops=("Attention",)), model).modified


def test_contrib_only_ops_need_the_contrib_format():
    from edgec.passmgr.base import OptionError

    with pytest.raises(OptionError, match="only onnxruntime's contrib int8 form"):
        QuantizeDynamic(ops=("LSTM",), format="standard")
    with pytest.raises(OptionError, match="not Conv"):
        QuantizeDynamic(ops=("Conv",))


def test_an_excluded_name_that_is_no_node_is_a_usage_error_with_the_closest_name(tmp_path):
    """exclude= naming nothing would quantize the layer the user meant to keep: both
    quantizers refuse it, exit 2, with the node name closest to the typo."""
    onnx.save(mlp(), tmp_path / "m.onnx")
    np.savez(tmp_path / "x.npz", input=np.zeros((4, 64), np.float32))
    for pipeline in ("quantize-dynamic{exclude=/fc1/MatMull}",
                     f"quantize-int8{{exclude=/fc1/MatMull calibration-data={tmp_path / 'x.npz'}}}"):
        result = subprocess.run([sys.executable, "-m", "edgec", "opt", "m.onnx", "-p", pipeline,
                                 "-o", "o.onnx"], cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 2, result.stderr
        assert "no node named '/fc1/MatMull' (did you mean '/fc1/MatMul'?)" in result.stderr
        assert "Traceback" not in result.stderr and not (tmp_path / "o.onnx").exists()
    kept = subprocess.run([sys.executable, "-m", "edgec", "opt", "m.onnx", "-p",
                           "quantize-dynamic{exclude=/fc1/MatMul}", "-o", "o.onnx"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert kept.returncode == 0, kept.stderr
    ops = [n.op_type for n in onnx.load(tmp_path / "o.onnx").graph.node]
    assert "MatMul" in ops  # the excluded layer stays fp32
