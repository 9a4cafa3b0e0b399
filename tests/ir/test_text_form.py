"""The IR's text form: printer and parser round-trip every model exactly."""

from __future__ import annotations

import importlib
import os
import pkgutil
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.frontend import export_model, import_model
from edgec.ir import Attr, Graph, Node, Shape, TensorType, Value
from edgec.ir.parser import IRSyntaxError, parse_graph, parse_model
from edgec.ir.printer import print_graph, print_model
from edgec.ir.types import DataType
from edgec.ir.verifier import verify_model
from edgec.testing import models
from edgec.testing.protos import assert_protos_equal

A = onnx.AttributeProto


def assert_round_trip(model) -> str:
    """print(parse(print(M))) == print(M), and both export to the same ONNX."""
    text = print_model(model, elide_above=None)
    parsed = parse_model(text)
    assert print_model(parsed, elide_above=None) == text
    assert_protos_equal(export_model(parsed), export_model(model), tensor_numerics=True)
    assert [d for d in verify_model(parsed) if d.is_error] == []
    return text


def rich_model() -> onnx.ModelProto:
    """One model with every construct the text form has to carry."""
    x = helper.make_tensor_value_info("x:0", TensorProto.FLOAT, ["N", None, 3])
    x.type.tensor_type.shape.dim[0].denotation = "DATA_BATCH"
    x.doc_string = "the input"
    helper.set_metadata_props(x, {"unit": "m/s"})
    w_input = helper.make_tensor_value_info("w", TensorProto.FLOAT, [3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", None, 3])
    seq_out = helper.make_tensor_sequence_value_info("seq", TensorProto.INT64, None)
    opt_in = helper.make_value_info("o", helper.make_optional_type_proto(
        helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
    unranked = helper.make_tensor_value_info("u", TensorProto.DOUBLE, None)
    map_type = helper.make_map_type_proto(TensorProto.STRING,
                                          helper.make_tensor_type_proto(TensorProto.FLOAT, [2]))
    nan_payload = np.array([1.5, -0.0, np.inf], np.float32)
    nan_payload = np.concatenate([nan_payload, np.array([0x7FC00001, 0xFFC00000],
                                                        np.uint32).view(np.float32)])
    inits = [
        numpy_helper.from_array(np.array([1.0, 0.1, -2.5e-8], np.float32), "w"),
        numpy_helper.from_array(nan_payload, "nan_payload"),
        numpy_helper.from_array(np.arange(4, dtype=np.int64).reshape(2, 2), "ints"),
        helper.make_tensor("strs", TensorProto.STRING, [3], [b"a", b"\xff\x00\"q", "é".encode()]),
        helper.make_tensor("bf", TensorProto.BFLOAT16, [3], [1.0, 0.1, -3.0]),
        helper.make_tensor("f8", TensorProto.FLOAT8E4M3FN, [2], [0.5, -448.0]),
        helper.make_tensor("i4", TensorProto.INT4, [3], [-8, 0, 7]),
        helper.make_tensor("u2", TensorProto.UINT2, [2], [3, 1]),
        helper.make_tensor("c", TensorProto.COMPLEX64, [2], [1 + 2j, -0.5 + 0.25j]),
        helper.make_tensor("b", TensorProto.BOOL, [2], [True, False]),
        helper.make_tensor("f16", TensorProto.FLOAT16, [2], [0.1, 65504.0]),
        helper.make_tensor("scalar", TensorProto.DOUBLE, [], [1 / 3]),
        helper.make_tensor("empty", TensorProto.FLOAT, [0, 3], []),
    ]
    inits[0].doc_string = "weights"
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([5.0, 6.0], np.float32), "sp"),
        numpy_helper.from_array(np.array([1, 7], np.int64), "sp_idx"), [3, 3])
    then_g = helper.make_graph([helper.make_node("Relu", ["h"], ["t"])], "then body", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    else_g = helper.make_graph([helper.make_node("Neg", ["x:0"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    loop_body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["acc", "w"], ["acc_out"])], "loop_body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [3])])
    add = helper.make_node("Add", ["x:0", "w"], ["h"], name="add 0", doc_string="adds")
    helper.set_metadata_props(add, {"origin": "torch"})
    nodes = [
        add,
        helper.make_node("ReduceSum", ["h", ""], ["s"], keepdims=0),
        helper.make_node("Cast", ["s"], ["cond"], to=TensorProto.BOOL),
        helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g),
        helper.make_node("Loop", ["", "cond", "w"], ["loop_out"], body=loop_body),
        helper.make_node("Split", ["w"], ["p0", "", "p2"], axis=0, num_outputs=3),
        helper.make_node("Custom", ["x:0"], ["z"], domain="com.example", overload="v2",
                         floats=[1.0, 0.5, np.float32(0.1)], strs=["a", "b\n"], empty_ints=[0],
                         t=numpy_helper.from_array(np.array([1, 2], np.int32), "tname"),
                         ts=[numpy_helper.from_array(np.array([1.0], np.float32))],
                         tp=helper.make_tensor_type_proto(TensorProto.FLOAT, ["K", 4]),
                         sp_attr=sparse, raw=b"\x00\x01",
                         graphs=[then_g, else_g], nan=float("nan"), neg_inf=float("-inf")),
        helper.make_node("Fn", ["w"], ["fn_out"], domain="local", alpha=2.0),
        helper.make_node("SequenceEmpty", [], ["seq"], dtype=TensorProto.INT64),
        helper.make_node("Identity", ["u"], ["u_copy"]),
    ]
    empty = next(a for a in nodes[6].attribute if a.name == "empty_ints")
    empty.ClearField("ints")  # an INTS attribute with no elements
    graph = helper.make_graph(
        nodes, "main graph", [x, w_input, opt_in, unranked], [y, seq_out], inits,
        doc_string="the graph",
        value_info=[helper.make_tensor_value_info("h", TensorProto.FLOAT, ["N", None, 3]),
                    helper.make_value_info("u_copy", map_type)],
        sparse_initializer=[helper.make_sparse_tensor(
            numpy_helper.from_array(np.array([1.0], np.float32), "sp_init"),
            numpy_helper.from_array(np.array([0], np.int64)), [2])])
    helper.set_metadata_props(graph, {"g": "1"})
    fn = helper.make_function(
        "local", "Fn", ["a"], ["b"],
        [helper.make_node("Constant", [], ["k"]), helper.make_node("Mul", ["a", "k"], ["b"])],
        [helper.make_opsetid("", 18)], attributes=["alpha"], doc_string="fn doc")
    fn.node[0].attribute.add().CopyFrom(helper.make_attribute_ref("value_float", A.FLOAT))
    fn.node[0].attribute[0].ref_attr_name = "alpha"
    fn.attribute_proto.add().CopyFrom(helper.make_attribute("beta", 0.5))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                    helper.make_opsetid("com.example", 1),
                                                    helper.make_opsetid("local", 1)],
                              functions=[fn], producer_name="edgec-test", producer_version="1",
                              doc_string="model doc", model_version=3, domain="ai.edgec")
    helper.set_model_props(model, {"license": "MIT", "author": "a \"quoted\" name"})
    return model


def test_rich_model_round_trips():
    model = import_model(rich_model(), check=False)
    text = assert_round_trip(model)
    # Things a reader looks for, spelled as documented.
    assert 'graph @"main graph"(%"x:0": f32[N@"DATA_BATCH",?,3]' in text
    assert "init %w = dense<[1.0, 0.1, -2.5e-08]> : f32[3]" in text
    assert "0x7fc00001" in text and "0xffc00000" in text
    assert '"add 0": %h: f32[N,?,3] = Add(%"x:0", %w) #{doc = "adds"' in text
    assert "ReduceSum(%h, _)" in text
    assert "%p0, _, %p2 = Split(%w)" in text
    assert "com.example::Custom<v2>" in text
    assert "empty_ints: ints = []" in text
    assert "value_float: float = $alpha" in text
    assert "func local::Fn(%a) -> (%b) attributes [alpha] defaults {beta = 0.5}" in text
    assert "%u: f64)" in text and "seq<i64>" in text and "opt<f32[]>" in text
    assert "%u_copy: map<str,f32[2]> = Identity(%u)" in text
    assert 'dense_strings<["a", b"\\xff\\x00\\x22q", "é"]>' in text


def test_printing_is_deterministic_and_independent_of_object_identity():
    a = print_model(import_model(rich_model(), check=False))
    b = print_model(import_model(rich_model(), check=False))
    assert a == b


def test_large_tensors_are_elided_with_a_digest_and_do_not_parse():
    graph = Graph("g")
    x = graph.add_input(Value("x", TensorType(DataType.FLOAT, Shape((100,)))))
    w = graph.make_constant(np.arange(100, dtype=np.float32), "w")
    graph.append(Node("Add", [x, w], outputs=[Value("y")]))
    graph.outputs.append(graph.nodes[0].output)
    text = print_graph(graph)
    assert "init %w: f32[100] = dense<elided sha256:" in text
    assert print_graph(graph) == text
    full = print_graph(graph, elide_above=None)
    assert "99.0]>" in full
    parse_graph(full)
    with pytest.raises(IRSyntaxError) as info:
        parse_graph(text)
    assert "elided" in info.value.diagnostic.message
    assert info.value.diagnostic.location.line == 2


def test_parse_builds_use_def_links_across_nested_scopes():
    text = """
    graph @main(%c: bool, %x: f32[2]) -> (%y: f32[2]) {
      %y: f32[2] = If(%c) {
        then_branch = graph @then() -> (%t) {
          %t = Relu(%x)
        },
        else_branch = graph @else() -> (%x) {
        }
      }
    }
    """
    g = parse_graph(text)
    x = g.inputs[1]
    (if_node,) = g.nodes
    relu = if_node.attr("then_branch").nodes[0]
    assert relu.inputs[0] is x
    assert (relu, 0) in x.uses()
    assert if_node.attr("else_branch").outputs[0] is x
    assert if_node.output.type == TensorType(DataType.FLOAT, Shape((2,)))


def test_forward_references_parse_so_the_verifier_can_judge_the_order():
    g = parse_graph("graph @g(%x: f32) -> (%b) {\n  %b = Neg(%a)\n  %a = Relu(%x)\n}\n")
    assert not g.is_sorted()
    g.sort()
    assert [n.op_type for n in g] == ["Relu", "Neg"]


@pytest.mark.parametrize("text, message, line, column", [
    ("graph @g(%x: f32) -> (%y) {\n  %y = Relu(%x\n}\n", "unexpected '}'", 3, 1),
    ("graph @g(%x: f33) -> () {\n}\n", "unknown element type 'f33'", 1, 14),
    ("graph @g(%x: f32) -> (%y) {\n  %y = Relu(%z)\n}\n", "'%z' is not defined", 2, 13),
    ("graph @g() -> (%y) {\n}\n", "graph output '%y' is not defined", 1, 16),
    ("graph @g(%x: f32) -> () {\n  %y = Relu(%x) {a = []}\n}\n", "needs a type", 2, 18),
    ("graph @g(%x: f32, %x: f32) -> () {\n}\n", "defined twice", 1, 19),
    ("graph @g() -> () {\n  init %w = dense<[1.0, 2.0]> : f32[3]\n}\n", "has 2 elements", 2, 13),
    ("graph @g() -> () {\n  %y = Relu(%x) ^\n}\n", "unexpected character '^'", 2, 17),
    ("graph @g() -> () {\n", "unexpected end of input", 2, 1),
])
def test_syntax_errors_carry_line_column_and_caret(text, message, line, column):
    with pytest.raises(IRSyntaxError) as info:
        parse_graph(text, path="t.ir")
    d = info.value.diagnostic
    assert message in d.message
    assert (d.location.path, d.location.line, d.location.column) == ("t.ir", line, column)
    rendered = d.render()
    assert rendered.startswith(f"t.ir:{line}:{column}: error:")
    assert "^" in rendered


def test_programmatic_ir_round_trips():
    graph = Graph("g")
    x = graph.add_input(Value("x", TensorType(DataType.FLOAT, Shape(("N", 4)))))
    graph.add_input(Value("unranked", TensorType(DataType.INT64, Shape(None))))
    relu = graph.append(Node("Relu", [x]))  # output named by the graph
    clip = graph.append(Node("Clip", [relu.output, None, graph.make_constant(np.float32(6))],
                             attributes={"note": "six"}))
    graph.outputs.append(clip.output)
    text = print_graph(graph, elide_above=None)
    assert "%relu_out = Relu(%x)" in text and "%unranked: i64[*]" in text
    again = parse_graph(text)
    assert print_graph(again, elide_above=None) == text


def test_attribute_values_keep_their_exact_float32_bits():
    node = Node("Foo", [], attributes=[Attr("f", A.FLOAT, float(np.float32(0.1))),
                                      Attr("fs", A.FLOATS, [1.0, 1e-45, 3.4028235e38])])
    graph = Graph("g", nodes=[node])
    again = parse_graph(print_graph(graph)).nodes[0]
    assert again.attr("f") == float(np.float32(0.1))
    assert again.attr("fs") == [1.0, float(np.float32(1e-45)), float(np.float32(3.4028235e38))]
    assert again.attributes["fs"].type == A.FLOATS


# --------------------------------------------------------------------------- conformance


FULL_CONFORMANCE = os.environ.get("EDGEC_FULL_CONFORMANCE") == "1"


# Modules whose reference implementations take seconds to run at import.
_SLOW_TO_COLLECT = frozenset({"averagepool", "lppool", "maxpool", "attention"})


def onnx_node_test_cases(full: bool) -> list:
    """ONNX's node test cases: all of them, or those of every 8th operator module.

    Collecting all ~1,900 runs every reference implementation (10-30 s); importing
    one module in eight gives a deterministic sample at an eighth of the cost.
    """
    import onnx.backend.test.case.node as node_cases
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if full:
            return sorted(node_cases.collect_testcases(None), key=lambda c: c.name)
        before = len(node_cases._NodeTestCases)
        modules = sorted(m.name for m in pkgutil.iter_modules(node_cases.__path__))
        for name in [m for m in modules if m not in _SLOW_TO_COLLECT][::8]:
            importlib.import_module(f"{node_cases.__name__}.{name}")
        cases = node_cases._NodeTestCases[before:]
        if not cases:  # already collected in this process: sample by name instead
            cases = sorted(node_cases._NodeTestCases, key=lambda c: c.name)[::8]
        return sorted(cases, key=lambda c: c.name)


def test_round_trip_over_onnx_node_test_cases():
    """Every ONNX node test model round-trips (a sample by default; all of them with
    EDGEC_FULL_CONFORMANCE=1)."""
    cases = onnx_node_test_cases(FULL_CONFORMANCE)
    assert len(cases) > (1800 if FULL_CONFORMANCE else 100)
    failures = []
    for case in cases:
        try:
            model = import_model(case.model, check=False)
            text = print_model(model, elide_above=None)
            parsed = parse_model(text)
            assert print_model(parsed, elide_above=None) == text
            assert_protos_equal(export_model(parsed), export_model(model), tensor_numerics=True)
        except Exception as e:  # collect all, report together
            failures.append(f"{case.name}: {type(e).__name__}: {str(e)[:300]}")
    assert failures == []


def _testing_models():
    return [
        ("conv_bn_relu", lambda: models.conv_bn_relu()),
        ("mlp", lambda: models.mlp()),
        ("scaling_model", lambda: models.scaling_model(40)),
        ("transformer_encoder_small", lambda: models.transformer_encoder(seq=4, hidden=16)),
    ]


@pytest.mark.parametrize("name", ["conv_bn_relu", "mlp", "scaling_model",
                                  "transformer_encoder_small"])
def test_round_trip_over_testing_models(name):
    build = dict(_testing_models())[name]
    assert_round_trip(import_model(build()))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "transformer_encoder"])
def test_round_trip_over_large_testing_models(name):
    assert_round_trip(import_model(getattr(models, name)()))
