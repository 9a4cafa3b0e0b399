"""convert-fp16: interface types unchanged, weights halved, fp32 islands kept, outputs
within a stated tolerance of the fp32 model in onnxruntime."""

import numpy as np

from edgec.testing.passes import load, parse, run_pass
from edgec.frontend import export_model
from edgec.ir.types import DataType
from edgec.passes.convert_fp16 import ConvertFp16
from edgec.quantization.observe import run
from edgec.testing.models import conv_bn_relu, transformer_encoder


def test_interface_stays_fp32_and_outputs_close():
    proto = transformer_encoder(seq=8, hidden=32, heads=2, layers=1, ffn=64)
    model = load(proto)
    result = run_pass(ConvertFp16(), model)
    q = export_model(model)
    assert q.graph.input[0].type.tensor_type.elem_type == 1 and q.graph.output[0].type.tensor_type.elem_type == 1
    assert q.graph.output[0].name == "last_hidden_state"
    assert result.stats["initializers-fp16"] > 0
    x = {"hidden_states": np.random.default_rng(0).standard_normal((2, 8, 32)).astype(np.float32)}
    ref, out = run(proto, x)[0], run(q, x)[0]
    np.testing.assert_allclose(out, ref, atol=2e-2, rtol=2e-2)  # fp16 has ~3 significant digits
    assert len(q.SerializeToString()) < 0.7 * len(proto.SerializeToString())  # tiny model: names and value_info weigh


def test_overflowing_and_keep_fp32_ops_stay_fp32():
    proto = parse("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N,4] x) => (float[N,4] y) <float[4] k = {1000.0, 1000.0, 1000.0, 1000.0}> {
            a = Mul(x, k)
            b = Mul(a, k)
            c = Exp(x)
            y = Add(b, c)
        }
    """)
    model = load(proto)
    samples = {"x": np.full((4, 4), 1.0, np.float32)}
    from edgec.passmgr.base import PassContext
    result = ConvertFp16().run(model, PassContext(calibration_data=samples))
    types = {n.op_type + str(i): n.outputs[0].dtype for i, n in enumerate(model.graph) if n.op_type != "Cast"}
    assert result.stats["overflow-islands"] == 2  # b = 1e6 and y overflow fp16
    assert [t for k, t in types.items() if k.startswith("Exp")] == [DataType.FLOAT]
    x = {"x": np.random.default_rng(0).uniform(0.5, 1.0, (3, 4)).astype(np.float32)}
    np.testing.assert_allclose(run(export_model(model), x)[0], run(proto, x)[0], rtol=2e-3)


def test_conv_model_halves():
    proto = conv_bn_relu()
    model = load(proto)
    run_pass(ConvertFp16(), model)
    conv = next(n for n in model.graph if n.op_type == "Conv")
    assert conv.inputs[1].const.dtype == DataType.FLOAT16
    x = {"input": np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    np.testing.assert_allclose(run(export_model(model), x)[0], run(proto, x)[0], atol=2e-2)
