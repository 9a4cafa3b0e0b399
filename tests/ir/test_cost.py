"""edgec.ir.cost: FLOPs (multiply-add = 2) and bytes per node, checked against hand counts."""

import numpy as np
import onnx.parser

from edgec.frontend import import_model
from edgec.ir.cost import model_cost, node_cost, parameter_count


def _model(text: str, weights: tuple[str, ...] = ()):
    """Parse ``text``; the graph inputs named in ``weights`` become initializers (ones)."""
    proto = onnx.parser.parse_model(text)
    for vi in [vi for vi in proto.graph.input if vi.name in weights]:
        t = vi.type.tensor_type
        dims = [d.dim_value for d in t.shape.dim]
        array = np.ones(dims, dtype=onnx.helper.tensor_dtype_to_np_dtype(t.elem_type))
        proto.graph.initializer.append(onnx.numpy_helper.from_array(array, vi.name))
        proto.graph.input.remove(vi)
    onnx.checker.check_model(proto)
    return import_model(proto)


def _by_op(cost):
    return {n.op_type: n for n in cost.nodes}


def test_conv_3x3_and_depthwise_and_bias():
    model = _model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1,8,16,16] x, float[16,8,3,3] w, float[16] b, float[16,1,3,3] dw) => (float[1,16,8,8] y) {
            c = Conv <pads = [1, 1, 1, 1], strides = [2, 2]> (x, w, b)
            y = Conv <pads = [1, 1, 1, 1], group = 16> (c, dw)
        }
    """, ("w", "b", "dw"))
    cost = model_cost(model)
    conv, dw = cost.nodes
    # 1*16*8*8 outputs, each 8*3*3 multiply-adds (2 FLOPs), plus one bias add.
    assert conv.flops == 1024 * 72 * 2 + 1024
    assert conv.weight_bytes == (16 * 8 * 9 + 16) * 4
    assert conv.bytes_read == 8 * 16 * 16 * 4 and conv.bytes_written == 1024 * 4
    assert dw.flops == 1024 * 9 * 2  # depthwise: one input channel per output
    assert cost.flops == conv.flops + dw.flops and cost.ops_by_precision == {"f32": cost.flops}
    assert cost.exact and cost.unmodelled_ops == []


def test_gemm_batched_matmul_and_elementwise():
    model = _model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[4,32] a, float[2,3,5,7] p, float[2,3,7,6] q, float[10,32] w, float[10] c) => (float[4,10] y, float[2,3,5,6] z) {
            y0 = Gemm <transB = 1> (a, w, c)
            y = Relu(y0)
            z0 = MatMul(p, q)
            z = Softmax(z0)
        }
    """, ("w", "c"))
    ops = _by_op(model_cost(model))
    assert ops["Gemm"].flops == 2 * 4 * 10 * 32 + 40
    assert ops["MatMul"].flops == 2 * (2 * 3) * 5 * 6 * 7
    assert ops["Relu"].flops == 40 and ops["Softmax"].flops == 5 * 180


def test_pool_norm_reduce_resize_and_views():
    model = _model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1,4,8,8] x, float[4] s, float[4] t, float[4] mu, float[4] v) => (float[1,4,16,16] r, float[1,256] f, float[1,4,1,1] m, float[1,4,4,4] p) <float[4] sc = {1.0, 1.0, 2.0, 2.0}> {
            bn = BatchNormalization(x, s, t, mu, v)
            p = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (bn)
            m = ReduceMean <axes = [2, 3]> (bn)
            f = Flatten(bn)
            r = Resize <mode = "linear"> (bn, , sc)
        }
    """, ("s", "t", "mu", "v"))
    ops = _by_op(model_cost(model))
    assert ops["BatchNormalization"].flops == 2 * 256
    assert ops["MaxPool"].flops == 64 * 4
    assert ops["ReduceMean"].flops == 256
    assert ops["Flatten"].flops == 0 and ops["Flatten"].bytes == 0  # a view
    assert ops["Resize"].flops == 2 * 4 * 1024  # 2 resized axes: 4 taps per output


def test_qdq_and_integer_ops_count_by_precision():
    model = _model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1,16] x, int8[16,8] wq) => (float[1,8] y, int32[1,8] yi) <float ws = {0.1}, int8 wz = {0}, float xs = {0.05}, uint8 xz = {128}> {
            xq = QuantizeLinear(x, xs, xz)
            xd = DequantizeLinear(xq, xs, xz)
            wd = DequantizeLinear(wq, ws, wz)
            y = MatMul(xd, wd)
            yi = MatMulInteger(xq, wq)
        }
    """, ("wq",))
    cost = model_cost(model)
    ops = _by_op(cost)
    assert ops["MatMul"].ops == {"i8": 2 * 8 * 16} and ops["MatMul"].flops == 0
    assert ops["MatMulInteger"].ops == {"u8": 2 * 8 * 16}
    assert cost.int_ops == 2 * 2 * 8 * 16
    assert cost.ops_by_precision["f32"] == cost.flops > 0


def test_unknown_op_is_flagged_and_symbolic_dims_guessed():
    model = _model("""
        <ir_version: 8, opset_import: ["" : 17, "custom" : 1]>
        g (float[N,8] x) => (float[N,8] y) {
            h = custom.Mystery(x)
            y = Relu(x)
        }
    """)
    cost = model_cost(model, dim_values={"N": 4})
    mystery, relu = cost.nodes
    assert not mystery.modelled and mystery.flops == 0 and cost.unmodelled_ops == ["Mystery"]
    assert relu.flops == 32 and not relu.exact and not cost.exact


def test_real_model_totals():
    from edgec.testing.models import resnet18
    model = import_model(resnet18())
    cost = model_cost(model)
    # torchvision ResNet-18: 1.82 G multiply-adds; convs + fc dominate.
    assert 3.6e9 < cost.flops < 3.7e9
    assert parameter_count(model) == 11_699_112
    assert np.isclose(cost.weight_bytes, 4 * parameter_count(model), rtol=0.01)


def test_contrib_attention_counts_its_gemms_and_softmax():
    from edgec.passmgr import run_pipeline
    from edgec.testing import models

    model = import_model(models.transformer_encoder(seq=16, hidden=32, heads=4, layers=1,
                                                    ffn=64))
    run_pipeline(model)  # fuse-attention writes com.microsoft::Attention
    attention = [n for n in model_cost(model).nodes if n.op_type == "Attention"]
    assert len(attention) == 1 and attention[0].modelled
    tokens, hidden, heads, seq = 16, 32, 4, 16
    expected = (2 * tokens * hidden * 3 * hidden + tokens * 3 * hidden
                + 4 * seq * seq * hidden + 5 * heads * seq * seq)
    assert attention[0].flops == expected
    assert model_cost(model).unmodelled_ops == []
