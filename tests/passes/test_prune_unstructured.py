"""prune-unstructured: the smallest-magnitude weights become zero; shapes unchanged.

Sparsity 0 must be exact (rtol=0, atol=0). Pruned models are compared with a numpy
reference of the same masking, through onnxruntime: rtol=1e-5, atol=1e-6.
"""

import io
import zipfile

import numpy as np
import pytest


from edgec.testing.passes import assert_same_outputs, conformance, load, parse, run_ort, run_pass
from edgec.frontend import export_model
from edgec.passes.prune_unstructured import PruneUnstructured
from edgec.passmgr.base import OptionError
from edgec.testing import models

TEXT = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,4] x) => (float[1,2] y) <float[4,3] w1 = {1.0, -2.0, 0.5, 0.1, 8.0, -0.2, 3.0, -4.0, 0.3, -0.05, 6.0, 7.0},
                                         float[3,2] w2 = {0.01, -0.02, 5.0, 0.04, -9.0, 2.0},
                                         float[3] b = {0.001, 0.002, 0.003}> {
        h = MatMul(x, w1)
        hb = Add(h, b)
        y = MatMul(hb, w2)
    }
"""


def _weights(model):
    return {name: v.const.numpy() for name, v in model.graph.initializers.items()}


def test_global_threshold_over_all_layers():
    proto = parse(TEXT)
    model = load(proto)
    result = run_pass(PruneUnstructured(sparsity=0.5, ops=("MatMul",)), model)
    w = _weights(model)
    # 18 weights, 9 smallest |w| zeroed: 0.01 0.02 0.04 0.05 0.1 0.2 0.3 0.5 1.0
    np.testing.assert_array_equal(w["w1"], np.array([[0, -2, 0, 0], [8, 0, 3, -4], [0, 0, 6, 7]], np.float32).reshape(4, 3))
    np.testing.assert_array_equal(w["w2"], np.array([[0, 0], [5, 0], [-9, 2]], np.float32))
    np.testing.assert_array_equal(w["b"], np.array([0.001, 0.002, 0.003], np.float32))  # a bias stays
    assert result.stats["sparsity"] == 0.5 and result.stats["weights-zeroed"] == 9
    feed = {"x": np.array([[1.0, -1.0, 2.0, 0.5]], np.float32)}
    expected = (feed["x"] @ w["w1"] + w["b"]) @ w["w2"]
    got = run_ort(export_model(model), feed)["y"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not run_pass(PruneUnstructured(sparsity=0.5, ops=("MatMul",)), model).modified


def test_per_layer_sparsity():
    model = load(parse(TEXT))
    result = run_pass(PruneUnstructured(sparsity=0.5, scope="per-layer"), model)
    w = _weights(model)
    assert np.count_nonzero(w["w1"] == 0) == 6 and np.count_nonzero(w["w2"] == 0) == 3
    assert result.stats["sparsity.w1"] == 0.5 and result.stats["sparsity.w2"] == 0.5
    assert result.stats["sparsity"] == 0.5


@pytest.fixture(scope="module")
def resnet18():
    return models.resnet18()


def test_zero_sparsity_is_exact_and_shapes_never_change(resnet18):
    proto = models.conv_bn_relu()
    model = load(proto)
    assert not run_pass(PruneUnstructured(sparsity=0.0), model).modified
    assert_same_outputs(proto, model, rtol=0, atol=0)
    model = load(resnet18)
    before = {n: v.const.dims for n, v in model.graph.initializers.items()}
    result = run_pass(PruneUnstructured(sparsity=0.5), model)
    assert {n: v.const.dims for n, v in model.graph.initializers.items()} == before
    assert result.stats["sparsity"] == 0.5 and result.stats["layers"] == 21


def test_zeros_compress():
    model = load(models.mlp(sizes=(256, 512, 256, 10)))
    def zipped(m):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("model.onnx", export_model(m).SerializeToString())
        return len(buf.getvalue())
    dense = zipped(model)
    run_pass(PruneUnstructured(sparsity=0.5), model)
    assert zipped(model) < 0.8 * dense


def test_bad_options_fail_at_construction():
    with pytest.raises(OptionError, match="sparsity"):
        PruneUnstructured(sparsity=1.5)
    with pytest.raises(OptionError, match="scope"):
        PruneUnstructured(scope="layer")
    with pytest.raises(OptionError, match="cannot prune Relu"):
        PruneUnstructured(ops=("Conv", "Relu"))


def test_conformance_cases_still_pass():
    conformance(PruneUnstructured())
