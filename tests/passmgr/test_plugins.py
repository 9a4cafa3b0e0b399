"""Plugins: passes from other distributions, found through the `edgec.passes` entry points.

The example plugin in examples/edgec-plugin-example is installed as a (fake)
distribution: its package plus a dist-info folder with its entry points, on
PYTHONPATH of a fresh `edgec` process, which is what pip would leave behind.
"""

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from edgec.testing.plugins import fake_distribution

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "edgec-plugin-example"


def _fake_distribution(site: Path, name: str, version: str, entry_points: dict[str, str],
                       package: Path | None = None) -> None:
    fake_distribution(site, name, version, entry_points, package, group="edgec.passes")


def _install_example(site: Path) -> None:
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    _fake_distribution(site, project["name"], project["version"],
                       project["entry-points"]["edgec.passes"],
                       EXAMPLE / "edgec_plugin_example")


def _edgec(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(site))
    return subprocess.run([sys.executable, "-m", "edgec", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _documented_model(path: Path) -> None:
    node = helper.make_node("Relu", ["x"], ["y"], doc_string="exported from line 12 of model.py")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                              doc_string="the graph")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              doc_string="a model")
    onnx.save(model, path)


def test_plugin_pass_is_listed_with_its_distribution(tmp_path):
    _install_example(tmp_path / "site")
    result = _edgec(tmp_path / "site", "passes", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    passes = {p["name"]: p for p in json.loads(result.stdout)["passes"]}
    entry = passes["strip-doc-strings"]
    assert entry["source"] == "edgec-plugin-example"
    assert entry["options"] == [{"name": "keep-model-doc", "type": "bool", "default": False,
                                 "help": "keep the model-level doc string"}]
    text = _edgec(tmp_path / "site", "passes", cwd=tmp_path).stdout
    assert "[plugin: edgec-plugin-example]" in text


def test_plugin_pass_runs_through_edgec_opt(tmp_path):
    _install_example(tmp_path / "site")
    _documented_model(tmp_path / "m.onnx")
    result = _edgec(tmp_path / "site", "opt", "m.onnx", "-p",
                    "strip-doc-strings{keep-model-doc=true}", "-o", "out.onnx", "--stats",
                    "--verify-each", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 strip-doc-strings - doc-strings-removed" in result.stderr
    out = onnx.load(tmp_path / "out.onnx")
    assert out.doc_string == "a model"
    assert out.graph.doc_string == "" and out.graph.node[0].doc_string == ""


def test_a_plugin_that_fails_to_import_is_named_and_does_not_take_others_down(tmp_path):
    site = tmp_path / "site"
    _install_example(site)
    _fake_distribution(site, "broken-plugin", "0.1", {"shiny": "no_such_module:Shiny"})
    result = _edgec(site, "passes", cwd=tmp_path)
    assert result.returncode == 0
    assert "strip-doc-strings" in result.stdout
    assert "plugin 'broken-plugin' failed to load entry point 'shiny = no_such_module:Shiny'" \
        in result.stderr
    assert "ModuleNotFoundError" in result.stderr
    _documented_model(tmp_path / "m.onnx")
    used = _edgec(site, "opt", "m.onnx", "-p", "shiny", cwd=tmp_path)
    assert used.returncode == 2
    assert "pass 'shiny' is unavailable: plugin 'broken-plugin' failed to load" in used.stderr
    assert "Traceback" not in used.stderr


def test_duplicate_pass_names_are_an_error_naming_both(tmp_path):
    site = tmp_path / "site"
    _install_example(site)
    _fake_distribution(site, "copycat", "0.1",
                       {"strip-doc-strings": "edgec_plugin_example.strip_doc_strings:StripDocStrings"})
    result = _edgec(site, "passes", cwd=tmp_path)
    assert result.returncode == 2
    assert ("pass 'strip-doc-strings' is defined twice: by 'copycat' and 'edgec-plugin-example'"
            in result.stderr)
    _documented_model(tmp_path / "m.onnx")
    used = _edgec(site, "opt", "m.onnx", "-p", "strip-doc-strings", cwd=tmp_path)
    assert used.returncode == 2
    assert "defined twice" in used.stderr or "ambiguous" in used.stderr


def test_an_entry_point_that_is_not_a_pass_is_rejected_with_the_reason(tmp_path):
    site = tmp_path / "site"
    (site / "oddplugin").mkdir(parents=True)
    (site / "oddplugin" / "__init__.py").write_text(
        "from dataclasses import dataclass\nfrom typing import ClassVar\n"
        "from edgec.passmgr import Pass\n"
        "def not_a_pass(): pass\n"
        "@dataclass(frozen=True)\nclass Misnamed(Pass):\n    name: ClassVar[str] = 'other'\n"
        "    def run(self, model, ctx): pass\n")
    _fake_distribution(site, "oddplugin", "0.1", {"func": "oddplugin:not_a_pass",
                                                  "misnamed": "oddplugin:Misnamed"})
    result = _edgec(site, "passes", cwd=tmp_path)
    assert "plugin 'oddplugin' entry point 'func = oddplugin:not_a_pass' is not a valid pass" \
        in result.stderr
    assert "its name is 'other' but the entry point is named 'misnamed'" in result.stderr


def test_the_example_plugins_own_tests_pass():
    """The example plugin tests its pass with edgec.testing.passes, as a plugin author
    would: its tests run here against this checkout's edgec."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(EXAMPLE), str(REPO)]),
               PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "tests"], cwd=EXAMPLE, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "4 passed" in result.stdout.splitlines()[-1]
