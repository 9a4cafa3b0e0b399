"""`runtime/pyproject.toml` builds the device runtime alone: `pip install ./runtime` into a
fresh virtual environment gives `python3 -m edgec_runtime` and the `edgec-runtime`
script, which run an artifact from a folder outside the repository without edgec."""

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import numpy as np

from edgec.testing.artifacts import DIGITS_DATA, REPO, built  # noqa: F401


def test_runtime_distribution_installs_alone(tmp_path, built):
    # Build from a copy: runtime/setup.py copies ../edgec_runtime beside itself.
    source = tmp_path / "src"
    shutil.copytree(REPO / "runtime", source / "runtime")
    shutil.copytree(REPO / "edgec_runtime", source / "edgec_runtime",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env_dir = tmp_path / "venv"
    # numpy and onnxruntime come from the environment running this test (already
    # installed: the system's, or the venv README's test command made), listed after the
    # new venv's own site-packages; edgec-runtime itself is built and installed fresh,
    # without its dependencies. (system_site_packages would give the base interpreter's
    # packages, which in a fresh venv do not include numpy.)
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    site_packages = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    outer = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site_packages) / "outer-environment.pth").write_text("\n".join(sorted(outer)) + "\n")
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps",
                           str(source / "runtime")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(python), "-c", "import edgec_runtime; print(edgec_runtime.__file__)"],
                           cwd=outside, env=env, capture_output=True, text=True)
    assert where.returncode == 0 and str(env_dir) in where.stdout, where.stderr
    for command in ([str(python), "-m", "edgec_runtime"], [str(env_dir / "bin" / "edgec-runtime")]):
        out = outside / "y.npz"
        run = subprocess.run([*command, "run", str(built("ort")), "--inputs", str(DIGITS_DATA),
                              "-o", str(out)], cwd=outside, env=env, capture_output=True,
                             text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        assert np.load(out)["logits"].shape == (359, 10)
        out.unlink()
