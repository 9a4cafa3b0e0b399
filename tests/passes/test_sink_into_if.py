"""sink-into-if: what follows an If whose output shape depends on the branch moves into both
branches, up to values of one shape; checked against onnxruntime on the model before it,
for each branch (exact: the same ops on the same values)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgec.ir.shape_inference import infer_types
from edgec.passes.legalize_tvm import LegalizeTVM, SinkIntoIf
from edgec.passmgr.base import PassContext
from edgec.testing.passes import assert_same_outputs, load, op_types, run_pass


def _ints(name: str, values) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(values, np.int64)))


def _framing_if(output: str = "framed") -> onnx.NodeProto:
    """Silero VAD's framing: every second sample when ``rate == 16000``, else all of them."""
    then_branch = helper.make_graph(
        [_ints("starts", [0]), _ints("ends", [2 ** 62]), _ints("axes", [1]), _ints("steps", [2]),
         helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["decimated"])],
        "then_branch", [], [helper.make_tensor_value_info("decimated", TensorProto.FLOAT, None)])
    else_branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["as_is"])],
        "else_branch", [], [helper.make_tensor_value_info("as_is", TensorProto.FLOAT, None)])
    return helper.make_node("If", ["is_16k"], [output], then_branch=then_branch, else_branch=else_branch)


def _model(tail: list[onnx.NodeProto], outputs: list[tuple[str, list]], initializers=()) -> onnx.ModelProto:
    nodes = [helper.make_node("Equal", ["rate", "sixteen_k"], ["is_16k"]), _framing_if(), *tail]
    graph = helper.make_graph(
        nodes, "framing",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16]),
         helper.make_tensor_value_info("rate", TensorProto.INT64, [])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in outputs],
        [numpy_helper.from_array(np.array(16000, np.int64), "sixteen_k"), *initializers])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(batch: int = 3):
    x = np.random.default_rng(0).standard_normal((batch, 16)).astype(np.float32)
    return [{"x": x, "rate": np.array(rate, np.int64)} for rate in (16000, 8000)]


def _vad_like() -> onnx.ModelProto:
    """Reflect Pad → strided Conv → Relu → ReduceMean over time (the shapes that depend on
    the branch), then a Gemm on [batch, 4] (the same whichever branch)."""
    rng = np.random.default_rng(1)
    tail = [
        _ints("unsqueeze_axes", [1]),
        helper.make_node("Unsqueeze", ["framed", "unsqueeze_axes"], ["channel"]),
        _ints("pads", [0, 0, 2, 0, 0, 2]),
        helper.make_node("Pad", ["channel", "pads"], ["padded"], mode="reflect"),
        helper.make_node("Conv", ["padded", "basis"], ["frames"], kernel_shape=[4], strides=[2]),
        helper.make_node("Relu", ["frames"], ["relu"]),
        helper.make_node("ReduceMean", ["relu"], ["pooled"], axes=[2], keepdims=0),
        helper.make_node("Gemm", ["pooled", "fc"], ["logits"]),
    ]
    weights = [numpy_helper.from_array(rng.standard_normal((4, 1, 4)).astype(np.float32), "basis"),
               numpy_helper.from_array(rng.standard_normal((4, 2)).astype(np.float32), "fc")]
    return _model(tail, [("logits", ["batch", 2])], weights)


def _ops(model) -> list[str]:
    """The main graph's op types, Constant nodes aside."""
    return [op for op in op_types(model) if op != "Constant"]


def _inferred(proto: onnx.ModelProto):
    model = load(proto)
    infer_types(model)
    return model


def test_the_branch_dependent_tail_moves_into_both_branches_and_matches_onnxruntime():
    proto = _vad_like()
    model = _inferred(proto)
    result = run_pass(SinkIntoIf(), model)
    assert result.modified and result.stats == {"ifs": 1, "nodes-moved": 5}
    # Unsqueeze, Pad, Conv, Relu and ReduceMean went; the Gemm reads the If's [batch, 4].
    assert _ops(model) == ["Equal", "If", "Gemm"]
    (if_node,) = [n for n in model.graph if n.op_type == "If"]
    assert if_node.outputs[0].type.shape.dims == ("batch", 4)
    for branch in if_node.subgraphs():
        assert [n.op_type for n in branch][-5:] == ["Unsqueeze", "Pad", "Conv", "Relu", "ReduceMean"]
    assert "basis" in model.graph.initializers  # read by both branches, not copied
    for feed in _feeds():
        assert_same_outputs(proto, model, rtol=0, atol=0, feed=feed)


def test_values_of_known_shape_handed_back_become_if_outputs():
    """A diamond (x - sum(x)) and a known-shape value used both inside and outside: all
    that reads the branch-dependent shape moves; the If returns both values."""
    tail = [
        _ints("sum_axes", [1]),
        helper.make_node("ReduceSum", ["framed", "sum_axes"], ["total"], keepdims=1),
        helper.make_node("Sub", ["framed", "total"], ["centred"]),
        helper.make_node("Mul", ["centred", "centred"], ["squares"]),
        helper.make_node("ReduceMean", ["squares"], ["variance"], axes=[1], keepdims=1),
        helper.make_node("Add", ["variance", "total"], ["summary"]),
    ]
    proto = _model(tail, [("summary", ["batch", 1]), ("total", ["batch", 1])])
    model = _inferred(proto)
    result = run_pass(SinkIntoIf(), model)
    assert result.modified and result.stats["nodes-moved"] == 4
    assert _ops(model) == ["Equal", "If", "Add"]
    (if_node,) = [n for n in model.graph if n.op_type == "If"]
    assert len(if_node.outputs) == 2
    assert [v.name for v in model.graph.outputs] == ["summary", "total"]
    for feed in _feeds():
        assert_same_outputs(proto, model, rtol=0, atol=0, feed=feed)


def test_an_if_output_of_known_shape_read_outside_stays_an_output():
    """A second If output, [batch, 16] in both branches, read after the If: the new If
    returns it beside the moved tail's result."""
    proto = _vad_like()
    (if_proto,) = [n for n in proto.graph.node if n.op_type == "If"]
    for attribute in if_proto.attribute:
        branch = attribute.g
        branch.node.append(helper.make_node("Neg", ["x"], [f"negated_{branch.name}"]))
        branch.output.append(helper.make_tensor_value_info(f"negated_{branch.name}", TensorProto.FLOAT, None))
    if_proto.output.append("negated")
    proto.graph.node.append(helper.make_node("Relu", ["negated"], ["relu_of_negated"]))
    proto.graph.output.append(helper.make_tensor_value_info("relu_of_negated", TensorProto.FLOAT, ["batch", 16]))
    model = _inferred(proto)
    assert run_pass(SinkIntoIf(), model).modified
    (if_node,) = [n for n in model.graph if n.op_type == "If"]
    assert len(if_node.outputs) == 2 and _ops(model) == ["Equal", "If", "Gemm", "Relu"]
    for feed in _feeds():
        assert_same_outputs(proto, model, rtol=0, atol=0, feed=feed)


def test_an_output_whose_shape_depends_on_the_branch_stops_it():
    """The graph returns the padded frames: their length is the branch's, whatever moves."""
    tail = [_ints("pads", [0, 1, 0, 1]),
            helper.make_node("Pad", ["framed", "pads"], ["padded"], mode="reflect")]
    model = _inferred(_model(tail, [("padded", ["batch", None])]))
    before = op_types(model)
    assert not run_pass(SinkIntoIf(), model).modified
    assert op_types(model) == before


def test_an_if_whose_branches_agree_in_shape_is_left_alone():
    then_branch = helper.make_graph([helper.make_node("Neg", ["x"], ["negated"])], "then_branch", [],
                                    [helper.make_tensor_value_info("negated", TensorProto.FLOAT, None)])
    else_branch = helper.make_graph([helper.make_node("Identity", ["x"], ["as_is"])], "else_branch", [],
                                    [helper.make_tensor_value_info("as_is", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Equal", ["rate", "sixteen_k"], ["is_16k"]),
             helper.make_node("If", ["is_16k"], ["framed"], then_branch=then_branch, else_branch=else_branch),
             helper.make_node("Relu", ["framed"], ["y"])]
    graph = helper.make_graph(
        nodes, "agree",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16]),
         helper.make_tensor_value_info("rate", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])],
        [numpy_helper.from_array(np.array(16000, np.int64), "sixteen_k")])
    model = _inferred(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert not run_pass(SinkIntoIf(), model).modified


def test_legalize_tvm_runs_it():
    proto = _vad_like()
    result = LegalizeTVM().run(load(proto), PassContext())
    model = result.model
    assert result.stats["sink-into-if.ifs"] == 1 and op_types(model)[-1] == "Gemm"
    for feed in _feeds():
        assert_same_outputs(proto, model, rtol=0, atol=0, feed=feed)


def test_it_fits_the_pass_contract_and_is_an_entry_point():
    from pathlib import Path

    from edgec.passmgr.registry import contract_problem

    assert contract_problem(SinkIntoIf.name, SinkIntoIf) is None
    assert "legal" in SinkIntoIf.__doc__.lower()
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert 'sink-into-if = "edgec.passes.legalize_tvm:SinkIntoIf"' in text


def test_an_if_inside_a_branch_gets_the_tail_too():
    """The framing If nested in another If's branch: the outer If's tail moves into its
    branches, where it follows the inner If, and from there into the inner If's branches.
    Before, TVM's importer met the inner If's output of unknown shape (its build failed)."""
    inner = _framing_if("inner_framed")
    outer_then = helper.make_graph([inner], "outer_then", [],
                                   [helper.make_tensor_value_info("inner_framed", TensorProto.FLOAT, None)])
    outer_else = helper.make_graph([helper.make_node("Identity", ["x"], ["whole"])], "outer_else", [],
                                   [helper.make_tensor_value_info("whole", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Equal", ["rate", "sixteen_k"], ["is_16k"]),
             helper.make_node("If", ["framing"], ["framed"], then_branch=outer_then, else_branch=outer_else),
             helper.make_node("Relu", ["framed"], ["relu"]),
             helper.make_node("ReduceMean", ["relu"], ["pooled"], axes=[1], keepdims=0)]
    graph = helper.make_graph(
        nodes, "nested",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16]),
         helper.make_tensor_value_info("rate", TensorProto.INT64, []),
         helper.make_tensor_value_info("framing", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch"])],
        [numpy_helper.from_array(np.array(16000, np.int64), "sixteen_k")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = _inferred(proto)
    result = run_pass(SinkIntoIf(), model)
    assert result.modified and result.stats["ifs"] == 2
    assert _ops(model) == ["Equal", "If"]

    def ifs(g):
        for node in g:
            if node.op_type == "If":
                yield node
            for sub in node.subgraphs():
                yield from ifs(sub)

    assert len(list(ifs(model.graph))) == 2
    for node in ifs(model.graph):
        for out in node.outputs:
            assert out.type.shape is not None and out.type.shape.dims == ("batch",), (node.name, out.type)
    for feed in _feeds():
        for framing in (True, False):
            assert_same_outputs(proto, model, rtol=0, atol=0, feed={**feed, "framing": np.array(framing)})
