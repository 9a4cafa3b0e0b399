"""Issue 10's must-show on the corpus models (`edgec.testing.corpus`, small sizes):

- the Silero-style LSTM VAD compiles with per-sample data for its state [2, N, 128] and
  its scalar int64 sample rate (and the If on it), int8 candidates included;
- the CRNN recognizer's int8 candidates are scored per position and by sequence
  agreement (CTC-decoded), and those scores are in the manifest.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgec.metrics import ctc_collapse, predictions
from edgec.testing.corpus import MODELS

SPEC = """target host
budget {{
  latency < 1 s p50 at batch 1
}}
accuracy {{
  metric {metric}
  tolerance {tolerance}
  data "data.npz"
}}
optimize {{
  precision fp32, int8
  fallback {fallback}
  backend ort
  search fastest
}}
"""


def _compile(folder, model, inputs, metric, tolerance, fallback="none"):
    onnx.save(model, folder / "model.onnx")
    np.savez(folder / "data.npz", **inputs)
    (folder / "spec.edge").write_text(SPEC.format(metric=metric, tolerance=tolerance,
                                                  fallback=fallback))
    result = subprocess.run([sys.executable, "-m", "edgec", "compile", "model.onnx", "--spec",
                             "spec.edge", "-o", "out", "--cache-dir", "cache"], cwd=folder,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    return json.loads((folder / "out" / "manifest.json").read_text())


def test_the_corpus_vad_compiles_with_per_sample_state_and_sample_rate(tmp_path):
    vad = MODELS["silero-vad"]()
    assert vad.layout == "per-sample"
    inputs, _ = vad.data(32, 1)
    assert inputs["state"].shape == (32, 2, 1, 128) and inputs["sr"].shape == (32,)
    manifest = _compile(tmp_path, vad.model, inputs, "sqnr", "25 dB")
    assert manifest["accuracy"]["layout"] == {"layout": "per-sample",
                                              "how": "read from the shapes (per-sample feeds)"}
    assert "fed one feed at a time" in manifest["accuracy"]["data"]
    built = [c for c in manifest["candidates"] if c["status"] != "skipped"]
    int8 = [c for c in built if c["label"].startswith("int8")]
    assert len(int8) >= 2, manifest["candidates"]
    for candidate in built:  # every one built and scored on the per-sample feeds
        assert candidate["status"] in ("chosen", "held", "rejected"), candidate
        # A score, whatever it is (int8 on all ops loses the VAD: that is int8's matter).
        assert isinstance(candidate["accuracy"], (int, float)), candidate
    # `edgec run` feeds the same file one feed at a time; the fp32 model's outputs on each
    # feed (onnxruntime) are what it gives for an fp32 artifact, 25 dB within for int8.
    run = subprocess.run([sys.executable, "-m", "edgec", "run", "out", "--inputs", "data.npz",
                          "-o", "y.npz"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    session = ort.InferenceSession(vad.model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    want = np.stack([session.run(None, {k: v[i, ...] for k, v in inputs.items()})[0]
                     for i in range(32)])
    got = np.load(tmp_path / "y.npz")[session.get_outputs()[0].name]
    assert got.shape == want.shape == (32, 1, 1)
    noise = np.sum((got - want) ** 2)
    assert noise == 0 or 10 * np.log10(np.sum(want ** 2) / noise) >= 25


@pytest.mark.parametrize("metric, fallback", [("top1-agreement", "none"),
                                              ("sequence-agreement", "per-layer")])
def test_the_corpus_recognizer_int8_candidates_are_scored_per_position_and_by_sequence(
        tmp_path, metric, fallback):
    crnn = MODELS["crnn"](width=64)
    inputs, _ = crnn.data(32, 1)
    manifest = _compile(tmp_path, crnn.model, inputs, metric, "5 %", fallback)
    int8 = [c for c in manifest["candidates"]
            if c["label"].startswith("int8") and c["status"] != "skipped"]
    assert len(int8) >= 2, manifest["candidates"]
    # The fp32 model's own classes on the samples scored (the odd-numbered half).
    session = ort.InferenceSession(crnn.model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    reference = session.run(None, {"x": inputs["x"][1::2]})[0]
    classes = predictions(reference)
    positions = reference.shape[1]
    assert classes.shape == (16, positions)
    assert len({ctc_collapse(row) for row in classes}) > 1  # the sequences differ: it can tell
    for candidate in int8:
        figures = candidate["accuracy_figures"]
        assert (figures["samples"], figures["positions"]) == (16, positions)
        assert 0 <= figures["per_sample"] <= figures["per_position"] <= 1
        key = "per_position" if metric == "top1-agreement" else "sequence_agreement"
        assert candidate["accuracy"] == figures[key]
        # The old top-1 (one argmax over the whole flattened [T, C]) scored int8 0 % here;
        # per position, int8 agrees with fp32 almost everywhere.
        assert figures["per_position"] > 0.9, candidate
    assert "caveat" not in manifest["accuracy"]
