"""``benchmarks/backends.py --compare-legalize`` on tiny models at a 2-trial budget, so
that the path that compares the raw graph with the legalized one, each tuned cold, cannot
rot: a graph TVM imports only after legalize-tvm (the raw one is reported refused, with
the node), and one it imports either way but legalize-tvm rewrites (both are tuned, each
into its own database, and timed against onnxruntime)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.testing import models
from edgec.testing.required import import_or_missing

import_or_missing("tvm")

REPO = Path(__file__).resolve().parents[2]
# Two tiny models tuned cold (a 2-trial MetaSchedule round per task, twice for the
# second) take one to three minutes on a loaded 2-core machine.
pytestmark = pytest.mark.slow


@pytest.fixture
def bench(legalize_tvm_registered):
    spec = importlib.util.spec_from_file_location("backends_bench",
                                                  REPO / "benchmarks" / "backends.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module




def conv_softplus():
    """``x`` [1,3,8,8] -> Conv -> Softplus -> ``y``: TVM imports it as written, and
    legalize-tvm rewrites the Softplus (stable-softplus), so the graphs differ."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Softplus", ["c"], ["y"])], "conv_softplus",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(bench, tmp_path, name: str, capsys) -> tuple[dict, str]:
    out = tmp_path / "out.json"
    code = bench.main(["--compare-legalize", "--models", name, "--trials", "2",
                       "--rounds", "1", "--repeats", "3", "--threads", "1",
                       "--cache-dir", str(tmp_path / "cache"),
                       "--workdir", str(tmp_path / "work"), "--json", str(out),
                       "--caveat", "test"])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["trials"] == 2 and data["threads"] == 1 and data["caveat"] == "test"
    [row] = data["rows"]
    return row, capsys.readouterr().out


def _tuned(cell: dict) -> None:
    assert cell["imports"] is True
    assert cell["tasks_total"] >= 1 and cell["tasks_dynamic"] == 0
    assert cell["tasks_tuned"] == cell["tasks_total"]
    assert cell["trials_run"] >= 1  # a cold database: every task got its trial
    assert cell["ms"] > 0 and cell["ratio"] > 0 and cell["ort_in_rounds_ms"] > 0


def test_raw_graph_refused_by_tvm_is_reported_and_the_legalized_one_tuned(bench, tmp_path,
                                                                           capsys):
    row, printed = _run(bench, tmp_path, "exporter_cnn", capsys)
    assert row["raw"]["imports"] is False
    assert "Resize" in row["raw"]["error"]
    _tuned(row["legalized"])
    assert "-1 CastLike" in row["legalize"]
    assert "| exporter_cnn |" in printed and "| raw | no import:" in printed


def test_both_graphs_tuned_each_into_its_own_database(bench, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(bench.MODELS, "conv_softplus", conv_softplus)
    row, printed = _run(bench, tmp_path, "conv_softplus", capsys)
    _tuned(row["raw"])
    _tuned(row["legalized"])
    assert "Softplus" in row["legalize"]
    databases = sorted(p.name for p in (tmp_path / "cache" / "compare-legalize").iterdir())
    assert databases == ["legalized", "raw"]
    assert printed.count("| conv_softplus |") == 2


def test_same_graph_is_not_tuned_twice(bench, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(bench.MODELS, "conv_bn_relu", lambda: models.conv_bn_relu())
    row, printed = _run(bench, tmp_path, "conv_bn_relu", capsys)
    assert row["legalize"] == "none"
    assert row["raw"] == {"same_graph_as_legalized": True}
    _tuned(row["legalized"])
    assert "| raw | same graph |" in printed
