"""The exporter-style corpus: valid models that onnxruntime runs, confident on their
tasks, carrying the exporters' features (run-time shape chains, symbolic batch,
exporter names, LSTM state and a scalar sample-rate input)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgec.testing import corpus
from edgec.testing.corpus.graph import session
from edgec.testing.corpus.recognizer import ctc_decode

SMALL = {"dbnet": {"size": 160}, "crnn": {"width": 96}, "silero-vad": {}, "mobilenet-v3-small": {"size": 96},
         "jax2tf-cnn": {}}


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    patch.setenv("EDGEC_CORPUS_CACHE", str(tmp_path_factory.mktemp("corpus-cache")))
    yield
    patch.undo()


@pytest.fixture(scope="module")
def built():
    return {name: corpus.MODELS[name](**SMALL[name]) for name in SMALL}


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {output: node for node in model.graph.node for output in node.output}


def _from_shape(model: onnx.ModelProto, value: str) -> bool:
    """Whether ``value`` is computed (transitively) from a Shape op."""
    producers, stack, seen = _producers(model), [value], set()
    while stack:
        node = producers.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type == "Shape":
            return True
        stack.extend(node.input)
    return False


def _feed_per_sample(inputs: dict[str, np.ndarray], index: int) -> dict[str, np.ndarray]:
    return {name: np.asarray(array[index]) for name, array in inputs.items()}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_valid_and_runs_in_onnxruntime(built, name):
    entry = built[name]
    onnx.checker.check_model(entry.model, full_check=True)
    inputs, labels = entry.data(4, 1)
    sess = session(entry.model)
    if entry.layout == "per-sample":
        outputs = sess.run(None, _feed_per_sample(inputs, 0))
    else:
        outputs = sess.run(None, inputs)
    assert all(np.isfinite(o).all() for o in outputs)
    assert set(labels) <= {o.name for o in entry.model.graph.output}
    # Symbolic batch dimension on every model input that has one.
    first = entry.model.graph.input[0].type.tensor_type.shape.dim[0]
    assert first.dim_param and not first.dim_value


def test_cache_reuses_the_built_model(built):
    again = corpus.MODELS["crnn"](**SMALL["crnn"])
    assert again.model.SerializeToString() == built["crnn"].model.SerializeToString()
    assert list(corpus.cache_dir().glob("crnn-*.onnx"))


def test_dbnet_is_paddle2onnx_style_and_confident(built):
    entry = built["dbnet"]
    model = entry.model
    assert model.producer_name == "paddle2onnx" and model.opset_import[0].version == 14
    ops = {node.op_type for node in model.graph.node}
    assert {"HardSwish", "HardSigmoid", "GlobalAveragePool", "ConvTranspose", "Resize", "Sigmoid"} <= ops
    assert all(node.name.startswith(f"p2o.{node.op_type}.") for node in model.graph.node)
    resizes = [node for node in model.graph.node if node.op_type == "Resize"]
    assert resizes and all(_from_shape(model, node.input[3]) for node in resizes)
    inputs, labels = entry.data(8, 3)
    (probability,) = session(model).run(None, inputs)
    target = labels["sigmoid_0.tmp_0"] > 0.5
    predicted = probability > 0.5
    iou = (predicted & target).sum() / (predicted | target).sum()
    assert iou > 0.6, iou
    assert np.mean(np.abs(probability - 0.5)) * 2 > 0.8  # most pixels far from the threshold


def test_crnn_decodes_the_strings(built):
    entry = built["crnn"]
    model = entry.model
    reshapes = [node for node in model.graph.node if node.op_type == "Reshape"]
    assert reshapes and all(_from_shape(model, node.input[1]) for node in reshapes)
    (lstm,) = [node for node in model.graph.node if node.op_type == "LSTM"]
    assert onnx.helper.get_attribute_value(next(a for a in lstm.attribute if a.name == "direction")) == b"bidirectional"
    assert _from_shape(model, lstm.input[5])  # initial state: ConstantOfShape of a run-time shape
    inputs, labels = entry.data(48, 4)
    (probabilities,) = session(model).run(None, inputs)
    assert probabilities.shape == (48, 96 // 4, 11)
    decoded, expected = ctc_decode(probabilities.argmax(-1)), ctc_decode(labels["softmax_0.tmp_0"])
    assert all(expected)  # every image holds a string
    assert np.mean([a == b for a, b in zip(decoded, expected)]) >= 0.8
    assert probabilities.max(-1).mean() > 0.9


@pytest.mark.parametrize("sample_rate", [16000, 8000])
def test_vad_state_sample_rate_and_confidence(built, sample_rate):
    model = built["silero-vad"].model
    inputs = {i.name: i for i in model.graph.input}
    assert [d.dim_value or d.dim_param for d in inputs["state"].type.tensor_type.shape.dim] == [2, "batch", 128]
    sr = inputs["sr"].type.tensor_type
    assert sr.elem_type == onnx.TensorProto.INT64 and len(sr.shape.dim) == 0
    assert any(node.op_type == "If" and "sr" in _inputs_upstream(model, node) for node in model.graph.node)
    entry = corpus.MODELS["silero-vad"](sample_rate=sample_rate)
    data, labels = entry.data(120, 5)
    assert data["input"].shape == (120, 1, 512) and data["state"].shape == (120, 2, 1, 128)
    assert data["sr"].shape == (120,) and data["sr"].dtype == np.int64
    sess = session(model)
    probability = np.array([sess.run(["output"], _feed_per_sample(data, i))[0] for i in range(120)])
    decided = probability.reshape(-1) > 0.5
    assert np.mean(decided == (labels["output"].reshape(-1) > 0.5)) >= 0.9
    assert np.mean(np.abs(probability - 0.5)) * 2 > 0.8


@pytest.mark.parametrize("name", ["mobilenet-v3-small", "jax2tf-cnn"])
def test_classifiers_are_accurate_and_confident(built, name):
    entry = built[name]
    inputs, labels = entry.data(100, 6)
    (probabilities,) = session(entry.model).run(None, inputs)
    (expected,) = labels.values()
    assert np.mean(probabilities.argmax(1) == expected) >= 0.8
    top2 = np.sort(probabilities, axis=1)[:, -2:]
    assert np.median(top2[:, 1] - top2[:, 0]) > 0.2  # a clear winner, not a near tie


def test_mobilenet_v3_small_is_paddle2onnx_style(built):
    model = built["mobilenet-v3-small"].model
    ops = [node.op_type for node in model.graph.node]
    assert {"HardSwish", "HardSigmoid", "GlobalAveragePool"} <= set(ops) and ops[-1] == "Softmax"
    assert all(node.name.startswith(f"p2o.{node.op_type}.") for node in model.graph.node)


def test_jax2tf_cnn_has_jax2tf_names_layout_and_run_time_reshape(built):
    model = built["jax2tf-cnn"].model
    assert model.producer_name == "tf2onnx"
    assert all(node.name.startswith("jax2tf_infer_fn_/pjit_infer_fn_/") for node in model.graph.node)
    assert model.graph.node[0].op_type == "Transpose"  # NHWC -> NCHW
    (reshape,) = [node for node in model.graph.node if node.op_type == "Reshape"]
    assert _from_shape(model, reshape.input[1])
    assert [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == ["b", 32, 32, 3]


def _inputs_upstream(model: onnx.ModelProto, node: onnx.NodeProto) -> set[str]:
    producers, stack, found = _producers(model), list(node.input), set()
    while stack:
        value = stack.pop()
        found.add(value)
        if value in producers:
            stack.extend(producers[value].input)
    return found


def test_cli_writes_model_data_and_spec(tmp_path):
    from edgec.testing.corpus.__main__ import main

    assert main(["crnn", "--param", "width=96", "--count", "4", "-o", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    model = onnx.load(str(out / "model.onnx"))
    data = np.load(out / "data.npz")
    assert data["x"].shape == (4, 3, 32, 96)
    assert np.load(out / "labels.npz")["softmax_0.tmp_0"].shape == (4, 24)
    from edgec.dsl import check_spec

    spec, diagnostics = check_spec(out / "host.edge")  # what `edgec compile --spec` will read
    assert spec is not None and not any(d.is_error for d in diagnostics)
    session(model).run(None, {"x": data["x"]})
    assert main(["no-such-model", "-o", str(tmp_path / "x")]) == 2


def _with_output(model: onnx.ModelProto, value: str) -> onnx.ModelProto:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(onnx.ValueInfoProto(name=value))
    return probe


def _white_noise(value: np.ndarray, db: float, seed: int = 0) -> np.ndarray:
    rms = np.sqrt(np.mean(value.astype(np.float64) ** 2))
    return value + np.random.default_rng(seed).normal(0.0, rms * 10 ** (-db / 20), value.shape)


def test_dbnet_meets_the_corpus_criterion(built):
    """The criterion of edgec.testing.corpus (benchmarks/int8_fragility.py measures it at
    full size): confident against the labels, and white noise at 40 dB SQNR on the
    pre-Sigmoid map costs well under the 1 % IoU tolerance. At 160x160 the figures are
    IoU 0.87, 4.9 % of positive pixels uncertain, 0.996 under noise (the random-FPN
    construction before: IoU 0.58, 13.5 % uncertain, 0.983 under noise; each assert
    below fails on it)."""
    model = built["dbnet"].model
    logits_name = next(node for node in model.graph.node if node.op_type == "Sigmoid").input[0]
    inputs, labels = built["dbnet"].data(8, 3)
    probability, logits = session(_with_output(model, logits_name)).run(None, inputs)
    target = labels["sigmoid_0.tmp_0"] > 0.5

    def iou(a, b):
        return np.mean([(x & y).sum() / max(1, (x | y).sum()) for x, y in zip(a, b)])

    assert iou(probability > 0.5, target) > 0.8
    assert np.mean((probability[target] > 0.3) & (probability[target] < 0.7)) < 0.1
    noisy = 1 / (1 + np.exp(-_white_noise(logits, 40)))
    assert iou(noisy > 0.5, probability > 0.5) > 0.99


def test_mobilenet_v3_small_meets_the_corpus_criterion(built):
    """White noise at 40 dB SQNR on the 1280-d features before the head keeps top-1
    (0.99 at 96x96, 1.0 at 224x224 like ResNet-18 and MobileNetV2; random full-scale
    squeeze-excite gates gave 0.95 at 96x96 and accuracy 0.82: both asserts fail on them),
    and held-out accuracy stays high."""
    entry = built["mobilenet-v3-small"]
    model = entry.model
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    matmul = next(node for node in model.graph.node if node.op_type == "MatMul")
    add = next(node for node in model.graph.node if node.op_type == "Add" and node.input[0] == matmul.output[0])
    inputs, labels = entry.data(100, 6)
    probabilities, features = session(_with_output(model, matmul.input[0])).run(None, inputs)
    assert np.mean(probabilities.argmax(1) == labels["softmax_0.tmp_0"]) >= 0.85
    noisy = _white_noise(features, 40) @ initializers[matmul.input[1]] + initializers[add.input[1]]
    assert np.mean(noisy.argmax(1) == probabilities.argmax(1)) >= 0.97


@pytest.mark.parametrize("name", ["crnn", "dbnet"])
def test_cli_spec_names_only_labels_edgec_reads(tmp_path, name):
    """`edgec compile DIR/model.onnx --spec DIR/host.edge` must read what the spec names:
    the CRNN's per-step targets and the detector's text maps are not class labels (edgec's
    labels are one integer class per sample), so the spec does not name them."""
    from edgec.data import load_labels
    from edgec.dsl import check_spec
    from edgec.testing.corpus.__main__ import main

    params = [f"--param={key}={value}" for key, value in SMALL[name].items()]
    assert main([name, *params, "--count", "2", "-o", str(tmp_path / "out")]) == 0
    spec, diagnostics = check_spec(tmp_path / "out" / "host.edge")
    assert spec is not None and not any(d.is_error for d in diagnostics)
    if spec.accuracy.labels:
        load_labels(str(tmp_path / "out" / spec.accuracy.labels))


@pytest.mark.parametrize("args, message", [
    (["--count", "-3"], "--count must be at least 1"),
    (["--count", "0"], "--count must be at least 1"),
    (["--seed", "10000"], "--seed must be in 0..9999"),
    (["--seed", "-1"], "--seed must be in 0..9999"),
])
def test_cli_refuses_bad_counts_and_seeds_in_one_line(tmp_path, capsys, args, message):
    # A negative count was a numpy traceback; seeds from 10000 on are the ones the
    # models were fitted with (10_000 + seed), which the help promised to keep apart.
    from edgec.testing.corpus.__main__ import main

    assert main(["jax2tf-cnn", *args, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {message}, got {args[1]}"], err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_an_output_that_is_a_file(tmp_path, capsys):
    from edgec.testing.corpus.__main__ import main

    (tmp_path / "notes.txt").write_text("mine")
    assert main(["jax2tf-cnn", "-o", str(tmp_path / "notes.txt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a folder" in err[0], err
    assert (tmp_path / "notes.txt").read_text() == "mine"
