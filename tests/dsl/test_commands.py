"""`edgec check` and `edgec targets` through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "spec_examples"

def edgec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgec", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_check_prints_the_resolved_spec_which_checks_again(tmp_path):
    done = edgec("check", "spec_examples/jetson.edge")
    assert done.returncode == 0, done.stderr
    assert "latency < 15 ms p50 at batch 1" in done.stdout
    assert "fast-precisions fp16, int8" in done.stdout   # the target, written out
    again = tmp_path / "resolved.edge"
    again.write_text(done.stdout)
    second = edgec("check", str(again))
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[1:] == done.stdout.splitlines()[1:]


def test_check_reports_every_error_and_exits_2():
    done = edgec("check", "spec_examples/invalid/several-errors.edge")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count(": error: ") == 6
    assert "several-errors.edge:5:16: error: unknown unit 'MiBs'; did you mean 'MiB'?\n" \
           "    memory < 512 MiBs\n                 ^~~~" in done.stderr


def test_check_json():
    done = edgec("check", "--json", "spec_examples/invalid/unit-mismatch.edge")
    assert done.returncode == 2
    report = json.loads(done.stdout)
    assert report["spec"] is None
    [diagnostic] = report["diagnostics"]
    assert (diagnostic["line"], diagnostic["column"], diagnostic["code"]) == \
        (4, 16, "spec.unit-mismatch")
    done = edgec("check", "--json", "spec_examples/rpi4.edge")
    assert done.returncode == 0
    spec = json.loads(done.stdout)["spec"]
    assert spec["target"]["name"] == "raspberry-pi-4"
    assert spec["budget"]["latency"]["limit"] == {"value": 20.0, "unit": "ms"}


def test_check_missing_file():
    done = edgec("check", "no-such.edge")
    assert done.returncode == 2
    assert "no-such.edge" in done.stderr and "Traceback" not in done.stderr


def test_targets_lists_the_built_ins():
    done = edgec("targets")
    assert done.returncode == 0
    names = [line.split()[0] for line in done.stdout.splitlines()]
    assert names == sorted(["host", "x86-64-v3", "jetson-orin-nano", "jetson-agx-orin",
                            "raspberry-pi-4", "raspberry-pi-5", "generic-aarch64",
                            "generic-armv7"])
    assert "Jetson Orin Nano" in done.stdout
    rows = json.loads(edgec("targets", "--json").stdout)["targets"]
    assert all(row["summary"] for row in rows)


def test_check_of_a_binary_file_is_one_line():
    """`edgec check model.onnx` (the model given as the spec) says so in one error, not a
    parse error for every run of binary bytes."""
    done = edgec("check", "spec_examples/digits.onnx")
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if ": error: " in line]
    assert errors == ["spec_examples/digits.onnx: error: not a spec file: it holds binary "
                      "data (an ONNX model? the spec is the .edge file)"]
    assert "\ufffd" not in done.stderr


def test_missing_include_suggestion_keeps_the_folder():
    done = edgec("check", "spec_examples/invalid/missing-include.edge")
    assert done.returncode == 2
    assert "did you mean '../team-base.edge'?" in done.stderr
