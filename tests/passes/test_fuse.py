"""fuse as a pass: stats per pattern, options, If bodies, the benchmark models, attention,
idempotence and a sample of ONNX node cases. Numerics against onnxruntime at
rtol = atol = 1e-4 (folding into weights reorders float arithmetic)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fuse_testing import ATOL, RTOL

from edgec.passes.fuse import DEFAULT_PATTERNS, PATTERNS, Fuse
from edgec.passmgr import OptionError, run_pipeline
from edgec.testing import models
from edgec.testing.passes import assert_same_outputs, conformance, load, random_weights, run_pass

FUSE = Fuse()


def test_stats_count_every_selected_pattern():
    model = load(models.conv_bn_relu())
    result = run_pass(FUSE, model)
    assert set(result.stats) == set(DEFAULT_PATTERNS) == set(PATTERNS)
    assert result.stats["conv-bn"] == 1 and sum(result.stats.values()) == 1
    result = run_pass(Fuse(patterns=("pad-conv",)), load(models.conv_bn_relu()))
    assert result.stats == {"pad-conv": 0} and not result.modified


def test_unknown_pattern_is_an_option_error():
    with pytest.raises(OptionError, match="unknown pattern 'conv-relu'"):
        Fuse(patterns=("conv-relu",))
    with pytest.raises(OptionError, match="unknown pattern 'attn'"):
        Fuse(exclude=("attn",))


def test_pipeline_text_selects_patterns():
    proto = models.conv_bn_relu()
    model = load(proto)
    run = run_pipeline(model, "fuse{patterns=conv-bn},dce", verify_each=True)
    assert [n.op_type for n in model.graph] == ["Conv", "Relu"]
    assert run.records[0].stats == {"conv-bn": 1}
    assert_same_outputs(proto, model, rtol=RTOL, atol=ATOL)


def _if_model() -> onnx.ModelProto:
    """Conv + BN in both branches of an If; the weights live in the main graph."""
    w, s = random_weights(4, 2, 3, 3), np.random.default_rng(1).uniform(0.5, 1.5, 4).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for n, a in
             [("w", w), ("s", s), ("t", s - 1), ("m", s / 10), ("v", s * 2)]]

    def branch(name, eps):
        return helper.make_graph(
            [helper.make_node("Conv", ["x", "w"], [f"{name}_c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", [f"{name}_c", "s", "t", "m", "v"], [f"{name}_y"], epsilon=eps)],
            name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [1, 4, 5, 5])])

    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=branch("then", 1e-5), else_branch=branch("else", 1e-2))],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5]),
              helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 5])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return proto


def test_patterns_inside_if_branches():
    proto = _if_model()
    model = load(proto)
    result = run_pass(FUSE, model)
    assert result.stats["conv-bn"] == 2
    for branch in model.graph.nodes[0].subgraphs():
        assert [n.op_type for n in branch] == ["Conv"]
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 5)).astype(np.float32)
    for cond in (True, False):
        assert_same_outputs(proto, model, rtol=RTOL, atol=ATOL, feed={"x": x, "cond": np.array(cond)})
    assert not any(run_pass(FUSE, model).stats.values())


@pytest.mark.parametrize("make, fused", [
    (models.resnet18, {"conv-bn": 20}),
    (models.mobilenet_v2, {"conv-bn": 52}),
])
def test_cnn_models_lose_every_batchnorm(make, fused):
    proto = make()
    model = load(proto)
    result = run_pass(FUSE, model)
    assert {k: v for k, v in result.stats.items() if v} == fused
    assert "BatchNormalization" not in {n.op_type for n in model.graph}
    assert_same_outputs(proto, model, rtol=RTOL, atol=ATOL)
    assert not any(run_pass(FUSE, model).stats.values())


def test_transformer_attention_and_gelu_with_raised_opset():
    proto = models.transformer_encoder(seq=16, hidden=32, heads=4, layers=2, ffn=64)
    model = load(proto)
    run_pipeline(model, "infer-shapes")
    result = run_pass(FUSE, model)
    assert result.stats["attention"] == 2 and result.stats["gelu-erf"] == 0  # opset 17
    assert_same_outputs(proto, model, rtol=RTOL, atol=ATOL)
    # Reshape's definition changed at opset 19, so before attention fusion the opset
    # could not rise; after it no Reshape is left and every remaining op is the same
    # from 17 to 20: the opset rises and GELU becomes one op.
    result = run_pass(Fuse(raise_opset=20), model)
    assert result.stats["opset-raised"] == 1 and result.stats["gelu-erf"] == 2
    assert_same_outputs(proto, model, rtol=RTOL, atol=ATOL)


def test_attention_left_out_when_not_selected():
    proto = models.transformer_encoder(seq=16, hidden=32, heads=4, layers=1, ffn=64)
    model = load(proto)
    run_pipeline(model, "infer-shapes")
    patterns = tuple(p for p in DEFAULT_PATTERNS if p != "attention")
    result = run_pass(Fuse(patterns=patterns), model)
    assert not any(result.stats.values())
    assert "Attention" not in {n.op_type for n in model.graph}


def test_default_pipeline_on_digits_and_mlp():
    proto = onnx.load("spec_examples/digits.onnx")
    model = load(proto)
    run_pipeline(model, verify_each=True)
    assert [n.op_type for n in model.graph].count("BatchNormalization") == 0
    feed = {"input": np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)}
    assert_same_outputs(proto, model, rtol=RTOL, atol=ATOL, feed=feed)


def test_node_cases_sample():
    conformance(FUSE)
