"""`edgec run` / `edgec bench` / `python3 -m edgec_runtime` on hostile or careless inputs
(issue 12, items 12, 14 and 19): every problem is one line and exit 2, never "internal
error", and nothing is read that the model does not use."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgec.cli import main as edgec_main
from edgec.testing.artifacts import (DIGITS_DATA, REPO, built, one_line_exit_2,  # noqa: F401
                                     ort_artifact, tvm_artifact)
from edgec_runtime.cli import main as runtime_main

X = np.load(DIGITS_DATA)["input"]


def lying_npz(path: Path, shape=(10**12,)) -> Path:
    """A small npz whose member header claims ``shape`` float32 elements."""
    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
    text = repr(header).encode()
    text += b" " * (63 - (10 + len(text)) % 64) + b"\n"
    body = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + b"\0" * 64
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("input.npy", body)
    return path


def bad_inputs(tmp_path: Path) -> dict[str, Path]:
    cases = {}

    def npz(name, **arrays):
        path = tmp_path / f"{name}.npz"
        np.savez(path, **arrays)
        cases[name] = path

    npz("wrong-dtype-int", input=X.astype(np.int64))
    npz("wrong-dtype-complex", input=X.astype(np.complex64))
    npz("wrong-rank", input=X.reshape(len(X), 64))
    npz("wrong-rank-high", input=X[:, None, None])
    npz("wrong-shape", input=np.zeros((4, 1, 8, 9), np.float32))
    npz("scalar", input=np.float32(1.0))
    npz("strings", input=np.array(["a", "b"]))
    npz("bytes", input=np.array([b"a", b"b"]))
    npz("object", input=np.array([{"a": 1}, None], dtype=object))
    npz("empty-batch", input=np.zeros((0, 1, 8, 8), np.float32))
    npz("wrong-key", image=X)
    npz("structured", input=np.zeros(3, dtype=[("a", "f4"), ("b", "i4")]))
    np.save(tmp_path / "array.npy", X)
    cases["npy"] = tmp_path / "array.npy"
    (tmp_path / "empty.npz").write_bytes(b"")
    cases["empty"] = tmp_path / "empty.npz"
    good = (tmp_path / "good.npz")
    np.savez_compressed(good, input=X)
    data = good.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[:len(data) // 2])
    cases["truncated"] = tmp_path / "truncated.npz"
    corrupt = bytearray(data)
    for i in range(200, 260):
        corrupt[i] ^= 0x5A
    (tmp_path / "corrupt.npz").write_bytes(bytes(corrupt))
    cases["corrupt"] = tmp_path / "corrupt.npz"
    (tmp_path / "text.npz").write_text("input,1,2,3\n")
    cases["not-a-zip"] = tmp_path / "text.npz"
    cases["lying-header"] = lying_npz(tmp_path / "lying.npz")
    cases["missing-file"] = tmp_path / "nope.npz"
    (tmp_path / "folder.npz").mkdir()
    cases["folder"] = tmp_path / "folder.npz"
    return cases


def test_lying_header_npz_is_small():
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        assert os.path.getsize(lying_npz(Path(d) / "x.npz")) < 400


@pytest.mark.parametrize("case", sorted([
    "wrong-dtype-int", "wrong-dtype-complex", "wrong-rank", "wrong-rank-high", "wrong-shape",
    "scalar", "strings", "bytes", "object", "empty-batch", "wrong-key", "structured", "npy",
    "empty", "truncated", "corrupt", "not-a-zip", "lying-header", "missing-file", "folder"]))
def test_run_inputs_user_errors_are_one_line_exit_2(built, tmp_path, capsys, case):
    path = bad_inputs(tmp_path)[case]
    one_line_exit_2(capsys, ["run", built("ort"), "--inputs", path])


@pytest.mark.parametrize("case", ["wrong-dtype-int", "wrong-rank", "wrong-shape", "object",
                                  "lying-header", "truncated"])
def test_run_inputs_user_errors_tvm_artifact(built, tmp_path, capsys, case):
    path = bad_inputs(tmp_path)[case]
    one_line_exit_2(capsys, ["run", built("tvm"), "--inputs", path])


@pytest.mark.parametrize("case", ["missing-file", "object", "wrong-key", "wrong-dtype-int",
                                  "lying-header", "npy"])
def test_bench_inputs_user_errors_are_one_line_exit_2(built, tmp_path, capsys, case):
    path = bad_inputs(tmp_path)[case]
    one_line_exit_2(capsys, ["bench", built("ort"), "--inputs", path])


def test_runtime_cli_reports_the_same_way(built, tmp_path, capsys):
    cases = bad_inputs(tmp_path)
    for case in ("lying-header", "object", "wrong-shape"):
        one_line_exit_2(capsys, ["run", built("ort"), "--inputs", cases[case]], main=runtime_main)


def test_python_api_rejects_bad_feeds(built):
    import edgec
    from edgec.diagnostics import UsageError
    art = edgec.load(built("ort"))
    for feed in ({"input": X.astype(np.int64)}, {"input": "text"}, {"input": X[:, :, :, :4]},
                 {}, {"input": [[1, 2], [3]]}):
        with pytest.raises(UsageError):
            art.run(feed)


def test_float64_data_is_taken_for_a_float32_input(built, capsys):
    import edgec
    got = edgec.load(built("ort")).run({"input": X[:4].astype(np.float64)})["logits"]
    assert got.shape == (4, 10)


# --------------------------------------------------------------------------- item 14: -o


def test_run_o_writes_exactly_the_path_given(built, tmp_path, capsys):
    out = tmp_path / "result.txt"
    assert edgec_main(["run", str(built("ort")), "--inputs", str(DIGITS_DATA), "-o", str(out)]) == 0
    assert out.is_file() and not (tmp_path / "result.txt.npz").exists()
    assert np.load(out)["logits"].shape == (len(X), 10)
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)


def test_run_o_refuses_a_folder(built, tmp_path, capsys):
    (tmp_path / "adir").mkdir()
    one_line_exit_2(capsys, ["run", built("ort"), "--inputs", DIGITS_DATA, "-o", tmp_path / "adir"])
    assert not (tmp_path / "adir.npz").exists()
    one_line_exit_2(capsys, ["run", built("ort"), "--inputs", DIGITS_DATA, "-o",
                             f"{tmp_path}/newdir/"])


def test_run_o_to_an_unwritable_place_is_one_line(built, tmp_path, capsys):
    one_line_exit_2(capsys, ["run", built("ort"), "--inputs", DIGITS_DATA, "-o", "/proc/x/y.npz"])
    # Something that is not a regular file is never replaced by a rename (as /dev/null
    # would be): a FIFO stands in for a device here.
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    one_line_exit_2(capsys, ["run", built("ort"), "--inputs", DIGITS_DATA, "-o", fifo])
    assert fifo.is_fifo()
    (tmp_path / "link").symlink_to(fifo)
    one_line_exit_2(capsys, ["run", built("ort"), "--inputs", DIGITS_DATA, "-o", tmp_path / "link"])
    assert fifo.is_fifo()


def test_run_o_disk_full_keeps_the_previous_outputs(built, tmp_path, capsys, monkeypatch):
    out = tmp_path / "y.npz"
    np.savez(out, logits=np.ones(3))
    before = out.read_bytes()

    def full(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    err = one_line_exit_2(capsys, ["run", built("ort"), "--inputs", DIGITS_DATA, "-o", out])
    assert "No space left" in err
    assert out.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["y.npz"]  # no temporary file left


# --------------------------------------------------------------------------- item 19: lazy


def test_run_reads_only_the_arrays_the_model_uses(built, tmp_path, monkeypatch):
    from edgec_runtime import npz as npz_module
    path = tmp_path / "extra.npz"
    np.savez(path, input=X[:8], unused=np.zeros(1000), junk=np.array([None], dtype=object))
    read = []
    original = npz_module.NpzFile.read

    def spy(self, name, limit=None):
        read.append(name)
        return original(self, name, limit)
    monkeypatch.setattr(npz_module.NpzFile, "read", spy)
    assert edgec_main(["run", str(built("ort")), "--inputs", str(path)]) == 0
    assert read == ["input"]


def test_run_memory_stays_small_beside_a_huge_unused_array(built, tmp_path):
    """A few-MB npz holding a 512 MiB deflated array the model does not use."""
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        buf = io.BytesIO()
        np.save(buf, X[:4])
        z.writestr("input.npy", buf.getvalue())
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (128 << 20,)})
        with z.open("unused.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            zeros = bytes(16 << 20)
            for _ in range(32):
                member.write(zeros)
    assert path.stat().st_size < 8 << 20
    # VmHWM is this process's own peak (ru_maxrss keeps the forking parent's across exec).
    script = ("import sys; from edgec_runtime.cli import main; code = main(sys.argv[1:]);"
              "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]);"
              "sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", script, "run", str(built("ort")), "--inputs",
                           str(path)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert done.returncode == 0, done.stderr
    rss_mib = int(done.stdout.strip().splitlines()[-1]) / 1024
    assert rss_mib < 300, rss_mib


def test_an_array_over_the_memory_limit_is_refused_before_reading(built, tmp_path, capsys,
                                                                   monkeypatch):
    monkeypatch.setenv("EDGEC_MAX_INPUT_BYTES", "1000")
    err = one_line_exit_2(capsys, ["run", built("ort"), "--inputs", DIGITS_DATA])
    assert "EDGEC_MAX_INPUT_BYTES" in err


def test_bench_over_rpc_refuses_before_connecting(built, tmp_path, capsys):
    """An ort artifact over RPC, and bad inputs for a TVM one: one line, no connection tried."""
    one_line_exit_2(capsys, ["bench", built("ort"), "--rpc-tracker", "127.0.0.1:9", "--rpc-key",
                             "x"])
    bad = tmp_path / "bad.npz"
    np.savez(bad, input=np.zeros((2, 3), np.float32))
    one_line_exit_2(capsys, ["bench", built("tvm"), "--inputs", bad, "--rpc-tracker",
                             "127.0.0.1:9", "--rpc-key", "x"])
