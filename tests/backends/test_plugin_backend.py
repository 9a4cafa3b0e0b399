"""A backend from another distribution: examples/edgec-backend-example (``ort-reference``,
onnxruntime with its graph optimizations off) found through the ``edgec.backends`` entry
points, selected by ``--backend`` and by a spec, and asked for its capabilities.

The example is installed as a (fake) distribution: its package plus a dist-info folder
with its entry points, which is what pip would leave behind. CLI tests put that folder
on PYTHONPATH of a fresh ``edgec`` process; in-process tests put it on ``sys.path`` and
clear the backend registry's cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import edgec
from edgec import backends
from edgec.dsl import check_text
from edgec.planner.search import configurations
from edgec.testing.plugins import fake_distribution

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "edgec-backend-example"
DIGITS = REPO / "spec_examples" / "digits.onnx"
DIGITS_DATA = REPO / "spec_examples" / "data" / "digits.npz"
ALL_PASSES = {"quantize-int8", "convert-fp16", "prune-channels", "prune-unstructured"}

SPEC = """target host
budget {{
  latency < 1000 ms p50
}}
accuracy {{
  metric top1-agreement
  tolerance 1 %
  data "{data}"
}}
optimize {{
  precision {precisions}
  backend {backend}
}}
"""


def _fake_distribution(site: Path, name: str, version: str, entry_points: dict[str, str],
                       package: Path | None = None) -> None:
    fake_distribution(site, name, version, entry_points, package, group="edgec.backends")


def _install_example(site: Path) -> None:
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    _fake_distribution(site, project["name"], project["version"],
                       project["entry-points"]["edgec.backends"],
                       EXAMPLE / "edgec_backend_example")


def _edgec(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    # The checkout under test after the plugin: its edgec, not another installed copy.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO)]))
    return subprocess.run([sys.executable, "-m", "edgec", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _write_spec(path: Path, backend: str, precisions: str = "fp32") -> Path:
    path.write_text(SPEC.format(data=DIGITS_DATA, backend=backend, precisions=precisions))
    return path


def _clear_registry() -> None:
    backends._entry_points.cache_clear()
    backends.get_backend.cache_clear()


@pytest.fixture
def plugin_site(tmp_path):
    """The example installed on ``sys.path`` of this process, for the registry to find."""
    site = tmp_path / "site"
    _install_example(site)
    sys.path.insert(0, str(site))
    _clear_registry()
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        for name in [m for m in sys.modules if m.startswith("edgec_backend_example")]:
            del sys.modules[name]
        _clear_registry()


def _reference_logits(x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(DIGITS), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def test_the_registry_finds_the_plugin_and_its_capabilities(plugin_site):
    assert "ort-reference" in backends.backend_names()
    declared = backends.capabilities("ort-reference")
    assert declared.precisions == ("fp32", "fp16") and not declared.in_auto
    # `auto` tries what declares in_auto (the built-ins), cheap builds first.
    assert backends.auto_backends() == (["ort", "tvm"], [])


def test_selected_by_backend_flag_and_its_artifact_matches_onnxruntime(plugin_site, tmp_path):
    spec = _write_spec(tmp_path / "s.edge", "auto")
    result = _edgec(plugin_site, "compile", str(DIGITS), "--spec", str(spec), "--backend",
                    "ort-reference", "-o", "out", "--cache-dir", "cache", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert [c["backend"] for c in document["candidates"] if "backend" in c] == ["ort-reference"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["backend"]["name"] == "ort-reference"
    assert "ort-reference.json" in manifest["files"]
    assert manifest["backend"]["details"]["settings"]["graph_optimization_level"] == \
        "ORT_DISABLE_ALL"

    # Loaded back through the plugin: the same logits as onnxruntime on the original
    # model, up to float reassociation by edgec's fp32 passes (tolerance 1e-4 relative
    # to the largest logit).
    x = np.load(DIGITS_DATA)["input"][:32]
    got = edgec.load(tmp_path / "out").run({"input": x})["logits"]
    want = _reference_logits(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert (got.argmax(1) == want.argmax(1)).all()

    # `edgec run` and `edgec bench` take it too: the plugin loads it, the device runtime
    # reads the inputs (here per-sample feeds, [S, *input shape]) and times it.
    np.savez(tmp_path / "in.npz", input=x[:, None])
    ran = _edgec(plugin_site, "run", "out", "--inputs", "in.npz", "-o", "o.npz", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    np.testing.assert_allclose(np.load(tmp_path / "o.npz")["logits"].reshape(want.shape), want,
                               rtol=1e-4, atol=1e-4 * np.abs(want).max())
    bench = _edgec(plugin_site, "bench", "out", "--json", cwd=tmp_path)
    assert bench.returncode == 0, bench.stderr
    timed = json.loads(bench.stdout)
    assert timed["backend"] == "ort-reference" and timed["p50_ms"] > 0


def test_selected_by_the_spec(plugin_site, tmp_path):
    spec = _write_spec(tmp_path / "s.edge", "ort-reference")
    checked = _edgec(plugin_site, "check", str(spec), "--json", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["spec"]["optimize"]["backend"] == "ort-reference"
    result = _edgec(plugin_site, "compile", str(DIGITS), "--spec", str(spec), "-o", "out",
                    "--cache-dir", "cache", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["backend"]["name"] == "ort-reference"


def test_a_misspelt_backend_is_a_located_error_that_suggests_the_plugin(tmp_path):
    spec = _write_spec(tmp_path / "s.edge", "ort-refrence")
    site = tmp_path / "site"
    _install_example(site)
    checked = _edgec(site, "check", str(spec), cwd=tmp_path)
    assert checked.returncode == 2
    assert "s.edge:12:11: error: unknown backend 'ort-refrence'; did you mean 'ort-reference'?" \
        in checked.stderr, checked.stderr
    assert "backends: auto, ort, ort-reference, tvm" in checked.stderr
    flag = _edgec(site, "compile", str(DIGITS), "--spec", str(spec), "--backend", "trt",
                  cwd=tmp_path)
    assert flag.returncode == 2 and "Traceback" not in flag.stderr
    assert "invalid choice: 'trt'" in flag.stderr and "'ort-reference'" in flag.stderr


def test_int8_is_not_planned_on_a_backend_that_declares_no_int8(plugin_site):
    spec, diagnostics = check_text(
        "target host\noptimize {\n  precision fp32, int8\n  backend ort-reference\n}\n", "<t>")
    assert spec is not None, [d.render() for d in diagnostics]
    configs, skipped = configurations(spec, spec.target, "ort-reference", ALL_PASSES)
    assert [c.label for c in configs] == ["fp32 on ort-reference"]
    [int8] = [s for s in skipped if s.label == "int8"]
    assert int8.reason == (
        "the ort-reference backend has no int8 kernels (with graph optimizations off "
        "onnxruntime runs Q/DQ models in fp32 between quantize and dequantize); "
        "use backend ort or auto")


def test_a_plugin_whose_capabilities_are_not_capabilities_is_named(tmp_path):
    site = tmp_path / "site"
    (site / "oddbackend").mkdir(parents=True)
    (site / "oddbackend" / "__init__.py").write_text(
        "class Odd:\n    name = 'odd'\n    capabilities = {'precisions': ['fp32']}\n")
    _fake_distribution(site, "odd-backend", "0.1", {"odd": "oddbackend:Odd"})
    spec = _write_spec(tmp_path / "s.edge", "odd")
    result = _edgec(site, "compile", str(DIGITS), "--spec", str(spec), "-o", "out",
                    "--cache-dir", "cache", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert ("backend 'odd' (oddbackend:Odd) declares capabilities of type dict; expected "
            "edgec.backends.Capabilities") in result.stderr
    assert "Traceback" not in result.stderr
