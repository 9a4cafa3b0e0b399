"""legalize-tvm and its passes (expand-functions, lower-castlike, bind-dims): each rewrite
checked against onnxruntime on the model before it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgec.testing.passes import assert_same_outputs, load, op_types, parse, run_ort, run_pass
from edgec.frontend import export_model, import_model
from edgec.passes.legalize_tvm import (BindDims, ExpandFunctions, LegalizeTVM, LowerCastLike,
                                       GuardBitShift, LowerIsInf, MaxAtLowest, WidenHalf)
from edgec.passmgr.base import PassContext
from edgec.testing import models


def _run(p, model, ctx=None):
    """Run ``p``; the model it hands back (a pass may build a new one) or the same one."""
    result = p.run(model, ctx or PassContext())
    return result, (result.model if result.model is not None else model)


def test_lower_castlike_matches_onnxruntime():
    proto = parse("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2,3] x, int64[1] like) => (int64[2,3] y) {
            y = CastLike(x, like)
        }""")
    model = load(proto)
    result = run_pass(LowerCastLike(), model)
    assert result.modified and op_types(model) == ["Cast"]
    assert next(iter(model.graph)).attr("to") == TensorProto.INT64
    feed = {"x": np.array([[1.5, -2.7, 3.2], [0.0, 9.9, -0.4]], np.float32),
            "like": np.array([7], np.int64)}
    assert_same_outputs(proto, model, rtol=0, atol=0, feed=feed)


def test_lower_castlike_leaves_an_unknown_type_alone():
    graph = helper.make_graph([helper.make_node("CastLike", ["x", "like"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
                               helper.make_tensor_value_info("like", TensorProto.UNDEFINED, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = import_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                         check=False)
    assert not LowerCastLike().run(model, PassContext()).modified


def _attention_model() -> onnx.ModelProto:
    # ONNX Attention (opset 23), 3-D inputs with the heads in the hidden axis and a causal mask.
    graph = helper.make_graph(
        [helper.make_node("Attention", ["q", "k", "v"], ["y"], q_num_heads=2, kv_num_heads=2,
                          is_causal=1)], "attention",
        [helper.make_tensor_value_info("q", TensorProto.FLOAT, [2, 4, 8]),
         helper.make_tensor_value_info("k", TensorProto.FLOAT, [2, 6, 8]),
         helper.make_tensor_value_info("v", TensorProto.FLOAT, [2, 6, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 8])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    proto.ir_version = 10
    return proto


def test_expand_functions_expands_onnx_attention_and_matches_onnxruntime():
    proto = _attention_model()
    result, model = _run(ExpandFunctions(), load(proto))
    assert result.modified and result.stats["nodes-expanded"] == 1
    assert "Attention" not in op_types(model) and {"MatMul", "Softmax"} <= set(op_types(model))
    assert_same_outputs(proto, model, rtol=1e-5, atol=1e-6)


def test_expand_functions_leaves_other_ops_and_domains_alone():
    proto = _attention_model()
    result, model = _run(ExpandFunctions(ops=("Swish",)), load(proto))
    assert not result.modified and op_types(model) == ["Attention"]


def test_layer_normalization_with_statistics_outputs_is_expanded():
    graph = helper.make_graph(
        [helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["y", "mean", "inv"], axis=1)],
        "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4]),
               helper.make_tensor_value_info("scale", TensorProto.FLOAT, [4]),
               helper.make_tensor_value_info("bias", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4]),
         helper.make_tensor_value_info("mean", TensorProto.FLOAT, [3, 1]),
         helper.make_tensor_value_info("inv", TensorProto.FLOAT, [3, 1])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    result, model = _run(ExpandFunctions(), load(proto))
    assert result.modified and "LayerNormalization" not in op_types(model)
    assert_same_outputs(proto, model, rtol=1e-5, atol=1e-6)
    # With only Y used, TVM's own converter is right: nothing to expand.
    single = onnx.ModelProto()
    single.CopyFrom(proto)
    del single.graph.node[0].output[1:]
    del single.graph.output[1:]
    assert not ExpandFunctions().run(load(single), PassContext()).modified


def test_bind_dims_binds_the_symbolic_batch_only():
    proto = parse("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N,S,4] x) => (float[N,S,4] y) {
            y = Relu(x)
        }""")
    model = load(proto)
    assert BindDims(batch=3).run(model, PassContext()).modified
    assert model.graph.inputs[0].shape.dims == (3, "S", 4)
    assert not BindDims(batch=3).run(model, PassContext()).modified


def test_bind_dims_takes_the_spec_batch():
    class Latency:
        batch = 4

    class Budget:
        latency = Latency()

    class Spec:
        budget = Budget()

    model = load(models.exporter_style_cnn())
    BindDims().run(model, PassContext(spec=Spec()))
    assert model.graph.inputs[0].shape.dims[0] == 4


def test_legalize_tvm_folds_exporter_shape_chains_and_matches_onnxruntime():
    proto = models.exporter_style_cnn()
    model = load(proto)
    BindDims(batch=2).run(model, PassContext())
    result, model = _run(LegalizeTVM(), model)
    assert result.modified
    kinds = op_types(model)
    assert not {"Shape", "Gather", "Concat", "Slice", "CastLike"} & set(kinds), kinds
    reshape = next(n for n in model.graph if n.op_type == "Reshape")
    resize = next(n for n in model.graph if n.op_type == "Resize")
    assert reshape.inputs[1].is_constant() and resize.inputs[3].is_constant()
    assert [list(v.shape.dims) for v in model.graph.outputs] == [[2, 10]]
    feed = {"image": np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)}
    assert_same_outputs(proto, model, rtol=1e-5, atol=1e-6, feed=feed)


def test_legalize_tvm_binds_the_batch_only_with_a_spec():
    model = load(models.exporter_style_cnn())
    _, model = _run(LegalizeTVM(), model)
    assert model.graph.inputs[0].shape.dims[0] == "N"  # no spec: nothing to bind to
    assert "Reshape" in op_types(model)


def test_legalize_tvm_output_passes_the_verifier_and_exports():
    proto = _attention_model()
    result, model = _run(LegalizeTVM(), load(proto))
    run_pass(LowerCastLike(), model)  # the verifier runs after it
    exported = export_model(model)
    onnx.checker.check_model(exported)
    feed = {name: np.random.default_rng(1).standard_normal(shape).astype(np.float32)
            for name, shape in (("q", (2, 4, 8)), ("k", (2, 6, 8)), ("v", (2, 6, 8)))}
    np.testing.assert_allclose(run_ort(exported, feed)["y"], run_ort(proto, feed)["y"], rtol=1e-5, atol=1e-6)


def test_the_passes_are_declared_as_entry_points():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    for name, cls in (("legalize-tvm", "LegalizeTVM"), ("expand-functions", "ExpandFunctions"),
                      ("lower-castlike", "LowerCastLike"), ("bind-dims", "BindDims"),
                      ("max-at-lowest", "MaxAtLowest"), ("widen-half", "WidenHalf"),
                      ("lower-isinf", "LowerIsInf"), ("guard-bitshift", "GuardBitShift")):
        assert f'{name} = "edgec.passes.legalize_tvm:{cls}"' in text


@pytest.mark.parametrize("cls", [LegalizeTVM, ExpandFunctions, LowerCastLike, BindDims, MaxAtLowest,
                                 WidenHalf, LowerIsInf, GuardBitShift])
def test_each_pass_fits_the_contract(cls):
    from edgec.passmgr.registry import contract_problem

    assert contract_problem(cls.name, cls) is None
    assert cls.summary() and "legal" in (cls.__doc__ or "").lower() or cls is LegalizeTVM


def test_max_at_lowest_matches_onnxruntime_on_fully_masked_rows():
    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 18]>
        g (float[2,3] x) => (bool[2,1] masked) {
            m = ReduceMax <keepdims = 1> (x, axes)
            masked = Equal(m, ninf)
        }""")
    proto.graph.initializer.extend([
        onnx.numpy_helper.from_array(np.array([-1], np.int64), "axes"),
        onnx.numpy_helper.from_array(np.array(-np.inf, np.float32), "ninf")])
    model = import_model(proto, check=False)
    result = run_pass(MaxAtLowest(), model)
    assert result.modified and op_types(model) == ["ReduceMax", "LessOrEqual"]
    feed = {"x": np.array([[1.0, -np.inf, 2.0], [-np.inf] * 3], np.float32)}
    assert_same_outputs(proto, model, rtol=0, atol=0, feed=feed)
    assert run_ort(export_model(model), feed)["masked"].tolist() == [[False], [True]]


def test_widen_half_matches_onnxruntime():
    proto = parse("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float16[4,64] a, float16[64,3] b) => (float16[4,3] y) {
            y = MatMul(a, b)
        }""")
    model = load(proto)
    result = run_pass(WidenHalf(), model)
    assert result.modified and op_types(model) == ["Cast", "Cast", "MatMul", "Cast"]
    rng = np.random.default_rng(0)
    feed = {"a": rng.standard_normal((4, 64)).astype(np.float16),
            "b": rng.standard_normal((64, 3)).astype(np.float16)}
    np.testing.assert_allclose(run_ort(export_model(model), feed)["y"].astype(np.float32),
                               run_ort(proto, feed)["y"].astype(np.float32), rtol=2e-3, atol=2e-3)
    assert not WidenHalf().run(model, PassContext()).modified


def test_the_tvm_default_pipeline_ends_with_legalize_tvm():
    from edgec.passmgr import default_pipeline, default_registry
    from edgec.planner.search import backend_pipeline

    registry = default_registry()
    added = LegalizeTVM.name not in registry.names()
    if added:  # an editable install whose metadata predates the pass
        assert backend_pipeline("tvm").split(",")[-1] != "legalize-tvm"
        registry.register(LegalizeTVM)
    try:
        assert backend_pipeline("tvm").endswith(",legalize-tvm")
        assert "legalize-tvm" not in backend_pipeline("ort") and "legalize-tvm" not in default_pipeline()
    finally:
        if added:
            registry._entries.pop(LegalizeTVM.name, None)


@pytest.mark.parametrize("negative,positive", [(0, 1), (1, 0), (0, 0)])
def test_lower_isinf_matches_onnxruntime(negative, positive):
    proto = parse(f"""
        <ir_version: 8, opset_import: ["" : 20]>
        g (float[6] x) => (bool[6] y) {{
            y = IsInf <detect_negative = {negative}, detect_positive = {positive}> (x)
        }}""")
    model = load(proto)
    assert run_pass(LowerIsInf(), model).modified
    feed = {"x": np.array([-np.inf, np.inf, 0.0, np.nan, -1.0, 3.0], np.float32)}
    assert_same_outputs(proto, model, rtol=0, atol=0, feed=feed)
    assert not LowerIsInf().run(model, PassContext()).modified


@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
def test_guard_bitshift_matches_onnxruntime(direction):
    proto = parse(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (uint32[4] x, uint32[4] s) => (uint32[4] y) {{
            y = BitShift <direction = "{direction}"> (x, s)
        }}""")
    model = load(proto)
    assert run_pass(GuardBitShift(), model).modified
    # In-range amounts only: onnxruntime's own result for the others is the machine's.
    feed = {"x": np.array([1, 8, 255, 4096], np.uint32), "s": np.array([0, 3, 7, 31], np.uint32)}
    assert_same_outputs(proto, model, rtol=0, atol=0, feed=feed)
    out = run_ort(export_model(model), {"x": np.array([1, 8, 255, 4096], np.uint32),
                                         "s": np.array([32, 33, 100, 1], np.uint32)})["y"]
    assert out.tolist()[:3] == [0, 0, 0]


def test_guard_bitshift_leaves_constant_in_range_shifts_alone():
    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (uint8[2] x) => (uint8[2] y) <uint8[2] s = {1, 7}> {
            y = BitShift <direction = "LEFT"> (x, s)
        }""")
    assert not GuardBitShift().run(load(proto), PassContext()).modified


def test_elu_is_expanded_only_when_not_float32():
    half = parse("""
        <ir_version: 10, opset_import: ["" : 22]>
        g (float16[5] x) => (float16[5] y) {
            y = Elu <alpha = 2.0> (x)
        }""")
    result, model = _run(ExpandFunctions(), load(half))
    assert result.modified and "Elu" not in op_types(model)
    feed = {"x": np.array([-2.0, -0.5, 0.0, 0.5, 3.0], np.float16)}
    assert_same_outputs(half, model, rtol=1e-3, atol=1e-3, feed=feed)
    single = parse("""
        <ir_version: 10, opset_import: ["" : 22]>
        g (float[5] x) => (float[5] y) {
            y = Elu <alpha = 2.0> (x)
        }""")
    assert not ExpandFunctions().run(load(single), PassContext()).modified
