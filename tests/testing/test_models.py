"""The test and benchmark models: valid ONNX, runnable in onnxruntime, as described."""

from __future__ import annotations

import collections
import pathlib
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgec.testing import models

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "spec_examples"


def _static_shape(value: onnx.ValueInfoProto) -> list[int]:
    return [dim.dim_value for dim in value.type.tensor_type.shape.dim]


def _run(model: onnx.ModelProto, seed: int = 1) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    feeds = {value.name: rng.standard_normal(_static_shape(value)).astype(np.float32) for value in model.graph.input}
    return session.run(None, feeds)


def _check_and_run(model: onnx.ModelProto) -> list[np.ndarray]:
    assert model.ir_version == models.IR_VERSION
    assert [(o.domain, o.version) for o in model.opset_import] == [("", models.OPSET)]
    onnx.checker.check_model(model, full_check=True)
    outputs = _run(model)
    for value, array in zip(model.graph.output, outputs):
        assert list(array.shape) == _static_shape(value), value.name
        assert np.isfinite(array).all(), value.name
    return outputs


def _op_counts(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(node.op_type for node in model.graph.node)


@pytest.fixture(scope="module")
def resnet18() -> onnx.ModelProto:
    return models.resnet18()


def test_resnet18_topology_and_numerics(resnet18):
    ops = _op_counts(resnet18)
    # torchvision: 20 convs (17 3x3/7x7 + 3 downsample), one BN each, 8 residual Adds.
    assert ops == {
        "Conv": 20,
        "BatchNormalization": 20,
        "Relu": 17,
        "Add": 8,
        "MaxPool": 1,
        "GlobalAveragePool": 1,
        "Flatten": 1,
        "Gemm": 1,
    }
    params = sum(int(np.prod(t.dims)) for t in resnet18.graph.initializer if "running" not in t.name)
    assert 11_680_000 < params < 11_700_000  # torchvision reports 11,689,512
    (logits,) = _check_and_run(resnet18)
    assert logits.shape == (1, 1000)
    # Calibrated BN statistics keep the logits at a trained network's scale.
    assert 0.05 < logits.std() < 10


def test_mobilenet_v2_topology_and_numerics():
    model = models.mobilenet_v2()
    ops = _op_counts(model)
    assert ops["Conv"] == 52 and ops["BatchNormalization"] == 52 and ops["Clip"] == 35 and ops["Add"] == 10
    depthwise = [
        node
        for node in model.graph.node
        if node.op_type == "Conv" and next(a.i for a in node.attribute if a.name == "group") > 1
    ]
    assert len(depthwise) == 17
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer if "running" not in t.name and "relu6" not in t.name)
    assert params == 3_504_872  # torchvision's count
    (logits,) = _check_and_run(model)
    assert logits.shape == (1, 1000)
    assert 0.05 < logits.std() < 10


def test_transformer_encoder_ops_and_numerics():
    model = models.transformer_encoder(layers=2, seq=32)
    ops = _op_counts(model)
    assert ops["LayerNormalization"] == 4 and ops["Softmax"] == 2 and ops["Erf"] == 2
    assert ops["MatMul"] == 2 * 8  # q, k, v, out, 2 FFN, scores, context
    (hidden,) = _check_and_run(model)
    assert hidden.shape == (1, 32, 256)
    # LayerNormalization last: every position is normalized.
    assert np.allclose(hidden.std(axis=-1), 1.0, atol=0.15)


def test_transformer_encoder_default_shape():
    model = models.transformer_encoder()
    assert _static_shape(model.graph.input[0]) == [1, 128, 256]
    assert _static_shape(model.graph.output[0]) == [1, 128, 256]
    _check_and_run(model)


@pytest.mark.parametrize("num_nodes", [1, 20, 100, 1_000, 10_000])
def test_scaling_model_node_count(num_nodes):
    model = models.scaling_model(num_nodes)
    assert abs(len(model.graph.node) - num_nodes) <= 0.05 * num_nodes
    (output,) = _check_and_run(model)
    assert np.abs(output).max() <= 1.0


def test_scaling_model_gives_the_passes_work():
    model = models.scaling_model(1_000)
    ops = _op_counts(model)
    assert ops["Constant"] > 0 and ops["MatMul"] > 0
    produced = [out for node in model.graph.node for out in node.output]
    read = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    assert any(name not in read for name in produced), "no dead branch for DCE"
    signatures = collections.Counter((node.op_type, tuple(node.input)) for node in model.graph.node if node.input)
    assert any(count > 1 for count in signatures.values()), "no duplicated subexpression for CSE"


def test_scaling_model_is_cheap_to_build():
    start = time.perf_counter()
    model = models.scaling_model(10_000)
    elapsed = time.perf_counter() - start
    assert len(model.graph.node) == 10_000
    assert elapsed < 1.0, f"building 10k nodes took {elapsed:.2f}s"


@pytest.mark.slow
def test_scaling_model_50k_stays_finite():
    (output,) = _check_and_run(models.scaling_model(50_000))
    assert np.abs(output).max() <= 1.0


@pytest.mark.parametrize("build", [models.conv_bn_relu, models.mlp])
def test_tiny_models(build):
    _check_and_run(build())


def test_same_seed_same_bytes():
    assert models.conv_bn_relu(seed=3).SerializeToString() == models.conv_bn_relu(seed=3).SerializeToString()
    assert models.scaling_model(200, seed=3).SerializeToString() == models.scaling_model(200, seed=3).SerializeToString()
    assert models.mlp(seed=3).SerializeToString() != models.mlp(seed=4).SerializeToString()


def test_batchnorm_statistics_are_not_trivial(resnet18):
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in resnet18.graph.initializer}
    for node in resnet18.graph.node:
        if node.op_type == "BatchNormalization":
            mean, var = weights[node.input[3]], weights[node.input[4]]
            assert np.abs(mean).max() > 1e-3 and np.abs(var - 1).max() > 1e-2, node.name


def test_digits_example_accuracy():
    model = onnx.load(EXAMPLES / "digits.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8 and model.opset_import[0].version == 17
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert "BatchNormalization" in _op_counts(model)
    inputs = np.load(EXAMPLES / "data" / "digits.npz")["input"]
    labels = np.load(EXAMPLES / "data" / "digits-labels.npz")["labels"]
    assert inputs.dtype == np.float32 and inputs.shape[1:] == (1, 8, 8) and labels.dtype == np.int64
    session = ort.InferenceSession(str(EXAMPLES / "digits.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": inputs})
    accuracy = float((logits.argmax(axis=1) == labels).mean())
    assert accuracy >= 0.95, accuracy


def test_digits_calibration_data():
    calibration = np.load(EXAMPLES / "data" / "digits-calibration.npz")["input"]
    assert calibration.dtype == np.float32 and calibration.shape == (200, 1, 8, 8)
    assert 0.0 <= calibration.min() and calibration.max() <= 1.0
