"""A non-editable `pip install .` into a fresh virtual environment works: the console
script, `python -m edgec`, built-in passes (installed from passes/ as edgec.passes) and
package data, run from a directory outside the repository — and, as README's quick
start does, from the repository root, where the checkout's `edgec/` shadows the
installed one and must still find `passes/` and `targets/`."""

import json
import os
import site
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_fresh_venv_install(tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    # The heavy dependencies (onnx, onnxruntime, tvm) come from the environment running
    # the tests, where the test command installed them: a system Python, or a virtual
    # environment (whose packages `system_site_packages` would not reach: it names the
    # base interpreter's). Plain path lines, after the fresh environment's own
    # site-packages, so its edgec is the one imported. edgec itself is built and
    # installed fresh.
    bin_dir = env_dir / "bin"
    [fresh_site] = subprocess.run(
        [str(bin_dir / "python"), "-c", "import site; print(site.getsitepackages()[0])"],
        check=True, capture_output=True, text=True).stdout.split()
    outer = [path for path in site.getsitepackages() + [site.getusersitepackages()]
             if os.path.isdir(path)]
    Path(fresh_site, "edgec-test-outer-packages.pth").write_text("\n".join(outer) + "\n")
    subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--no-deps",
                    str(REPO)], check=True, capture_output=True, timeout=600)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*args):
        return subprocess.run(args, cwd=outside, env=env, capture_output=True, text=True,
                              timeout=300)

    version = run(str(bin_dir / "edgec"), "--version")
    assert version.returncode == 0 and version.stdout.startswith("edgec "), version.stderr
    where = run(str(bin_dir / "python"), "-c",
                "import edgec, edgec.passes, edgec.targets; print(edgec.__file__); "
                "print(edgec.passes.__file__)")
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert str(env_dir) in line, f"{line} was not imported from the fresh environment"
    passes = run(str(bin_dir / "edgec"), "passes", "--json")
    assert passes.returncode == 0, passes.stderr
    listing = json.loads(passes.stdout)
    names = {p["name"]: p["source"] for p in listing["passes"]}
    # prune-channels is a package (edgec.passes.prune_channels): it loads only when
    # pyproject lists it among the packages.
    for builtin in ("fold-constants", "dce", "cse", "infer-shapes", "prune-channels"):
        assert names.get(builtin) == "built-in"
    assert listing["diagnostics"] == []  # every built-in entry point loaded
    module = run(str(bin_dir / "python"), "-m", "edgec", "--version")
    assert module.returncode == 0 and module.stdout == version.stdout

    # From the repository root (issue 15: 0 pass / 1,749 "edgec error", "No module named
    # 'edgec.passes'"), the conformance run and the passes come from the checkout.
    def run_in_checkout(*args):
        return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=300)

    checkout = run_in_checkout(str(bin_dir / "python"), "-c",
                               "import edgec.passes, edgec.targets; print(edgec.passes.__file__)")
    assert checkout.returncode == 0, checkout.stderr
    assert checkout.stdout.strip() == str(REPO / "passes" / "__init__.py")
    conformance = run_in_checkout(str(bin_dir / "python"), "-m", "edgec.testing.conformance",
                                  "--cases", "node", "-k", "test_relu", "--json")
    assert conformance.returncode == 0, conformance.stderr
    counts = json.loads(conformance.stdout)["counts"]
    assert counts["pass"] == counts["cases"] >= 1 and counts["edgec error"] == 0, counts
