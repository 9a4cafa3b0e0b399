"""Data for any model: `--data`, the spec's `data` and `edgec run --inputs` take both
layouts — batch-leading arrays (rank of the input, axis 0 = batch) and per-sample feeds
([S, *input shape], one complete feed each: the only way to give a scalar input or a
state whose batch is not on axis 0). The layout is read per file from the shapes (or
set by the spec's `layout`); bad combinations are one located line, exit 2.

The model here is a small stand-in for an exported LSTM voice-activity detector: audio
x [N, 64], a state [2, N, 8] (h and c stacked: the batch is on axis 1), a scalar int64
sample rate `sr`, and an `If` on the sample rate, as the corpus's VAD has (small, so
every error path is quick; tests/test_corpus_data_and_metrics.py compiles the corpus's
own VAD).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.data import (BATCH, PER_SAMPLE, load_data, model_inputs, needs_per_sample,
                        synthetic_data)
from edgec.diagnostics import UsageError
from edgec.testing.required import import_or_missing

HIDDEN, FEATURES = 8, 64


def vad_model(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    init = [numpy_helper.from_array(a, n) for n, a in [
        ("W", rng.normal(0, 0.2, (1, 4 * HIDDEN, FEATURES)).astype(np.float32)),
        ("R", rng.normal(0, 0.3, (1, 4 * HIDDEN, HIDDEN)).astype(np.float32)),
        ("B", rng.normal(0, 0.1, (1, 8 * HIDDEN)).astype(np.float32)),
        ("head", rng.normal(0, 0.5, (HIDDEN, 1)).astype(np.float32)),
        ("rate16k", np.array(16000, np.int64)),
        ("gain16k", np.array(1.0, np.float32)), ("gain8k", np.array(0.5, np.float32)),
        ("zero", np.array([0], np.int64)), ("one", np.array([1], np.int64)),
        ("two", np.array([2], np.int64)), ("axis0", np.array([0], np.int64))]]
    then_branch = helper.make_graph([helper.make_node("Mul", ["x", "gain16k"], ["xs_then"])],
                                    "sr16k", [], [helper.make_tensor_value_info(
                                        "xs_then", TensorProto.FLOAT, None)])
    else_branch = helper.make_graph([helper.make_node("Mul", ["x", "gain8k"], ["xs_else"])],
                                    "sr8k", [], [helper.make_tensor_value_info(
                                        "xs_else", TensorProto.FLOAT, None)])
    nodes = [
        helper.make_node("Equal", ["sr", "rate16k"], ["is16k"]),
        helper.make_node("If", ["is16k"], ["xs"], then_branch=then_branch,
                         else_branch=else_branch),
        helper.make_node("Unsqueeze", ["xs", "axis0"], ["seq"]),           # [1, N, 64]
        helper.make_node("Slice", ["state", "zero", "one", "axis0"], ["h0"]),  # [1, N, 8]
        helper.make_node("Slice", ["state", "one", "two", "axis0"], ["c0"]),
        helper.make_node("LSTM", ["seq", "W", "R", "B", "", "h0", "c0"], ["", "h", "c"],
                         hidden_size=HIDDEN),
        helper.make_node("Concat", ["h", "c"], ["state_out"], axis=0),      # [2, N, 8]
        helper.make_node("Squeeze", ["h", "axis0"], ["h2"]),
        helper.make_node("MatMul", ["h2", "head"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["prob"]),                   # [N, 1]
    ]
    graph = helper.make_graph(
        nodes, "vad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", FEATURES]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "N", HIDDEN]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 1]),
         helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [2, "N", HIDDEN])],
        initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def vad_feeds(count: int, seed: int = 1) -> dict[str, np.ndarray]:
    """Per-sample feeds: x [S, 1, 64], state [S, 2, 1, 8], sr [S] (both rates)."""
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(0, 1, (count, 1, FEATURES)).astype(np.float32),
            "state": rng.normal(0, 0.5, (count, 2, 1, HIDDEN)).astype(np.float32),
            "sr": np.where(np.arange(count) % 3 == 0, 8000, 16000).astype(np.int64)}


def _edgec(*args, cwd):
    return subprocess.run([sys.executable, "-m", "edgec", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def _one_error_line(result) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


# --------------------------------------------------------------------------- reading


def test_per_sample_feeds_are_read_from_the_shapes(tmp_path):
    inputs = model_inputs(vad_model())
    np.savez(tmp_path / "vad.npz", **vad_feeds(6))
    data = load_data(str(tmp_path / "vad.npz"), inputs)
    assert (data.layout, data.count) == (PER_SAMPLE, 6)
    assert "read from the shapes" in data.how
    assert data.arrays["sr"].shape == (6,) and data.arrays["state"].shape == (6, 2, 1, HIDDEN)


def test_batch_leading_arrays_are_read_as_before(tmp_path):
    plain = [i for i in model_inputs(vad_model()) if i.name == "x"]
    np.savez(tmp_path / "x.npz", x=np.zeros((5, FEATURES), np.float64))
    data = load_data(str(tmp_path / "x.npz"), plain)
    assert (data.layout, data.count) == (BATCH, 5) and data.arrays["x"].dtype == np.float32


@pytest.mark.parametrize("change, words", [
    (lambda f: f.update(x=f["x"][:, 0]),  # x batch-leading, the rest per-sample
     "arrays in different layouts: 'x' [4, 64] is batch-leading (the rank of input [N, 64]), "
     "'state' [4, 2, 1, 8] per-sample (one more)"),
    (lambda f: f.update(sr=f["sr"][:3]), "arrays hold different numbers of feeds (axis 0): "
                                         "'x' 4, 'state' 4, 'sr' 3"),
    (lambda f: f.update(state=np.zeros((4, 3, 1, HIDDEN), np.float32)),
     "array 'state' has shape [4, 3, 1, 8]; as per-sample feeds for the input [2, N, 8] it "
     "must be [S, 2, N, 8] (2 along axis 1, not 3)"),
    (lambda f: f.update(x=np.zeros((4, 1, 2, 3, FEATURES), np.float32)),
     "array 'x' has shape [4, 1, 2, 3, 64]; the model's input 'x' is [N, 64], so give rank 2 "
     "(batch-leading) or [S, N, 64] (per-sample)"),
    (lambda f: f.update(sr=np.array(16000, np.int64)),
     "array 'sr' holds one value (shape []), but the model's input 'sr' is a scalar: give one "
     "value per sample, shape [S]"),
    (lambda f: f.update(sr=f["sr"].astype(np.float32)),
     "array 'sr' is float32; the model wants int64"),
])
def test_bad_combinations_are_one_located_error(tmp_path, change, words):
    feeds = vad_feeds(4)
    change(feeds)
    np.savez(tmp_path / "bad.npz", **feeds)
    with pytest.raises(UsageError) as error:
        load_data(str(tmp_path / "bad.npz"), model_inputs(vad_model()))
    diagnostic = error.value.diagnostics[0]
    assert words in diagnostic.message
    assert diagnostic.location.path == str(tmp_path / "bad.npz")


def test_the_files_of_one_data_set_share_a_layout(tmp_path):
    plain = [i for i in model_inputs(vad_model()) if i.name == "x"]
    (tmp_path / "d").mkdir()
    np.savez(tmp_path / "d" / "a.npz", x=np.zeros((3, FEATURES), np.float32))
    np.savez(tmp_path / "d" / "b.npz", x=np.zeros((3, 1, FEATURES), np.float32))
    with pytest.raises(UsageError) as error:
        load_data(str(tmp_path / "d"), plain)
    assert ("data file holds per-sample feeds, but a.npz holds batch-leading arrays"
            in error.value.diagnostics[0].message)
    assert error.value.diagnostics[0].location.path.endswith("b.npz")


def test_the_spec_layout_decides_and_is_checked(tmp_path):
    plain = [i for i in model_inputs(vad_model()) if i.name == "x"]
    np.savez(tmp_path / "x.npz", x=np.zeros((3, 1, FEATURES), np.float32))
    assert load_data(str(tmp_path / "x.npz"), plain, layout="per-sample").layout == PER_SAMPLE
    with pytest.raises(UsageError) as error:
        load_data(str(tmp_path / "x.npz"), plain, layout="batch")
    assert ("the spec's layout is batch, but array 'x' has shape [3, 1, 64]: for the input "
            "[N, 64] that layout takes rank 2") in error.value.diagnostics[0].message


def test_an_input_of_unknown_rank_is_ambiguous_and_says_so(tmp_path):
    graph = helper.make_graph([helper.make_node("Identity", ["u"], ["v"])], "g",
                              [helper.make_tensor_value_info("u", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("v", TensorProto.FLOAT, None)])
    inputs = model_inputs(helper.make_model(graph))
    assert inputs[0].ranked is False
    np.savez(tmp_path / "u.npz", u=np.zeros((3, 2), np.float32))
    data = load_data(str(tmp_path / "u.npz"), inputs)
    assert data.layout == BATCH and "the shapes do not tell" in data.how
    assert "layout per-sample" in data.how  # how to say otherwise
    spec_said = load_data(str(tmp_path / "u.npz"), inputs, layout="per-sample")
    assert spec_said.layout == PER_SAMPLE and "the spec's 'layout per-sample'" in spec_said.how


def test_synthetic_data_is_per_sample_where_no_batch_axis_is_shared():
    vad = model_inputs(vad_model())
    assert needs_per_sample(vad)
    data = synthetic_data(vad, 5, seed=0)
    assert data.layout == PER_SAMPLE
    assert {k: v.shape for k, v in data.arrays.items()} == {
        "x": (5, 1, FEATURES), "state": (5, 2, 1, HIDDEN), "sr": (5,)}
    plain = [i for i in vad if i.name == "x"]
    assert not needs_per_sample(plain) and synthetic_data(plain, 5, 0).layout == BATCH
    # Two inputs whose symbolic batches an exporter named differently share axis 0.
    from edgec.data import InputSpec
    assert not needs_per_sample([InputSpec("a", np.float32, ("unk__1", 4)),
                                 InputSpec("b", np.float32, ("unk__2", 2))])
    assert needs_per_sample([InputSpec("a", np.float32, (1, 4)),
                             InputSpec("h", np.float32, (2, 1, 4))])


# --------------------------------------------------------------------------- compiling

SPEC = """target host
budget {{
  latency < 1 s p50 at batch 1
}}
accuracy {{
  metric sqnr
  tolerance 25 dB
  data "{data}"
{extra}}}
optimize {{
  precision fp32, int8
  backend ort
  search fastest
}}
"""


def _compile(tmp_path, data: str, extra: str = "", model=None, name="vad", json_out=True):
    onnx.save(model or vad_model(), tmp_path / f"{name}.onnx")
    (tmp_path / f"{name}.edge").write_text(SPEC.format(data=data, extra=extra))
    return _edgec("compile", f"{name}.onnx", "--spec", f"{name}.edge", "-o", f"{name}-out",
                  *(["--json"] if json_out else []), "--cache-dir", "cache", cwd=tmp_path)


def _ort_per_feed(model, feeds) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    runs = [session.run(None, {k: v[i, ...] for k, v in feeds.items()}) for i in range(len(feeds["sr"]))]
    return [np.stack([r[j] for r in runs]) for j in range(len(runs[0]))]


def test_the_vad_compiles_with_per_sample_state_and_sample_rate(tmp_path):
    feeds = vad_feeds(32)
    np.savez(tmp_path / "vad.npz", **feeds)
    result = _compile(tmp_path, "vad.npz")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "vad-out" / "manifest.json").read_text())
    accuracy = manifest["accuracy"]
    assert accuracy["layout"] == {"layout": "per-sample",
                                  "how": "read from the shapes (per-sample feeds)"}
    assert "32 samples from vad.npz; per-sample feeds ([S, *input shape], one complete feed " \
           "each): read from the shapes (per-sample feeds), fed one feed at a time" in accuracy["data"]
    assert "per-sample feeds" in (tmp_path / "vad-out" / "report.txt").read_text()
    assert ("accuracy data read as per-sample: read from the shapes"
            in (tmp_path / "vad-out" / "report.html").read_text())
    # Every candidate, int8 ones included, was built and scored on those feeds.
    # Every candidate, int8 ones included (calibrated per feed, through both branches of
    # the If), was built and scored on those feeds.
    scored = {c["label"]: c for c in manifest["candidates"] if c["status"] != "skipped"}
    assert sum(label.startswith("int8") for label in scored) >= 2, list(scored)
    for label, candidate in scored.items():
        assert candidate["status"] in ("chosen", "held", "rejected"), (label, candidate)
        assert candidate["accuracy"] == "inf" or candidate["accuracy"] > 25, (label, candidate)
    # The fp32 artifact's outputs, fed the same file by `edgec run`, are onnxruntime's on
    # each feed (1e-5: the same kernels; only graph optimizations differ).
    fp32 = _edgec("compile", "vad.onnx", "--spec", "vad.edge", "-o", "fp32-out",
                  "--cache-dir", "cache", "--backend", "ort", cwd=tmp_path)
    assert fp32.returncode in (0, 4), fp32.stderr
    chosen = tmp_path / "vad-out"
    run = _edgec("run", chosen, "--inputs", "vad.npz", "-o", "outs.npz", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    outs = np.load(tmp_path / "outs.npz")
    want = _ort_per_feed(vad_model(), feeds)
    assert outs["prob"].shape == (32, 1, 1) and outs["state_out"].shape == (32, 2, 1, HIDDEN)
    if manifest["configuration"]["precision"] == "fp32":
        np.testing.assert_allclose(outs["prob"], want[0], atol=1e-5)
        np.testing.assert_allclose(outs["state_out"], want[1], atol=1e-5)


def test_compile_refuses_mixed_layouts_in_one_line(tmp_path):
    feeds = vad_feeds(8)
    feeds["x"] = feeds["x"][:, 0]
    np.savez(tmp_path / "mixed.npz", **feeds)
    line = _one_error_line(_compile(tmp_path, "mixed.npz", json_out=False))
    assert line.startswith(f"{tmp_path / 'mixed.npz'}: error: arrays in different layouts: 'x' [8, 64] is "
                           "batch-leading (the rank of input [N, 64]), 'state' [8, 2, 1, 8] "
                           "per-sample (one more)"), line


def test_compile_refuses_data_that_is_not_the_spec_layout(tmp_path):
    np.savez(tmp_path / "vad.npz", **vad_feeds(8))
    line = _one_error_line(_compile(tmp_path, "vad.npz", extra="  layout batch\n",
                                    json_out=False))
    assert "the spec's layout is batch, but array 'x' has shape [8, 1, 64]" in line, line


# --------------------------------------------------------------------------- edgec run


def test_edgec_run_takes_both_layouts(tmp_path):
    rng = np.random.default_rng(0)
    weight = rng.normal(0, 1, (FEATURES, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.normal(0, 1, (6, FEATURES)).astype(np.float32)
    np.savez(tmp_path / "rows.npz", x=x)
    np.savez(tmp_path / "feeds.npz", x=x[:, None])
    result = _compile(tmp_path, "feeds.npz", model=model, name="mm")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "mm-out" / "manifest.json").read_text())
    assert manifest["accuracy"]["layout"]["layout"] == "per-sample"
    for name in ("rows", "feeds"):
        run = _edgec("run", "mm-out", "--inputs", f"{name}.npz", "-o", f"{name}-y.npz",
                     cwd=tmp_path)
        assert run.returncode == 0, run.stderr
    rows, feeds = np.load(tmp_path / "rows-y.npz")["y"], np.load(tmp_path / "feeds-y.npz")["y"]
    assert rows.shape == (6, 3) and feeds.shape == (6, 1, 3)
    np.testing.assert_allclose(feeds[:, 0], rows, rtol=1e-5, atol=1e-5)
    want = x @ weight
    if manifest["configuration"]["precision"] == "fp32":
        np.testing.assert_allclose(rows, want, rtol=1e-4, atol=1e-4)
    else:  # int8 chosen: within the spec's 25 dB of fp32
        assert 10 * np.log10(np.sum(want ** 2) / np.sum((rows - want) ** 2)) >= 25


@pytest.fixture(scope="module")
def vad_artifact(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vad")
    np.savez(folder / "vad.npz", **vad_feeds(8))
    onnx.save(vad_model(), folder / "vad.onnx")
    (folder / "vad.edge").write_text(SPEC.format(data="vad.npz", extra="").replace(
        "precision fp32, int8", "precision fp32"))
    result = _edgec("compile", "vad.onnx", "--spec", "vad.edge", "-o", "out", "--cache-dir",
                    "cache", cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder


@pytest.mark.parametrize("change, words", [
    (lambda f: f.update(x=f["x"][:, 0]),
     "error: inputs in different layouts: 'x' [4, 64] is batch-leading (the rank of input "
     "[N, 64]), 'state' [4, 2, 1, 8] per-sample (one more)"),
    (lambda f: f.update(sr=np.array(16000, np.int64)),
     "error: array 'sr' holds one value (shape []) for the scalar input 'sr', but 'x' "
     "[4, 1, 64] holds per-sample feeds: give 'sr' one value per feed, shape [S]"),
    (lambda f: f.update(state=np.zeros((4, 3, 1, HIDDEN), np.float32)),
     "error: array 'state' has shape [4, 3, 1, 8]: 3 along axis 1; the model's input is "
     "[2, N, 8], so per-sample feeds are [S, 2, N, 8] (2 along axis 1)"),
    (lambda f: f.update(sr=f["sr"][:3]),
     "error: inputs hold different sample counts: x: 4, state: 4, sr: 3"),
])
def test_edgec_run_refuses_bad_feeds_in_one_line(vad_artifact, tmp_path, change, words):
    feeds = vad_feeds(4)
    change(feeds)
    np.savez(tmp_path / "bad.npz", **feeds)
    line = _one_error_line(_edgec("run", vad_artifact / "out", "--inputs", "bad.npz", "-o",
                                  "o.npz", cwd=tmp_path))
    assert line.startswith(f"bad.npz: {words}"), line


def test_edgec_run_feeds_a_scalar_and_a_state_per_sample(vad_artifact, tmp_path):
    feeds = vad_feeds(5, seed=7)
    np.savez(tmp_path / "feeds.npz", **feeds)
    run = _edgec("run", vad_artifact / "out", "--inputs", "feeds.npz", "-o", "y.npz",
                 cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    got = np.load(tmp_path / "y.npz")
    want = _ort_per_feed(vad_model(), feeds)  # fp32 artifact: onnxruntime's own kernels
    np.testing.assert_allclose(got["prob"], want[0], atol=1e-5)
    np.testing.assert_allclose(got["state_out"], want[1], atol=1e-5)


# --------------------------------------------------------------------------- TVM over RPC


def test_a_module_bound_to_a_batch_still_takes_scalars_and_states():
    """Measuring over RPC (`_measure_rpc`) and scoring there (`RemoteTVMRunner`) check
    the bound batch only on inputs that have it on axis 0, and hand a scalar to TVM as
    the 0-d array it is."""
    import_or_missing("tvm")
    import tvm

    from edgec.backends.base import BackendError
    from edgec.backends.tvm import RemoteTVMRunner, _check_batch

    shapes = {"x": [1, FEATURES], "state": [2, 1, HIDDEN], "sr": []}  # as details record them
    feed = {k: v[0, ...] for k, v in vad_feeds(2).items()}
    _check_batch(list(shapes), feed, 1, shapes)  # sr is a scalar, state's axis 0 is 2
    with pytest.raises(BackendError, match="input 'x' has batch 3"):
        _check_batch(list(shapes), {**feed, "x": np.zeros((3, FEATURES), np.float32)}, 1, shapes)
    runner = RemoteTVMRunner(input_names=list(shapes), output_names=["prob"], vm=None,
                             device=tvm.cpu(), session=None, batch=1, input_shapes=shapes)
    arguments = runner._arguments(feed)
    assert [tuple(a.shape) for a in arguments] == [(1, FEATURES), (2, 1, HIDDEN), ()]
    assert int(arguments[2].numpy()) == int(feed["sr"])
