"""TVM's own console output goes to a log file under the cache, not the terminal: its C++
warnings ("Fast mode segfaults when there are out-of-bounds indices", once per Gather)
and MetaSchedule's console logging ("[INFO] Logging directory: ..."). edgec's progress
lines still reach stderr."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgec.testing.required import import_or_missing

REPO = Path(__file__).resolve().parents[2]


_SCRIPT = """
import logging, os, sys
from edgec.backends.logs import backend_output_to
with backend_output_to(sys.argv[1]):
    os.write(2, b"native warning\\n")
    os.write(1, b"native stdout\\n")
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(logging.StreamHandler(sys.stdout))   # as MetaSchedule's dictConfig does
    logger.info("Logging directory: /tmp/x")
    print("edgec progress", file=sys.stderr)
print("after", [type(h).__name__ for h in logger.handlers])
logger.info("later")
"""


def test_native_output_and_metaschedule_logging_go_to_the_log(tmp_path):
    log = tmp_path / "logs" / "tvm.log"
    run = subprocess.run([sys.executable, "-c", _SCRIPT, str(log)], capture_output=True,
                         text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert run.returncode == 0, run.stderr
    assert run.stderr == "edgec progress\n"
    assert run.stdout == "after []\n"   # MetaSchedule's console handler is gone afterwards
    text = log.read_text()
    assert "native warning" in text and "native stdout" in text and "Logging directory" in text


def test_tvm_gather_warning_stays_off_the_terminal(tmp_path):
    import_or_missing("tvm")
    table = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32), "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["emb"]),
         helper.make_node("Relu", ["emb"], ["y"])], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8])],
        initializer=[table])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]),
              tmp_path / "gather.onnx")
    (tmp_path / "s.edge").write_text("target host\naccuracy {\n  metric max-abs-error\n"
                                     "  tolerance 0.001\n}\noptimize {\n  backend tvm\n}\n")
    result = subprocess.run([sys.executable, "-m", "edgec", "compile", "gather.onnx", "--spec",
                             "s.edge", "-o", "out", "--cache-dir", "cache"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "Fast mode" not in result.stderr + result.stdout
    assert "ALL BUDGETS HOLD" in result.stderr and "edgec: plan" in result.stderr
    assert "Fast mode segfaults" in (tmp_path / "cache" / "logs" / "tvm.log").read_text()
