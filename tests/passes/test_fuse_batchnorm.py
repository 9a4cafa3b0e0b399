"""fuse: BatchNormalization folded into Conv, ConvTranspose and Gemm (fuse_batchnorm).

Outputs are compared with onnxruntime before and after at rtol = atol = 1e-4: folding
reorders float arithmetic.
"""

import numpy as np

from fuse_testing import fuse

from edgec.testing.passes import initializer_text, node_text, op_types, random_weights

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'


def bn_params(c: int, seed: int = 1) -> str:
    rng = np.random.default_rng(seed)
    return ", ".join([initializer_text("s", rng.uniform(0.5, 1.5, c).astype(np.float32)),
                      initializer_text("t", rng.normal(0, 0.1, c).astype(np.float32)),
                      initializer_text("m", rng.normal(0, 0.1, c).astype(np.float32)),
                      initializer_text("v", rng.uniform(0.5, 2, c).astype(np.float32))])


def test_conv_bn_folds_into_weights_and_bias():
    model, _ = fuse(f"""{HEADER}
        g (float[1,2,6,6] x) => (float[1,4,6,6] y) <{initializer_text('w', random_weights(4, 2, 3, 3))}, {initializer_text('b', random_weights(4))}, {bn_params(4)}> {{
            c = Conv <pads = [1,1,1,1]> (x, w, b)
            y = BatchNormalization <epsilon = 0.001> (c, s, t, m, v)
        }}""", expect={"conv-bn": 1})
    assert node_text(model) == "%y: f32[1,4,6,6] = Conv(%x, %w_bn, %conv.bias_bn) {pads = [1, 1, 1, 1]}"


def test_conv_bn_with_groups_folds_per_output_channel():
    model, _ = fuse(f"""{HEADER}
        g (float[1,4,6,6] x) => (float[1,4,6,6] y) <{initializer_text('w', random_weights(4, 2, 3, 3))}, {bn_params(4)}> {{
            c = Conv <group = 2, pads = [1,1,1,1]> (x, w)
            y = BatchNormalization (c, s, t, m, v)
        }}""", expect={"conv-bn": 1})
    assert op_types(model) == ["Conv"]


def test_convtranspose_bn_folds_with_group_1_only():
    model, _ = fuse(f"""{HEADER}
        g (float[1,2,4,4] x) => (float[1,3,5,5] y) <{initializer_text('w', random_weights(2, 3, 2, 2))}, {bn_params(3)}> {{
            c = ConvTranspose (x, w)
            y = BatchNormalization (c, s, t, m, v)
        }}""", expect={"convtranspose-bn": 1})
    assert op_types(model) == ["ConvTranspose"]
    # group = 2: output channel o reads weight [g·Cin/g.., o mod (Cout/g)]; not folded.
    model, _ = fuse(f"""{HEADER}
        g (float[1,2,4,4] x) => (float[1,4,5,5] y) <{initializer_text('w', random_weights(2, 2, 2, 2))}, {bn_params(4)}> {{
            c = ConvTranspose <group = 2> (x, w)
            y = BatchNormalization (c, s, t, m, v)
        }}""", expect={})
    assert op_types(model) == ["ConvTranspose", "BatchNormalization"]


def test_gemm_bn_folds_along_n_with_trans_b_and_beta():
    model, _ = fuse(f"""{HEADER}
        g (float[3,5] a) => (float[3,4] y) <{initializer_text('w', random_weights(4, 5))}, {initializer_text('c', random_weights(4, seed=3))}, {bn_params(4)}> {{
            h = Gemm <transB = 1, alpha = 0.5, beta = 2.0> (a, w, c)
            y = BatchNormalization (h, s, t, m, v)
        }}""", expect={"gemm-bn": 1})
    assert node_text(model) == ("%y: f32[3,4] = Gemm(%a, %w_bn, %gemm.bias_bn) "
                                "{transB = 1, alpha = 0.5, beta = 1.0}")


def test_bn_with_non_constant_parameters_is_not_folded():
    rng = np.random.default_rng(0)
    params = ", ".join(initializer_text(n, rng.uniform(0.5, 1.5, 4).astype(np.float32)) for n in "tmv")
    model, _ = fuse(f"""{HEADER}
        g (float[1,2,6,6] x, float[4] s) => (float[1,4,4,4] y) <{initializer_text('w', random_weights(4, 2, 3, 3))}, {params}> {{
            c = Conv (x, w)
            y = BatchNormalization (c, s, t, m, v)
        }}""", expect={})
    assert op_types(model) == ["Conv", "BatchNormalization"]


def test_conv_output_read_elsewhere_is_not_folded():
    model, _ = fuse(f"""{HEADER}
        g (float[1,2,6,6] x) => (float[1,4,4,4] y, float[1,4,4,4] c) <{initializer_text('w', random_weights(4, 2, 3, 3))}, {bn_params(4)}> {{
            c = Conv (x, w)
            y = BatchNormalization (c, s, t, m, v)
        }}""", expect={})
    assert op_types(model) == ["Conv", "BatchNormalization"]


def test_conv_with_weights_from_a_graph_input_is_not_folded():
    model, _ = fuse(f"""{HEADER}
        g (float[1,2,6,6] x, float[4,2,3,3] w) => (float[1,4,4,4] y) <{bn_params(4)}> {{
            c = Conv (x, w)
            y = BatchNormalization (c, s, t, m, v)
        }}""", expect={})
    assert op_types(model) == ["Conv", "BatchNormalization"]
