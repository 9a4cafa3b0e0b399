"""quantize-weights: int8 per-channel DequantizeLinear and int4 MatMulNBits; the
model shrinks as expected and stays close to the fp32 model in onnxruntime."""

import numpy as np
import pytest

from edgec.testing.passes import load, run_pass
from edgec.frontend import export_model
from edgec.metrics import evaluate
from edgec.passes.quantize_weights import QuantizeWeights, pack_int4_blocks
from edgec.quantization.observe import run
from edgec.testing.models import conv_bn_relu, mlp


# int4 in blocks of 32, symmetric: about 21 dB a layer on Gaussian weights; two layers.
@pytest.mark.parametrize("bits,max_ratio,min_sqnr", [(8, 0.27, 35), (4, 0.16, 14)])
def test_mlp_weights_shrink(bits, max_ratio, min_sqnr):
    proto = mlp(batch=2, sizes=(256, 256, 10))
    model = load(proto)
    result = run_pass(QuantizeWeights(bits=bits), model)
    q = export_model(model)
    weight_bytes = (256 * 256 + 256 * 10) * 4
    assert result.stats["bytes-before"] == weight_bytes
    assert result.stats["bytes-after"] <= max_ratio * weight_bytes
    assert len(q.SerializeToString()) <= (max_ratio + 0.03) * len(proto.SerializeToString())
    ops = [n.op_type for n in model.graph]
    assert ops.count("MatMulNBits" if bits == 4 else "DequantizeLinear") == 2
    x = {"input": np.random.default_rng(0).standard_normal((2, 256)).astype(np.float32)}
    assert evaluate("sqnr", 0, run(proto, x), run(q, x)).value >= min_sqnr


def test_conv_weights_int8_axis0():
    proto = conv_bn_relu()
    model = load(proto)
    run_pass(QuantizeWeights(bits=4, min_elements=1), model)  # Conv stays int8 at opset 17
    dq = next(n for n in model.graph if n.op_type == "DequantizeLinear")
    assert dq.attr("axis") == 0 and dq.inputs[1].const.dims == (8,)
    assert len(dq.inputs) == 2  # symmetric: the zero point (0) is DequantizeLinear's default
    x = {"input": np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    assert evaluate("sqnr", 0, run(proto, x), run(export_model(model), x)).value >= 35


def test_int4_packing_round_trips():
    w = np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32)
    packed, scales = pack_int4_blocks(w, 16)
    assert packed.shape == (3, 3, 8) and scales.shape == (9,)
    codes = np.stack([packed & 15, packed >> 4], axis=-1).reshape(3, 3, 16).astype(np.float32) - 8
    recon = (codes * scales.reshape(3, 3, 1)).reshape(3, 48).T[:40]
    assert np.abs(recon - w).max() <= scales.max() / 2 + 1e-6
