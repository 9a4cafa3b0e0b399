"""fold-constants: constant regions become initializers, evaluated by onnxruntime's kernels.

Folding runs onnxruntime's own kernels on the same values, so outputs are compared
exactly (rtol=0, atol=0) unless a test says otherwise.
"""

import time

import numpy as np
from onnx import TensorProto, helper


from edgec.testing.passes import assert_same_outputs, conformance, load, op_types, parse, run_pass
from edgec.frontend import export_model, import_model
from edgec.passes.cse import CommonSubexpressionElimination
from edgec.passes.dce import DeadCodeElimination
from edgec.passes.fold_constants import FoldConstants
from edgec.passes.infer_shapes import InferShapes
from edgec.passmgr.base import PassContext
from edgec.testing.models import scaling_model

FOLD = FoldConstants()


def test_folds_constant_chain_and_constant_nodes():
    proto = parse("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2,3] x) => (float[2,3] y) <float[3] w = {1.0, 2.0, 3.0}> {
            c = Constant <value = float[3] {0.5, 0.25, 2.0}> ()
            s = Add(c, w)
            t = Sqrt(s)
            y = Mul(x, t)
        }
    """)
    model = load(proto)
    result = run_pass(FOLD, model)
    assert op_types(model) == ["Mul"]
    t = model.graph.nodes[0].inputs[1]
    assert t.name == "t" and t.is_constant()
    np.testing.assert_array_equal(t.const.numpy(), np.sqrt(np.array([1.5, 2.25, 5.0], np.float32)))
    assert set(model.graph.initializers) == {"t"}  # w and c are dead and gone
    assert result.stats["nodes-folded"] == 3
    assert result.stats["bytes-added"] == 12 and result.stats["bytes-removed"] == 24
    assert_same_outputs(proto, model, rtol=0, atol=0)
    assert not run_pass(FOLD, model).modified


def test_folded_graph_output_keeps_its_name():
    proto = parse("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x) => (float[2] y, float[2] k, float[2] c) {
            c = Constant <value = float[2] {1.0, 2.0}> ()
            k = Neg(c)
            y = Add(x, k)
        }
    """)
    model = load(proto)
    run_pass(FOLD, model)
    assert op_types(model) == ["Add"]
    assert [v.name for v in model.graph.outputs] == ["y", "k", "c"]
    assert_same_outputs(proto, model, rtol=0, atol=0)
    assert not run_pass(FOLD, model).modified


def test_initializer_that_is_a_graph_input_is_not_folded():
    proto = parse("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x, float[2] scale) => (float[2] y) <float[2] scale = {2.0, 3.0}> {
            s2 = Mul(scale, scale)
            y = Mul(x, s2)
        }
    """)
    model = load(proto)
    assert not run_pass(FOLD, model).modified
    assert op_types(model) == ["Mul", "Mul"]
    feed = {"x": np.ones(2, np.float32), "scale": np.array([5.0, 7.0], np.float32)}
    assert_same_outputs(proto, model, rtol=0, atol=0, feed=feed)


def test_size_cap_keeps_big_expand_and_tile_unfolded():
    proto = parse("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1] x) => (float[2048,1024] y, float[32] z) <float[1] c = {1.5}, int64[2] big = {2048, 1024}, int64[1] r = {32}> {
            e = Expand(c, big)
            y = Add(e, x)
            t = Tile(c, r)
            z = Add(t, x)
        }
    """)
    model = load(proto)
    result = run_pass(FoldConstants(), model)
    # 2 Mi elements: over the default cap of 1 Mi; Tile's 32 elements fold.
    assert op_types(model) == ["Expand", "Add", "Add"]
    assert result.stats["too-large"] == 1
    model = load(proto)
    run_pass(FoldConstants(max_size=16), model)
    assert op_types(model) == ["Expand", "Add", "Tile", "Add"]
    assert_same_outputs(proto, model, rtol=0, atol=0)


def test_big_output_folds_when_it_replaces_as_many_bytes():
    weight = np.arange(24, dtype=np.float32).reshape(4, 6)
    proto = parse(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2,4] x) => (float[2,6] y) <float[6,4] w = {{{", ".join(str(v) for v in weight.T.ravel())}}}> {{
            wt = Transpose(w)
            y = MatMul(x, wt)
        }}
    """)
    model = load(proto)
    run_pass(FoldConstants(max_size=4), model)
    assert op_types(model) == ["MatMul"]  # 24 elements > 4, but w (24 elements) dies
    assert_same_outputs(proto, model, rtol=0, atol=0)


def test_unsupported_node_among_foldable_ones():
    proto = parse("""
        <ir_version: 8, opset_import: ["" : 17, "com.microsoft" : 1, "custom" : 1]>
        g (float[3] x) => (float[3] y, float[3] z, float[3] w, float[3] v, float[4] u) <float[3] c = {1.0, 2.0, 3.0}, int64[1] bad = {4}> {
            a = Neg(c)
            weird = com.microsoft.NoSuchOperator(a)
            custom_out = custom.Thing(a)
            broken = Reshape(a, bad)
            b = Abs(a)
            y = Add(x, b)
            z = Add(x, a)
            w = Add(x, weird)
            v = Add(x, custom_out)
            u = Identity(broken)
        }
    """)
    model = load(proto)
    result = run_pass(FOLD, model)
    # NoSuchOperator and the failing Reshape are left alone; everything else folds.
    assert op_types(model) == ["NoSuchOperator", "Thing", "Reshape", "Add", "Add", "Add", "Add", "Identity"]
    assert result.stats["not-evaluable"] == 3  # with the Identity reading the Reshape
    y_node, z_node = model.graph.nodes[3:5]
    np.testing.assert_array_equal(y_node.inputs[1].const.numpy(), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(z_node.inputs[1].const.numpy(), [-1.0, -2.0, -3.0])
    assert not run_pass(FOLD, model).modified


def test_non_deterministic_ops_are_not_folded():
    proto = parse("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x) => (float[2] y) {
            r = RandomNormal <shape = [2], dtype = 1> ()
            y = Add(x, r)
        }
    """)
    model = load(proto)
    assert not run_pass(FOLD, model).modified


def test_shape_of_statically_shaped_value():
    proto = parse("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N,3,4] x) => (float[N,12] y) {
            h = Relu(x)
            full = Shape(h)
            tail = Shape <start = 1> (h)
            n = Constant <value_ints = [0]> ()
            prod = ReduceProd <keepdims = 1> (tail)
            shape = Concat <axis = 0> (n, prod)
            y = Reshape(h, shape)
        }
    """)
    model = load(proto)
    run_pass(InferShapes(), model)
    run_pass(FOLD, model)
    # Shape(h) reports N: only the static slice [3, 4] folds, and with it the new shape.
    assert op_types(model) == ["Relu", "Shape", "Reshape"]
    np.testing.assert_array_equal(model.graph.nodes[-1].inputs[1].const.numpy(), [0, 12])
    assert_same_outputs(proto, model, rtol=0, atol=0)


def _if_model():
    then_branch = helper.make_graph(
        [helper.make_node("Constant", [], ["k"], value=helper.make_tensor("kv", TensorProto.FLOAT, [2], [1.0, 2.0])),
         helper.make_node("Add", ["k", "w"], ["kw"]),  # w: an initializer of the main graph
         helper.make_node("Mul", ["x", "kw"], ["t"])],
        "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])])
    else_branch = helper.make_graph(
        [helper.make_node("Constant", [], ["e"], value=helper.make_tensor("ev", TensorProto.FLOAT, [2], [5.0, 6.0]))],
        "else", [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])])
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [helper.make_tensor("w", TensorProto.FLOAT, [2], [0.5, 0.25])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_folds_inside_if_branches_with_outer_constants():
    proto = _if_model()
    model = load(proto)
    run_pass(FOLD, model)
    if_node = model.graph.nodes[0]
    then, other = if_node.attr("then_branch"), if_node.attr("else_branch")
    assert [n.op_type for n in then] == ["Mul"]
    assert len(other) == 0 and [v.name for v in other.outputs] == ["e"]
    np.testing.assert_array_equal(then.nodes[0].inputs[1].const.numpy(), [1.5, 2.25])
    assert "w" not in model.graph.initializers  # read only by the folded Add
    for cond in (True, False):
        feed = {"x": np.array([3.0, 4.0], np.float32), "cond": np.array(cond)}
        assert_same_outputs(proto, model, rtol=0, atol=0, feed=feed)
    assert not run_pass(FOLD, model).modified


def test_default_pipeline_on_10k_nodes_is_fast():
    proto = scaling_model(10_000)
    start = time.perf_counter()
    model = import_model(proto, check=False)
    ctx = PassContext()
    while any([p.run(model, ctx).modified for p in (FoldConstants(), CommonSubexpressionElimination(),
                                                    DeadCodeElimination())]):
        pass
    InferShapes().run(model, ctx)
    out = export_model(model)
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, f"{elapsed:.2f} s"
    assert len(model.graph) < 10_000 * 0.6
    assert_same_outputs(proto, out, rtol=1e-6, atol=1e-6)  # CSE/DCE only remove work


def test_onnx_node_cases():
    conformance(FOLD)
