"""--rpc-emulated and --rpc-key only make sense with a tracker; RpcConfig says where."""

import subprocess
import sys
from pathlib import Path

import pytest

from edgec.backends.base import RpcConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("flag", [["--rpc-emulated"], ["--rpc-key", "rpi4"]])
def test_rpc_flags_need_a_tracker(tmp_path, flag):
    result = subprocess.run([sys.executable, "-m", "edgec", "compile",
                             str(REPO / "spec_examples" / "digits.onnx"), "--spec",
                             str(REPO / "spec_examples" / "rpi4.edge"), "-o", "out", *flag],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "needs --rpc-tracker HOST:PORT" in result.stderr
    assert not (tmp_path / "out").exists()


def test_rpc_config_where_says_emulated():
    assert RpcConfig.parse("127.0.0.1:9190", "pi").where == "rpc://127.0.0.1:9190/pi"
    emulated = RpcConfig.parse("127.0.0.1:9190", "pi", emulated=True)
    assert emulated.where == "rpc://127.0.0.1:9190/pi (emulated)"
