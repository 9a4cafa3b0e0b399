"""The compile cache key covers the code that produced an artifact, not only edgec's
version: a pass edited under the same version, or a plugin's code or version changed,
is a new compile, never "OUT is up to date"."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgec import compiler
from edgec.testing.plugins import fake_distribution

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "spec_examples" / "digits.onnx"
DATA = REPO / "spec_examples" / "data" / "digits.npz"
SPEC = f"""target host
budget {{
  latency < 1 s p50 at batch 1
}}
accuracy {{
  metric top1-agreement
  tolerance 1 %
  data "{DATA}"
}}
optimize {{
  precision fp32
  backend ort
}}
"""


def _checkout_copy(dest: Path) -> Path:
    """A copy of this checkout's code, run from PYTHONPATH as a developer runs it."""
    for name in ("edgec", "passes", "targets", "edgec_runtime"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", dest / "pyproject.toml")
    return dest


def _compile(code: Path, work: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(code), "PATH": "/usr/bin:/bin", "HOME": str(work),
           "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "edgec", "compile", str(DIGITS), "--spec",
                           str(work / "host.edge"), "-o", str(work / "out"), "--cache-dir",
                           str(work / "cache")], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)


def test_editing_a_pass_under_the_same_version_is_not_up_to_date(tmp_path):
    code = _checkout_copy(tmp_path / "code")
    work = tmp_path / "work"
    work.mkdir()
    (work / "host.edge").write_text(SPEC)
    first = _compile(code, work)
    assert first.returncode == 0, first.stderr
    again = _compile(code, work)
    assert again.returncode == 0 and "is up to date" in again.stderr, again.stderr
    manifest = (work / "out" / "manifest.json").read_text()
    # A development change: same version, one pass's source edited.
    dce = code / "passes" / "dce.py"
    dce.write_text(dce.read_text() + "\n# edited under the same version\n")
    edited = _compile(code, work)
    assert edited.returncode == 0, edited.stderr
    assert "is up to date" not in edited.stderr and "copied from the cache" not in edited.stderr
    assert (work / "out" / "manifest.json").read_text() != manifest


@pytest.fixture(autouse=True)
def _digest_recomputed_after():
    """A test that puts a plugin on the path leaves no digest of it to later tests."""
    yield
    compiler.code_digest.cache_clear()


def _fresh_digest() -> str:
    compiler.code_digest.cache_clear()
    return compiler.code_digest()


def test_a_plugins_code_and_version_are_part_of_the_key(tmp_path, monkeypatch):
    before = _fresh_digest()
    assert compiler.code_digest() == before  # cached per process
    package = tmp_path / "src" / "cachekey_plugin"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("VALUE = 1\n")
    site = tmp_path / "site"
    fake_distribution(site, "cachekey-plugin", "1.0", {"double": "cachekey_plugin:Double"},
                      package=package)
    monkeypatch.syspath_prepend(str(site))
    with_plugin = _fresh_digest()
    assert with_plugin != before
    assert compiler._plugin_versions()["cachekey-plugin"] == "1.0"
    (site / "cachekey_plugin" / "__init__.py").write_text("VALUE = 2\n")
    assert _fresh_digest() != with_plugin       # its code, same version
    shutil.rmtree(site / "cachekey_plugin-1.0.dist-info")
    fake_distribution(site, "cachekey-plugin", "1.1", {"double": "cachekey_plugin:Double"})
    assert compiler._plugin_versions()["cachekey-plugin"] == "1.1"   # its version
