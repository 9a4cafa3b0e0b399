"""The example plugin's metric (examples/edgec-plugin-example: character-error-rate)
works as docs/metrics.md says: installed as a (fake) distribution with an
`edgec.metrics` entry point, a spec names it, and a compile scores candidates with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import onnx
import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "edgec-plugin-example"
sys.path.insert(0, str(EXAMPLE))

from edgec_plugin_example.character_error_rate import (character_error_rate,  # noqa: E402
                                                       edit_distance)
from edgec.testing.plugins import fake_distribution  # noqa: E402


def _logits(classes, count=5):
    return np.eye(count, dtype=np.float32)[np.asarray(classes)]


def test_edit_distance_and_the_rate_by_hand():
    assert edit_distance((1, 2, 3), (1, 3)) == 1       # one deletion
    assert edit_distance((1, 2, 3), (3, 2, 1)) == 2    # two substitutions
    assert edit_distance((), (4, 4)) == 2
    # fp32 decodes (1, 2) and (3,); the candidate (1, 4, 2) and (3,): 1 error in 3 characters
    ref = [_logits([[1, 1, 0, 2], [0, 3, 3, 0]])]
    cand = [_logits([[1, 4, 0, 2], [0, 3, 0, 0]])]
    assert character_error_rate(ref, cand, None) == pytest.approx(1 / 3)
    assert character_error_rate(ref, ref, None) == 0.0
    assert character_error_rate.higher_is_better is False


def test_a_spec_names_the_plugin_metric_and_a_compile_scores_with_it(tmp_path):
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    site = tmp_path / "site"
    fake_distribution(site, project["name"], project["version"], {},
                      groups=project["entry-points"])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(site), str(EXAMPLE), str(REPO), os.environ.get("PYTHONPATH", "")]))

    from edgec.testing.corpus import MODELS
    crnn = MODELS["crnn"](width=64)
    onnx.save(crnn.model, tmp_path / "rec.onnx")
    np.savez(tmp_path / "x.npz", **crnn.data(32, 1)[0])
    (tmp_path / "rec.edge").write_text(
        "target host\naccuracy {\n  metric character-error-rate\n  tolerance 0.2\n"
        '  data "x.npz"\n}\noptimize {\n  precision fp32, int8\n  fallback none\n'
        "  backend ort\n  search fastest\n}\n")
    result = subprocess.run([sys.executable, "-m", "edgec", "compile", "rec.onnx", "--spec",
                             "rec.edge", "-o", "out", "--cache-dir", "cache"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["accuracy"]["metric"] == "character-error-rate"
    int8 = [c for c in manifest["candidates"]
            if c["label"].startswith("int8") and c["status"] != "skipped"]
    assert int8 and all(0 <= c["accuracy"] <= 0.2 for c in int8), int8
    assert manifest["candidates"][0]["accuracy"] == 0.0  # fp32 against itself
