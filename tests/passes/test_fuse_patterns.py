"""fuse: Mul/Add into Conv and Gemm, MatMul+Add, Pad into Conv/pooling, shape-op chains,
activations, LayerNorm, QDQ and attention — each with IR text out, onnxruntime numerics
before vs after (rtol = atol = 1e-4) and the cases that must not fire."""

import math

import numpy as np

from fuse_testing import fuse

from edgec.testing.passes import initializer_text, node_text, op_types, random_weights

H17 = '<ir_version: 8, opset_import: ["" : 17]>'
H20 = '<ir_version: 9, opset_import: ["" : 20]>'


# --------------------------------------------------------------------------- Mul/Add into weights

def test_conv_mul_add_fold_per_channel():
    model, _ = fuse(f"""{H17}
        g (float[1,2,5,5] x) => (float[1,3,5,5] y) <{initializer_text('w', random_weights(3, 2, 3, 3))}, {initializer_text('k', random_weights(3, 1, 1, seed=1))}, {initializer_text('c', random_weights(1, 3, 1, 1, seed=2))}> {{
            h = Conv <pads = [1,1,1,1]> (x, w)
            s = Mul(k, h)
            y = Add(s, c)
        }}""", expect={"conv-mul": 1, "conv-add": 1})
    assert node_text(model) == "%y: f32[1,3,5,5] = Conv(%x, %w_scaled, %conv.bias_shifted) {pads = [1, 1, 1, 1]}"


def test_conv_add_across_spatial_axes_is_not_folded():
    model, _ = fuse(f"""{H17}
        g (float[1,2,5,5] x) => (float[1,3,3,3] y) <{initializer_text('w', random_weights(3, 2, 3, 3))}, {initializer_text('c', random_weights(3, 3, seed=2))}> {{
            h = Conv (x, w)
            y = Add(h, c)
        }}""", expect={})
    assert op_types(model) == ["Conv", "Add"]


def test_gemm_mul_and_add_fold_per_column():
    model, _ = fuse(f"""{H17}
        g (float[2,5] a) => (float[2,4] y) <{initializer_text('w', random_weights(5, 4))}, {initializer_text('c', random_weights(4, seed=1))}, {initializer_text('k', random_weights(1, 4, seed=2))}, {initializer_text('d', random_weights(4, seed=3))}> {{
            h = Gemm <beta = 0.5> (a, w, c)
            s = Mul(h, k)
            y = Add(s, d)
        }}""", expect={"gemm-mul": 1, "gemm-add": 1})
    assert op_types(model) == ["Gemm"]


def test_matmul_add_becomes_gemm_only_for_2d_inputs():
    model, _ = fuse(f"""{H17}
        g (float[3,5] a) => (float[3,4] y) <{initializer_text('w', random_weights(5, 4))}, {initializer_text('c', random_weights(4, seed=1))}> {{
            h = MatMul(a, w)
            y = Add(h, c)
        }}""", expect={"matmul-add": 1})
    assert node_text(model) == "%y: f32[3,4] = Gemm(%a, %w, %w_bias)"
    model, _ = fuse(f"""{H17}
        g (float[2,3,5] a) => (float[2,3,4] y) <{initializer_text('w', random_weights(5, 4))}, {initializer_text('c', random_weights(4, seed=1))}> {{
            h = MatMul(a, w)
            y = Add(h, c)
        }}""", expect={})
    assert op_types(model) == ["MatMul", "Add"]


# --------------------------------------------------------------------------- Pad

def test_pad_folds_into_conv_and_average_pool():
    model, _ = fuse(f"""{H17}
        g (float[1,2,5,5] x) => (float[1,3,7,7] y, float[1,2,6,6] z) <{initializer_text('w', random_weights(3, 2, 3, 3))}, {initializer_text('p', np.array([0, 0, 1, 2, 0, 0, 1, 2], np.int64))}, {initializer_text('q', np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))}> {{
            xp = Pad(x, p)
            y = Conv <pads = [1,0,1,0]> (xp, w)
            xq = Pad(x, q)
            z = AveragePool <kernel_shape = [2,2]> (xq)
        }}""", expect={"pad-conv": 1, "pad-pool": 1})
    assert node_text(model) == (
        "%y: f32[1,3,7,7] = Conv(%x, %w) {pads = [2, 2, 2, 2]}\n"
        "%z: f32[1,2,6,6] = AveragePool(%x) {kernel_shape = [2, 2], pads = [1, 1, 1, 1], count_include_pad = 1}")


def test_reflect_pad_nonzero_pad_and_channel_pad_are_not_folded():
    model, _ = fuse(f"""{H17}
        g (float[1,2,5,5] x) => (float[1,3,5,5] y, float[1,3,5,5] z, float[1,3,3,3] u) <{initializer_text('w', random_weights(3, 2, 3, 3))}, {initializer_text('w2', random_weights(3, 3, 3, 3))}, {initializer_text('p', np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))}, {initializer_text('pc', np.array([0, 1, 0, 0, 0, 0, 0, 0], np.int64))}, {initializer_text('one', np.array(1.0, np.float32))}> {{
            a = Pad <mode = "reflect"> (x, p)
            y = Conv (a, w)
            b = Pad(x, p, one)
            z = Conv (b, w)
            c = Pad(x, pc)
            u = Conv (c, w2)
        }}""", expect={})
    assert op_types(model).count("Pad") == 3


def test_zero_pad_is_not_folded_into_max_pool():
    model, _ = fuse(f"""{H17}
        g (float[1,2,5,5] x) => (float[1,2,6,6] y) <{initializer_text('p', np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))}> {{
            a = Pad(x, p)
            y = MaxPool <kernel_shape = [2,2]> (a)
        }}""", expect={})
    assert op_types(model) == ["Pad", "MaxPool"]


# --------------------------------------------------------------------------- shape-op chains

def test_transposes_cancel_and_compose():
    model, _ = fuse(f"""{H17}
        g (float[2,3,4] x) => (float[2,3,4] y, float[3,2,4] z) {{
            a = Transpose <perm = [1,0,2]> (x)
            y0 = Transpose <perm = [1,0,2]> (a)
            y = Relu(y0)
            b = Transpose <perm = [0,2,1]> (x)
            z = Transpose <perm = [2,0,1]> (b)
        }}""", expect={"transpose-chain": 2})
    assert node_text(model) == ("%y: f32[2,3,4] = Relu(%x)\n"
                                "%z: f32[3,2,4] = Transpose(%x) {perm = [1, 0, 2]}")


def test_reshape_chains_merge():
    model, _ = fuse(f"""{H17}
        g (float[2,3,4] x) => (float[4,6] y, float[2,12] z) <{initializer_text('s1', np.array([6, 4], np.int64))}, {initializer_text('s2', np.array([4, 6], np.int64))}, {initializer_text('ax', np.array([0], np.int64))}> {{
            a = Reshape(x, s1)
            y = Reshape(a, s2)
            b = Unsqueeze(x, ax)
            z0 = Squeeze(b, ax)
            z = Flatten(z0)
        }}""", expect={"reshape-chain": 2})
    assert op_types(model) == ["Reshape", "Flatten"]


def test_reshape_copying_dims_from_the_intermediate_is_not_merged():
    model, _ = fuse(f"""{H17}
        g (float[2,3,4] x) => (float[6,4] y) <{initializer_text('s1', np.array([6, 4], np.int64))}, {initializer_text('s2', np.array([0, -1], np.int64))}> {{
            a = Reshape(x, s1)
            y = Reshape(a, s2)
        }}""", expect={})
    assert op_types(model) == ["Reshape", "Reshape"]


# --------------------------------------------------------------------------- activations

def gelu_erf_text(header: str) -> str:
    return f"""{header}
        g (float[2,8] x) => (float[2,8] y) <{initializer_text('r2', np.array(math.sqrt(2), np.float32))}, {initializer_text('one', np.array(1.0, np.float32))}, {initializer_text('half', np.array(0.5, np.float32))}> {{
            d = Div(x, r2)
            e = Erf(d)
            f = Add(e, one)
            g1 = Mul(x, f)
            y = Mul(g1, half)
        }}"""


def test_gelu_erf_becomes_gelu_from_opset_20():
    model, _ = fuse(gelu_erf_text(H20), expect={"gelu-erf": 1})
    assert node_text(model) == "%y: f32[2,8] = Gelu(%x)"
    model, _ = fuse(gelu_erf_text(H17), expect={})
    assert len(op_types(model)) == 5


def test_raise_opset_is_refused_when_an_op_changes_and_done_when_none_does():
    # Div, Erf, Add and Mul keep their definitions from 17 to 20: the opset rises.
    model, stats = fuse(gelu_erf_text(H17), raise_opset=20, expect={"gelu-erf": 1})
    assert model.opset("") == 20 and op_types(model) == ["Gelu"]
    # Reshape changed at opset 19: the opset stays, GELU stays primitive.
    text = gelu_erf_text(H17).replace("y = Mul(g1, half)", "y0 = Mul(g1, half)\n            y = Reshape(y0, s)")
    text = text.replace("<float", f"<{initializer_text('s', np.array([2, 8], np.int64))}, float", 1)
    model, _ = fuse(text, raise_opset=20, expect={})
    assert model.opset("") == 17


def test_gelu_tanh_becomes_gelu_tanh():
    model, _ = fuse(f"""{H20}
        g (float[2,8] x) => (float[2,8] y) <{initializer_text('three', np.array(3.0, np.float32))}, {initializer_text('c', np.array(0.044715, np.float32))}, {initializer_text('k', np.array(math.sqrt(2 / math.pi), np.float32))}, {initializer_text('one', np.array(1.0, np.float32))}, {initializer_text('half', np.array(0.5, np.float32))}> {{
            p = Pow(x, three)
            q = Mul(c, p)
            r = Add(x, q)
            s = Mul(r, k)
            t = Tanh(s)
            u = Add(t, one)
            v = Mul(x, half)
            y = Mul(v, u)
        }}""", expect={"gelu-tanh": 1})
    assert node_text(model) == '%y: f32[2,8] = Gelu(%x) {approximate = "tanh"}'


def test_hardswish_and_silu():
    model, _ = fuse(f"""<ir_version: 8, opset_import: ["" : 14]>
        g (float[2,8] x) => (float[2,8] y, float[2,8] z) <{initializer_text('three', np.array(3.0, np.float32))}, {initializer_text('zero', np.array(0.0, np.float32))}, {initializer_text('six', np.array(6.0, np.float32))}> {{
            a = Add(x, three)
            b = Clip(a, zero, six)
            c = Mul(x, b)
            y = Div(c, six)
            h = HardSigmoid <alpha = 0.16666667, beta = 0.5> (x)
            z = Mul(h, x)
        }}""", expect={"hardswish": 2})
    assert op_types(model) == ["HardSwish", "HardSwish"]
    model, _ = fuse("""<ir_version: 10, opset_import: ["" : 24]>
        g (float[2,8] x) => (float[2,8] y) { s = Sigmoid(x)  y = Mul(x, s) }""", expect={"silu": 1})
    assert node_text(model) == "%y: f32[2,8] = Swish(%x)"
    # HardSigmoid with its default alpha (0.2) is not HardSwish's.
    model, _ = fuse("""<ir_version: 8, opset_import: ["" : 14]>
        g (float[2,8] x) => (float[2,8] y) { h = HardSigmoid(x)  y = Mul(h, x) }""", expect={})


def test_gelu_intermediate_read_elsewhere_is_not_fused():
    text = gelu_erf_text(H20).replace("=> (float[2,8] y)", "=> (float[2,8] y, float[2,8] e)")
    model, _ = fuse(text, expect={})
    assert len(op_types(model)) == 5


# --------------------------------------------------------------------------- LayerNorm

def layer_norm_text(header: str, axes: str = "[-1]") -> str:
    return f"""{header}
        g (float[2,3,8] x) => (float[2,3,8] y) <{initializer_text('two', np.array(2.0, np.float32))}, {initializer_text('eps', np.array(1e-5, np.float32))}, {initializer_text('gamma', random_weights(8, seed=4))}, {initializer_text('beta', random_weights(8, seed=5))}> {{
            m = ReduceMean <axes = {axes}> (x)
            d = Sub(x, m)
            p = Pow(d, two)
            v = ReduceMean <axes = {axes}> (p)
            e = Add(v, eps)
            s = Sqrt(e)
            n = Div(d, s)
            a = Mul(n, gamma)
            y = Add(a, beta)
        }}"""


def test_layer_norm_is_recognised():
    model, _ = fuse(layer_norm_text(H17), expect={"layer-norm": 1})
    assert node_text(model) == ("%y: f32[2,3,8] = LayerNormalization(%x, %layer_norm.scale, %layer_norm.bias) "
                                "{axis = 2, epsilon = 1e-05}")


def test_layer_norm_over_a_middle_axis_is_not_recognised():
    model, _ = fuse(layer_norm_text(H17, axes="[1]").replace("float[8] gamma", "float[8] gamma"), expect={},
                    patterns=("layer-norm",))
    assert "LayerNormalization" not in op_types(model)


# --------------------------------------------------------------------------- QDQ

QDQ_FEED = {"q": np.array([0, 1, 7, 100, 254, 255], np.uint8),
            "x": np.linspace(-1, 1, 6).astype(np.float32)}


def test_dequantize_quantize_pair_cancels_but_not_the_fake_quant_pair():
    model, _ = fuse(f"""{H17}
        g (uint8[6] q, float[6] x) => (uint8[6] y, float[6] z) <{initializer_text('s', np.array(0.05, np.float32))}, {initializer_text('zp', np.array(7, np.uint8))}> {{
            d = DequantizeLinear(q, s, zp)
            r = QuantizeLinear(d, s, zp)
            y = Relu(r)
            a = QuantizeLinear(x, s, zp)
            z = DequantizeLinear(a, s, zp)
        }}""".replace("y = Relu(r)", "y = Identity(r)"), expect={"qdq-cancel": 1}, feed=QDQ_FEED)
    assert op_types(model) == ["Identity", "QuantizeLinear", "DequantizeLinear"]


def test_qdq_with_different_scales_does_not_cancel():
    model, _ = fuse(f"""{H17}
        g (uint8[6] q) => (uint8[6] y) <{initializer_text('s', np.array(0.05, np.float32))}, {initializer_text('t', np.array(0.1, np.float32))}> {{
            d = DequantizeLinear(q, s)
            r = QuantizeLinear(d, t)
            y = Identity(r)
        }}""", expect={}, feed={"q": QDQ_FEED["q"]})
    assert op_types(model) == ["DequantizeLinear", "QuantizeLinear", "Identity"]
