"""ONNX import -> export is lossless; save_model is atomic and handles external data."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.diagnostics import EdgecError
from edgec.frontend import export_model, import_model, load_model, save_model
from edgec.testing.protos import assert_protos_equal, canonical_proto

A = onnx.AttributeProto


def round_trip(proto: onnx.ModelProto) -> None:
    assert_protos_equal(export_model(import_model(proto, check=False)), proto)


def simple_graph(**kwargs) -> onnx.GraphProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    w = numpy_helper.from_array(np.array([1.5, -2.0], np.float32), "w")
    return helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y],
                             [w], **kwargs)


def model(graph, **kwargs) -> onnx.ModelProto:
    kwargs.setdefault("opset_imports", [helper.make_opsetid("", 17)])
    return helper.make_model(graph, **kwargs)


def test_initializers():
    round_trip(model(simple_graph()))


def test_initializer_that_is_also_a_graph_input():
    g = simple_graph()
    g.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, ["K"]))
    m = model(g)
    round_trip(m)
    w = import_model(m).graph.initializers["w"]
    assert w.is_graph_input() and not w.is_constant()


def test_sparse_initializer():
    g = simple_graph()
    g.sparse_initializer.append(helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([3.0], np.float32), "s"),
        numpy_helper.from_array(np.array([1], np.int64)), [2]))
    g.node.append(helper.make_node("Mul", ["y", "s"], ["z"]))
    round_trip(model(g))


def test_opset_imports_with_custom_domains_and_functions():
    fn = helper.make_function(
        "my.domain", "Scale", ["a"], ["b"],
        [helper.make_node("Constant", [], ["k"]), helper.make_node("Mul", ["a", "k"], ["b"])],
        [helper.make_opsetid("", 17)], attributes=["factor"], doc_string="scales")
    fn.node[0].attribute.add().CopyFrom(helper.make_attribute_ref("value_float", A.FLOAT))
    fn.node[0].attribute[0].ref_attr_name = "factor"
    fn.attribute_proto.add().CopyFrom(helper.make_attribute("bias", 0.25))
    helper.set_metadata_props(fn, {"f": "1"})
    g = simple_graph()
    g.node.append(helper.make_node("Scale", ["y"], ["z"], domain="my.domain", factor=2.0))
    m = model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.domain", 1),
                                helper.make_opsetid("com.microsoft", 1)], functions=[fn])
    round_trip(m)
    imported = import_model(m)
    f = imported.functions[("my.domain", "Scale", "")]
    assert f.attributes == ["factor"] and f.attribute_defaults["bias"].value == 0.25
    assert f.graph.nodes[0].attributes["value_float"].ref_attr_name == "factor"


def test_metadata_doc_strings_value_info_symbolic_dims_and_denotations():
    g = simple_graph(doc_string="graph doc")
    g.node[0].doc_string = "node doc"
    g.node[0].name = "add"
    helper.set_metadata_props(g.node[0], {"n": "1"})
    helper.set_metadata_props(g, {"g": "2"})
    helper.set_metadata_props(g.input[0], {"v": "3"})
    g.input[0].doc_string = "input doc"
    g.input[0].type.tensor_type.shape.dim[0].denotation = "DATA_FEATURE"
    g.input[0].type.denotation = "TENSOR"
    g.node.append(helper.make_node("Relu", ["y"], ["r"]))
    g.value_info.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, ["batch", None]))
    g.value_info[-1].doc_string = "relu out"
    m = model(g, producer_name="p", producer_version="v", doc_string="model doc",
              model_version=7, domain="d")
    helper.set_model_props(m, {"k": "v"})
    exported = export_model(import_model(m, check=False))
    # onnx's TypeProto.denotation is not carried by the IR: compare without it.
    m.graph.input[0].type.ClearField("denotation")
    assert_protos_equal(exported, m)


def test_if_loop_and_scan_subgraphs():
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    then_g = helper.make_graph([helper.make_node("Neg", ["x"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])])
    else_g = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])])
    loop_body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"]),
         helper.make_node("Add", ["acc", "x"], ["acc_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [2])])
    scan_body = helper.make_graph(
        [helper.make_node("Add", ["s", "e_in"], ["s_out"]),
         helper.make_node("Identity", ["s_out"], ["scan_out"])], "scan",
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("e_in", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("scan_out", TensorProto.FLOAT, [2])])
    nodes = [
        helper.make_node("If", ["cond"], ["if_out"], then_branch=then_g, else_branch=else_g),
        helper.make_node("Loop", ["n", "cond", "x"], ["loop_out"], body=loop_body),
        helper.make_node("Scan", ["x", "seq"], ["final", "scanned"], body=scan_body,
                         num_scan_inputs=1),
    ]
    g = helper.make_graph(
        nodes, "main",
        [cond, helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("n", TensorProto.INT64, []),
         helper.make_tensor_value_info("seq", TensorProto.FLOAT, ["T", 2])],
        [helper.make_tensor_value_info("if_out", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("loop_out", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("scanned", TensorProto.FLOAT, ["T", 2])])
    m = model(g)
    onnx.checker.check_model(m, full_check=True)
    round_trip(m)
    imported = import_model(m)
    x = imported.graph.inputs[1]
    assert {n.op_type for n, _ in x.uses()} >= {"Neg", "Identity", "Add", "Loop", "Scan"}


def test_external_data_is_loaded_lazily_and_exported_as_a_reference(tmp_path):
    w = numpy_helper.from_array(np.arange(4096, dtype=np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4096])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4096])
    m = model(helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y],
                                [w]))
    path = tmp_path / "m.onnx"
    onnx.save_model(m, str(path), save_as_external_data=True, location="weights.bin",
                    size_threshold=0)
    loaded = load_model(str(path))
    tensor = loaded.graph.initializers["w"].const
    assert tensor.external is not None and not tensor.is_loaded
    on_disk = onnx.load(str(path), load_external_data=False)
    assert_protos_equal(export_model(loaded), on_disk)
    assert np.array_equal(tensor.numpy(), np.arange(4096, dtype=np.float32))


def test_save_model_copies_external_data_next_to_the_model_and_ort_runs_it(tmp_path):
    w = numpy_helper.from_array(np.linspace(0, 1, 2048, dtype=np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2048])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2048])
    m = model(helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y],
                                [w]))
    src = tmp_path / "src"
    src.mkdir()
    onnx.save_model(m, str(src / "m.onnx"), save_as_external_data=True, location="w.bin",
                    size_threshold=0)
    out = tmp_path / "out" / "copy.onnx"
    save_model(load_model(str(src / "m.onnx")), str(out))
    assert (tmp_path / "out" / "copy.onnx.data").is_file()
    assert sorted(os.listdir(tmp_path / "out")) == ["copy.onnx", "copy.onnx.data"]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    feed = np.ones(2048, np.float32)
    (result,) = session.run(None, {"x": feed})
    np.testing.assert_array_equal(result, feed + numpy_helper.to_array(w))
    again = load_model(str(out))
    assert np.array_equal(again.graph.initializers["w"].const.numpy(), numpy_helper.to_array(w))


def test_save_model_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous contents")
    m = import_model(model(simple_graph()))

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(EdgecError, match="cannot write the model"):
        save_model(m, str(path))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["m.onnx"]  # no temporary file left behind
    assert path.read_bytes() == b"previous contents"
    save_model(m, str(path))
    assert_protos_equal(onnx.load(str(path)), export_model(m))


def test_model_over_2gb_with_sparse_external_file(tmp_path):
    """550M float32 zeros in a sparse file: load, re-save elsewhere, load again."""
    count = 550_000_000
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "big.bin", "wb") as f:
        f.truncate(count * 4)
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [count])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [count])
    init = onnx.TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[count])
    init.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "big.bin"), ("offset", "0"), ("length", str(count * 4))):
        e = init.external_data.add()
        e.key, e.value = key, value
    g = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "big", [], [y], [init])
    del w
    with open(src / "big.onnx", "wb") as f:
        f.write(model(g).SerializeToString())
    loaded = load_model(str(src / "big.onnx"))
    tensor = loaded.graph.initializers["w"].const
    assert tensor.nbytes > 2**31 and not tensor.is_loaded
    out_dir = tmp_path / "out"
    save_model(loaded, str(out_dir / "big.onnx"))
    data = out_dir / "big.onnx.data"
    assert data.stat().st_size >= count * 4
    again = load_model(str(out_dir / "big.onnx"))
    t2 = again.graph.initializers["w"].const
    assert t2.dims == (count,) and t2.external.location == "big.onnx.data"
    assert not t2.is_loaded


def test_canonical_proto_clears_set_defaults_but_keeps_oneofs():
    a = helper.make_tensor_value_info("x", TensorProto.FLOAT, [""])
    b = onnx.ValueInfoProto()
    b.CopyFrom(a)
    b.doc_string = ""  # set, but to the default
    assert a != b or a.HasField("doc_string") != b.HasField("doc_string")
    assert canonical_proto(a) == canonical_proto(b)
    dim = canonical_proto(a).type.tensor_type.shape.dim[0]
    assert dim.WhichOneof("value") == "dim_param"  # dim_param: "" is not an unknown dim


def test_export_node_and_import_type_are_the_codecs_own():
    from edgec.frontend.onnx_export import export_attribute, export_node, export_type
    from edgec.frontend.onnx_import import import_type
    from edgec.ir.types import DataType

    proto = model(helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], name="g", alpha=0.5, transB=1,
                          doc_string="the layer")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(np.eye(2, dtype=np.float32), "w")]))
    m = import_model(proto, check=False)
    gemm = m.graph.nodes[0]
    assert export_node(gemm) == export_model(m).graph.node[0] == proto.graph.node[0]
    assert export_node(gemm, name="other").name == "other"
    assert export_attribute(gemm.attributes["alpha"]) == proto.graph.node[0].attribute[0]
    y = m.graph.outputs[0]
    assert export_type(y.type) == proto.graph.output[0].type
    assert import_type(proto.graph.output[0].type) == y.type
    seq = helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.INT64, [3]))
    assert export_type(import_type(seq)) == seq
    unknown = helper.make_tensor_type_proto(999, [1])
    assert import_type(unknown).dtype is DataType.UNDEFINED
