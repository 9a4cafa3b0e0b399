"""dce: dead nodes and unread initializers go, in every graph; interface stays."""

import numpy as np
from onnx import TensorProto, helper


from edgec.testing.passes import assert_same_outputs, conformance, load, op_types, parse, run_pass
from edgec.passes.dce import DeadCodeElimination

DCE = DeadCodeElimination()


def test_removes_dead_chain_transitively():
    proto = parse("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2,3] x) => (float[2,3] y) <float[3] w = {1.0, 2.0, 3.0}, float[3] unused = {0.0, 0.0, 0.0}> {
            a = Relu(x)
            dead1 = Mul(a, w)
            dead2 = Tanh(dead1)
            dead3 = Sigmoid(dead2)
            y = Neg(a)
        }
    """)
    model = load(proto)
    result = run_pass(DCE, model)
    assert op_types(model) == ["Relu", "Neg"]
    assert set(model.graph.initializers) == set()
    assert result.stats == {"nodes-removed": 3, "initializers-removed": 2}
    assert_same_outputs(proto, model, rtol=0, atol=0)  # nothing computed changes
    assert not run_pass(DCE, model).modified


def test_keeps_initializer_that_is_graph_input_and_graph_outputs():
    proto = parse("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x, float[2] bias) => (float[2] y, float[2] c) <float[2] bias = {1.0, 2.0}, float[2] c = {3.0, 4.0}> {
            y = Relu(x)
        }
    """)
    model = load(proto)
    assert not run_pass(DCE, model).modified
    assert set(model.graph.initializers) == {"bias", "c"}


def test_subgraph_uses_keep_outer_nodes_alive_and_dead_inner_nodes_go():
    then_branch = helper.make_graph(
        [helper.make_node("Add", ["a", "a"], ["t"]),
         helper.make_node("Mul", ["a", "b"], ["inner_dead"])],
        "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])])
    else_branch = helper.make_graph(
        [helper.make_node("Identity", ["b"], ["e"])], "else", [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])])
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["a"]),
         helper.make_node("Neg", ["x"], ["b"]),  # read only inside the branches
         helper.make_node("Sigmoid", ["x"], ["outer_dead"]),
         helper.make_node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    model = load(proto)
    result = run_pass(DCE, model)
    assert op_types(model) == ["Relu", "Neg", "If"]
    then = model.graph.nodes[-1].attr("then_branch")
    assert [n.op_type for n in then] == ["Add"]
    assert result.stats["nodes-removed"] == 2
    for cond in (True, False):
        feed = {"x": np.array([1.0, -2.0], np.float32), "cond": np.array(cond)}
        assert_same_outputs(proto, model, rtol=0, atol=0, feed=feed)


def test_dead_if_releases_what_its_branches_read():
    branch = helper.make_graph([helper.make_node("Neg", ["a"], ["t"])], "b", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])])
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["a"]),
         helper.make_node("If", ["cond"], ["unused"], then_branch=branch, else_branch=branch),
         helper.make_node("Tanh", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))
    run_pass(DCE, model)
    assert op_types(model) == ["Tanh"]


def test_keeps_model_local_functions():
    proto = parse("""
        <ir_version: 8, opset_import: ["" : 17, "local" : 1]>
        g (float[2] x) => (float[2] y) {
            y = Relu(x)
        }
        <domain: "local", opset_import: ["" : 17]>
        Unused (a) => (b) {
            b = Neg(a)
        }
    """)
    model = load(proto)
    assert not run_pass(DCE, model).modified
    assert len(model.functions) == 1


def test_onnx_node_cases():
    conformance(DCE)
