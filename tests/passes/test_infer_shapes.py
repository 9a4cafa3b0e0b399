"""infer-shapes: ONNX's inferred types land on the IR's values, never losing what is known.

Types do not change what a model computes: outputs are compared exactly (rtol=0, atol=0).
"""

import numpy as np
import onnx
from onnx import TensorProto, helper


from edgec.testing.passes import assert_same_outputs, conformance, load, parse, run_pass
from edgec.frontend import export_model, load_model
from edgec.ir.shape_inference import merge_types
from edgec.ir.types import DataType, Shape, TensorType
from edgec.passes.infer_shapes import InferShapes
from edgec.passmgr.base import PassContext

INFER = InferShapes()


def _types(model):
    return {o.name: str(o.type) for n in model.graph for o in n.outputs}


def test_types_intermediate_values_with_data_propagation():
    proto = parse("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N,3,4] x) => (float[N,12] y) {
            h = Relu(x)
            s = Shape <start = 1> (h)
            p = ReduceProd <keepdims = 1> (s)
            z = Constant <value_ints = [-1]> ()
            shape = Concat <axis = 0> (z, p)
            y = Reshape(h, shape)
            t = Transpose <perm = [1, 0]> (y)
        }
    """)
    model = load(proto)
    for n in model.graph:
        for o in n.outputs:
            if not o.is_graph_output():
                o.type = None
    result = run_pass(INFER, model)
    assert result.modified
    types = _types(model)
    assert types["h"] == "f32[N,3,4]"
    assert types["shape"] == "i64[2]"
    assert types["t"] == "f32[12,N]"  # the Reshape's [-1, 12] came from data propagation
    assert_same_outputs(proto, model, rtol=0, atol=0)
    assert not run_pass(INFER, model).modified


def test_never_loses_known_dims():
    known = TensorType(DataType.FLOAT, Shape((2, "B", None)))
    inferred = TensorType(DataType.FLOAT, Shape(("N", 3, 4)))
    assert merge_types(known, inferred) == TensorType(DataType.FLOAT, Shape((2, 3, 4)))
    assert merge_types(known, TensorType(DataType.FLOAT, Shape(None))) == known
    assert merge_types(known, TensorType(DataType.FLOAT, Shape((1, 2)))) == known
    assert merge_types(known, TensorType(DataType.INT64, Shape((2, 3, 4)))).dtype is DataType.FLOAT
    assert merge_types(None, inferred) == inferred

    proto = parse("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N,3] x) => (float[N,3] y) {
            h = Relu(x)
            y = Neg(h)
        }
    """)
    model = load(proto)
    h = model.graph.nodes[0].output
    h.type = TensorType(DataType.FLOAT, Shape((2, 3)))  # known from elsewhere
    run_pass(INFER, model)
    assert str(h.type) == "f32[2,3]"


def test_types_values_inside_if_branches():
    def branch(name, op):
        return helper.make_graph([helper.make_node(op, ["x"], [f"{name}_a"]),
                                  helper.make_node("Unsqueeze", [f"{name}_a", "axes"], [f"{name}_out"])],
                                 name, [], [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, ["a", "b", "c"])])
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=branch("then", "Abs"),
                          else_branch=branch("else", "Neg"))],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b", "c"])],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [0])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    model = load(proto)
    run_pass(INFER, model)
    then = model.graph.nodes[0].attr("then_branch")
    # ONNX keeps a graph output's declared symbolic dims; intermediates get inferred types.
    assert [str(n.output.type) for n in then] == ["f32[2,5]", "f32[a,b,c]"]
    for cond in (True, False):
        feed = {"x": np.ones((2, 5), np.float32), "cond": np.array(cond)}
        assert_same_outputs(proto, model, rtol=0, atol=0, feed=feed)


def test_external_data_is_not_loaded(tmp_path):
    weight = np.arange(64 * 32, dtype=np.float32).reshape(64, 32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "M"])],
        [onnx.numpy_helper.from_array(weight, "w")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = str(tmp_path / "model.onnx")
    onnx.save_model(proto, path, save_as_external_data=True, location="model.onnx.data",
                    size_threshold=0)
    # check=False: onnx.checker on an in-memory proto looks for the data file relative
    # to the working directory (a frontend issue, reported).
    model = load_model(path, check=False)
    w = model.graph.initializers["w"]
    assert w.const.external is not None
    run_pass(INFER, model)
    assert not w.const.is_loaded
    assert str(model.graph.nodes[0].output.type) == "f32[B,32]"


def test_inference_failure_warns_and_leaves_model_unchanged(monkeypatch):
    proto = parse("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[3] x) => (float[3] y) {
            h = Relu(x)
            y = Neg(h)
        }
    """)
    model = load(proto)

    def broken(*args, **kwargs):
        raise onnx.shape_inference.InferenceError("[ShapeInferenceError] something odd")
    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", broken)
    ctx = PassContext()
    before = export_model(model).SerializeToString()
    result = INFER.run(model, ctx)
    assert not result.modified
    assert export_model(model).SerializeToString() == before
    [warning] = ctx.diagnostics.diagnostics
    assert not warning.is_error and "shape inference failed" in warning.message


def test_onnx_node_cases():
    # Inference may refine types further on a second run (a Loop body's types feed its
    # outputs'), so idempotence is tested above on plain graphs only.
    conformance(INFER, idempotent=False)
