"""The plugin's own tests, written with edgec's pass-testing helpers (edgec.testing.passes).

Run from this folder: ``python -m pytest tests``, with the plugin importable (installed,
or on PYTHONPATH); the tests do not need the entry point installed.
"""

import pytest
from onnx import TensorProto, helper

from edgec.diagnostics import UsageError
from edgec.testing.passes import check_pass, conformance, create, load, op_types, run_pass
from edgec_plugin_example.strip_doc_strings import StripDocStrings


def documented_model():
    """Relu -> Neg with a doc string on the model, the graph, both nodes and the input."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    x.doc_string = "pixels"
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    nodes = [helper.make_node("Relu", ["x"], ["t"], doc_string="File model.py, line 12"),
             helper.make_node("Neg", ["t"], ["y"], doc_string="File model.py, line 13")]
    graph = helper.make_graph(nodes, "g", [x], [y], doc_string="the graph")
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                             doc_string="a model")


def test_strips_every_doc_string_and_keeps_the_outputs():
    # Only metadata changes: onnxruntime's outputs are bit-identical, and a second run
    # finds nothing to strip.
    model, result = check_pass(StripDocStrings(), documented_model(), rtol=0, atol=0)
    assert result.modified and result.stats == {"doc-strings-removed": 5}
    assert model.doc_string == "" and model.graph.doc_string == ""
    assert all(node.doc_string == "" for node in model.graph)
    assert op_types(model) == ["Relu", "Neg"]


def test_keep_model_doc_option_from_pipeline_text():
    (strip,) = create("strip-doc-strings{keep-model-doc=true}", [StripDocStrings])
    model = load(documented_model())
    assert run_pass(strip, model).stats == {"doc-strings-removed": 4}
    assert model.doc_string == "a model"


def test_a_bad_option_points_into_the_pipeline_text():
    with pytest.raises(UsageError) as error:
        create("strip-doc-strings{keep-model-doc=maybe}", [StripDocStrings])
    (diagnostic,) = error.value.diagnostics
    assert diagnostic.message == ("option 'keep-model-doc' of pass 'strip-doc-strings': "
                                  "expected true or false, got 'maybe'")
    assert diagnostic.location.column == 19


def test_onnx_node_cases_still_pass():
    conformance(StripDocStrings(), sample=40)
