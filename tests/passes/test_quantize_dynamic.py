"""quantize-dynamic: MatMul(+bias Add) -> DynamicQuantizeMatMul, or standard ops;
numerics against onnxruntime on the model before the pass."""

import numpy as np
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
