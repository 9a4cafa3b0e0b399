"""Issue 10's exporter-style corpus models through the tvm backend (untuned builds): each
compiles with ``backend tvm`` for this host and matches onnxruntime within 1e-4 relative,
and cross-compiles for the Raspberry Pi 4 (aarch64) and the Jetson (CUDA, aarch64 host),
which is not run here. What legalize-tvm does for each: the CRNN recognizer's BiLSTM is
unrolled (unroll-rnn), the DBNet detector's Paddle2ONNX Resize inputs (empty roi and
scales beside run-time sizes) are dropped and folded, the jax2tf CNN's run-time Reshape
shape folds once the batch is bound. A model TVM still cannot take names the node, the
op and the rewrite it would need (tests/conformance/test_tvm_rewrites.py). The
Silero-style VAD, whose STFT input shape depends on an If on its run-time sample rate,
compiles once sink-into-if has moved what follows the If into its branches."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import edgec
from edgec.testing import corpus
from edgec.testing.required import import_or_missing

import_or_missing("tvm")

# Small inputs keep the untuned builds fast: the detector at 64x64.
HOST_MODELS = {"dbnet": {"size": 64}, "crnn": {}, "jax2tf-cnn": {}, "mobilenet-v3-small": {"size": 96}}
RELATIVE = 1e-4


def _corpus_model(name: str):
    return corpus.MODELS[name](**HOST_MODELS.get(name, {}))  # built once, then cached on disk


def _compile(tmp_path, proto: onnx.ModelProto, target: str):
    onnx.save(proto, tmp_path / "model.onnx")
    spec = tmp_path / "tvm.edge"
    spec.write_text(f"target {target}\nbudget {{\n  latency < 100 s p50 at batch 1\n}}\n"
                    "optimize {\n  backend tvm\n}\n")
    return edgec.compile(tmp_path / "model.onnx", spec, out=tmp_path / "out",
                         cache_dir=str(tmp_path / "cache"), allow_over_budget=True)


def _one_feed(model) -> dict[str, np.ndarray]:
    inputs, _ = model.data(1, 1)
    if model.layout == "per-sample":
        return {k: v[0] for k, v in inputs.items()}
    return {k: v[:1] for k, v in inputs.items()}


@pytest.mark.parametrize("name", sorted(HOST_MODELS))
def test_corpus_model_compiles_for_tvm_on_host_and_matches_onnxruntime(tmp_path, legalize_tvm_registered, name):
    model = _corpus_model(name)
    art = _compile(tmp_path, model.model, "host")
    assert art.manifest["backend"]["name"] == "tvm"
    assert "legalize-tvm" in art.manifest["configuration"]["pipeline"]
    feed = _one_feed(model)
    session = ort.InferenceSession(model.model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = art.run(feed)
    for output, want in zip(session.get_outputs(), session.run(None, feed)):
        np.testing.assert_allclose(got[output.name], want, rtol=RELATIVE, atol=1e-6)


def _cross_cases():
    for name in [*sorted(HOST_MODELS), "silero-vad"]:
        for target in ("raspberry-pi-4", "jetson-orin-nano"):
            # One of each in the default run: the Jetson's MobileNetV3-small is the build
            # TVM's own CUDA pipeline fails (tests/backends/test_tvm_gpu_schedule.py).
            fast = (name, target) in {("crnn", "raspberry-pi-4"),
                                      ("mobilenet-v3-small", "jetson-orin-nano")}
            marks = [] if fast else [pytest.mark.slow]
            yield pytest.param(name, target, marks=marks, id=f"{name}-{target}")


@pytest.mark.parametrize("name,target", list(_cross_cases()))
def test_corpus_model_cross_compiles_for_tvm(tmp_path, legalize_tvm_registered, name, target):
    """Built for the Raspberry Pi 4's aarch64 CPU, and for the Jetson's CUDA (its host code
    is aarch64; its kernels compiled to a cubin where nvcc is here); not run here."""
    art = _compile(tmp_path, _corpus_model(name).model, target)
    assert art.manifest["backend"]["name"] == "tvm"
    described = subprocess.run(["file", str(tmp_path / "out" / "model.so")], capture_output=True,
                               text=True).stdout
    assert "ARM aarch64" in described
    if target == "jetson-orin-nano":
        cuda = art.manifest["backend"]["details"]["cuda"]
        assert cuda["source_in_module"]
        if shutil.which("nvcc"):
            assert cuda["cubin"] and (tmp_path / "out" / cuda["cubin"]).stat().st_size > 0, cuda
        fallbacks = cuda["schedule_fallbacks"]
        if name == "mobilenet-v3-small":
            # Its squeeze-and-excitation functions, one per SE block, go to the next rule.
            assert fallbacks and {(f["rule"], f["scheduled_by"]) for f in fallbacks} == {
                ("Matmul", "Fallback")}, fallbacks
            assert all("multiply" in f["function"] for f in fallbacks), fallbacks
        else:
            assert fallbacks == []  # TVM's own schedules throughout


@pytest.mark.parametrize("name", ["crnn", "dbnet"])
def test_a_corpus_model_is_refused_raw_naming_node_op_and_rewrite(name):
    """As exported, TVM's importer refuses them; the reason says where and what would help."""
    from edgec.backends.tvm import TVMBackend
    from edgec.diagnostics import ModelError

    with pytest.raises(ModelError) as raised:
        TVMBackend().check_model(_corpus_model(name).model)
    message = raised.value.diagnostics[0].message
    assert "TVM cannot import node '" in message and "[needs " in message, message


def test_the_vad_compiles_for_tvm_and_matches_onnxruntime_at_both_sample_rates(tmp_path,
                                                                               legalize_tvm_registered):
    """The Silero-style VAD picks its framing by an If on the run-time sample rate (every
    second sample, or all), so the STFT's Pad after it has a shape TVM cannot know.
    sink-into-if moves the STFT and the encoder into both branches, up to the pooled
    [N, 64] features; unroll-rnn takes the LSTM. Both rates run through one module."""
    model = _corpus_model("silero-vad")
    art = _compile(tmp_path, model.model, "host")
    assert art.manifest["backend"]["name"] == "tvm"
    inputs, _ = model.data(4, 1)  # per-sample feeds [S, ...]: voiced and noise chunks
    session = ort.InferenceSession(model.model.SerializeToString(), providers=["CPUExecutionProvider"])
    for rate in (16000, 8000):
        feeds = {**inputs, "sr": np.full(len(inputs["sr"]), rate, np.int64)}
        got = art.run(feeds)
        for sample in range(len(feeds["sr"])):
            feed = {k: np.asarray(v[sample]) for k, v in feeds.items()}
            for output, want in zip(session.get_outputs(), session.run(None, feed)):
                np.testing.assert_allclose(got[output.name][sample], want, rtol=RELATIVE, atol=1e-6,
                                           err_msg=f"{output.name} at {rate} Hz, sample {sample}")


def test_a_tvm_build_failure_is_one_named_line(tmp_path, legalize_tvm_registered, monkeypatch):
    """A TVM build that fails inside TVM (here: every dlight rule that applies to a fused
    function raises, as TVM 0.27's Matmul rule raised on MobileNetV3-small's SE functions)
    is one named line and exit 3 with ``backend tvm`` asked for, not a traceback."""
    from edgec.backends import tvm_gpu_schedule
    from edgec.diagnostics import ModelError

    class AlwaysRaises:
        def apply(self, func, target, tunable):
            raise AssertionError("There are some consumers of the cache-write stage that "
                                 "are not properly inlined.")

    monkeypatch.setattr(tvm_gpu_schedule, "default_rules", lambda: [("Matmul", AlwaysRaises())])
    model = _corpus_model("jax2tf-cnn").model
    with pytest.raises(ModelError) as raised:
        _compile(tmp_path, model, "jetson-orin-nano")
    assert raised.value.exit_code == 3
    message = raised.value.diagnostics[0].message
    assert message.startswith("tvm failed to build this model for jetson-orin-nano: "), message
    # TVM's FFI hands the pass's ScheduleFailed back as a RuntimeError.
    assert "Error: no dlight GPU rule schedules the fused function '" in message, message
    assert "the Matmul rule raised AssertionError" in message and "\n" not in message, message


def test_a_batch_legalize_tvm_bound_is_said_in_the_report(tmp_path, legalize_tvm_registered):
    """The jax2tf CNN reads its shapes at run time, so bind-dims binds its symbolic batch
    to the spec's: the untuned module takes batch 1 only. The manifest said so
    (backend.details.batch) but no note did, as one does for a batch tuning bound."""
    art = _compile(tmp_path, _corpus_model("jax2tf-cnn").model, "host")
    backend = art.manifest["backend"]
    assert backend["details"]["batch"] == 1 and not backend["tuned"]
    (note,) = [n for n in backend["notes"] if "takes batch 1 only" in n]
    assert "bind-dims" in note
    assert note in (tmp_path / "out" / "report.txt").read_text()
