"""Bad models give one located line on stderr and exit 3: no traceback, nothing read outside
the model's folder."""

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def edgec(*args, cwd, timeout=60):
    return subprocess.run([sys.executable, "-m", "edgec", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def _model(nodes, inputs=("x",), outputs=("y",), initializers=(), opsets=(("", 17),)):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in outputs],
        initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])


def _good():
    return _model([helper.make_node("Relu", ["x"], ["t"]), helper.make_node("Neg", ["t"], ["y"])])


def _assert_model_error(result, *fragments):
    assert result.returncode == 3, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("m.onnx: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.stdout == ""


def test_garbage_bytes(tmp_path):
    (tmp_path / "m.onnx").write_bytes(os.urandom(4096))
    _assert_model_error(edgec("opt", "m.onnx", "-o", "out.onnx", cwd=tmp_path), "not an ONNX model")
    assert not (tmp_path / "out.onnx").exists()


def test_text_file(tmp_path):
    (tmp_path / "m.onnx").write_text("hello, I am not a model\n")
    _assert_model_error(edgec("opt", "m.onnx", cwd=tmp_path), "not an ONNX model")


def test_empty_file(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"")
    _assert_model_error(edgec("opt", "m.onnx", cwd=tmp_path), "not an ONNX model")


@pytest.mark.parametrize("keep", [0.25, 0.5, 0.9, 0.99])
def test_truncated(tmp_path, keep):
    data = _model([helper.make_node("Add", ["x", "w"], ["y"])],
                  initializers=[numpy_helper.from_array(np.arange(2048, dtype=np.float32), "w")]
                  ).SerializeToString()
    (tmp_path / "m.onnx").write_bytes(data[:int(len(data) * keep)])
    result = edgec("opt", "m.onnx", cwd=tmp_path)
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cycle(tmp_path):
    m = _model([helper.make_node("Add", ["x", "b"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
                helper.make_node("Neg", ["b"], ["y"])])
    onnx.save(m, tmp_path / "m.onnx")
    _assert_model_error(edgec("opt", "m.onnx", cwd=tmp_path), "cycle")


def test_value_nobody_produces(tmp_path):
    m = _model([helper.make_node("Relu", ["x"], ["t"], name="relu1"),
                helper.make_node("Add", ["t", "ghost"], ["y"], name="add1")])
    onnx.save(m, tmp_path / "m.onnx")
    _assert_model_error(edgec("opt", "m.onnx", cwd=tmp_path),
                        "node 'add1' (Add)", "reads 'ghost'")


def test_unknown_domain(tmp_path):
    m = _model([helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example", name="f")])
    onnx.save(m, tmp_path / "m.onnx")
    _assert_model_error(edgec("opt", "m.onnx", cwd=tmp_path),
                        "node 'f' (com.example::Frobnicate)", "domain 'com.example'")


def test_unknown_operator_in_the_standard_domain(tmp_path):
    m = _model([helper.make_node("Frobnicate", ["x"], ["y"], name="f")])
    onnx.save(m, tmp_path / "m.onnx")
    _assert_model_error(edgec("opt", "m.onnx", cwd=tmp_path), "Frobnicate")


def _external_model(location: str):
    w = numpy_helper.from_array(np.ones(2, np.float32), "w")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "8")):
        e = w.external_data.add()
        e.key, e.value = k, v
    w.ClearField("raw_data")
    return _model([helper.make_node("Add", ["x", "w"], ["y"])], initializers=[w])


@pytest.mark.parametrize("location", ["../../secret.bin", "../secret.bin", "/etc/passwd",
                                      "sub/../../secret.bin", "link.bin"])
def test_external_data_outside_the_models_folder(tmp_path, location):
    # The file outside is a FIFO: opening it for reading would block, so a test that
    # finishes proves edgec never opened it.
    outside = tmp_path / "secret.bin"
    os.mkfifo(outside)
    folder = tmp_path / "a" / "b"
    (folder / "sub").mkdir(parents=True)
    os.symlink(outside, folder / "link.bin")
    onnx.save(_external_model(location), folder / "m.onnx")
    result = edgec("opt", "m.onnx", "-o", "out.onnx", cwd=folder, timeout=60)
    _assert_model_error(result, "tensor 'w'", "outside the model's folder")
    assert not (folder / "out.onnx").exists()


def test_external_data_inside_the_folder_works(tmp_path):
    np.ones(2, np.float32).tofile(tmp_path / "w.bin")
    onnx.save(_external_model("w.bin"), tmp_path / "m.onnx")
    result = edgec("opt", "m.onnx", "-o", "out/out.onnx", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    import onnxruntime as ort
    sess = ort.InferenceSession(str(tmp_path / "out" / "out.onnx"))
    y, = sess.run(None, {"x": np.array([1, 2], np.float32)})
    assert y.tolist() == [2.0, 3.0]


def test_missing_file(tmp_path):
    result = edgec("opt", "nope.onnx", cwd=tmp_path)
    assert result.returncode == 3
    assert result.stderr.strip() == "nope.onnx: error: cannot read the model: No such file or directory"


def test_bad_pipeline_is_a_usage_error_before_the_model_is_read(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"garbage")
    result = edgec("opt", "m.onnx", "-p", "dce,,cse", cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid pipeline" in result.stderr and "^" in result.stderr


def test_good_model_round_trips_through_stdin_and_stdout(tmp_path):
    data = _good().SerializeToString()
    result = subprocess.run([sys.executable, "-m", "edgec", "opt", "-", "-p", "", "-o", "-"],
                            input=data, capture_output=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert onnx.load_from_string(result.stdout) == onnx.load_from_string(data)


@pytest.mark.parametrize("pipeline", ["quantize-int8", "quantize-int8{calibration=auto}"])
def test_a_quantizer_without_calibration_data_is_a_usage_error(tmp_path, pipeline):
    # The model is fine; the invocation lacks an option: exit 2 (usage), not 3 (model).
    digits = os.path.join(os.path.dirname(__file__), "..", "..", "spec_examples", "digits.onnx")
    r = edgec("opt", digits, "-p", pipeline, "-o", "out.onnx", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    first, *notes = r.stderr.strip().splitlines()
    assert first.endswith("error: quantize-int8 needs calibration data: run it under `edgec compile` "
                          "with data in the spec (or --data), or give "
                          "quantize-int8{calibration-data=FILE.npz}"), first
    assert first.startswith(digits) and all(n.startswith("note: ") for n in notes), r.stderr
    assert not (tmp_path / "out.onnx").exists()
