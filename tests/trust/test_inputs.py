"""Issue 12, the input half: every file edgec reads is confined and bounded first, and
every user error in a model, spec, data or plugin is one line with its exit code."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgec.testing.models import mlp
from edgec.testing.plugins import fake_distribution

REPO = Path(__file__).resolve().parents[2]


def edgec_cli(*args, cwd, timeout=120, env=None):
    full = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "edgec", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=full)


def one_line(result, code):
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if not ln.startswith("edgec: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def spec_file(path: Path, backend: str = "ort", precision: str = "fp32", body: str = "") -> Path:
    path.write_text(f"target host\n{body}optimize {{\n  precision {precision}\n"
                    f"  backend {backend}\n}}\n")
    return path


def external_model(folder: Path, name: str = "model.onnx") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save_model(mlp(), str(folder / name), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=f"{name}.data", size_threshold=0)
    return folder / name


def decoy_cwd(tmp_path: Path) -> Path:
    """A working folder holding a model.onnx.data of the wrong contents: a backend that
    resolves external data against the current directory reads this one."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    (cwd / "model.onnx.data").write_bytes(b"\x7f" * 40000)
    return cwd


# --------------------------------------------------------------------------- item 2


@pytest.mark.parametrize("backend,precision", [("ort", "fp32"), ("tvm", "fp32"),
                                               ("auto", "int8")])
def test_model_with_external_data_compiles_with_its_folder(tmp_path, backend, precision):
    model = external_model(tmp_path / "proj")
    spec = spec_file(tmp_path / "proj" / "s.edge", backend, precision)
    cwd = decoy_cwd(tmp_path)
    result = edgec_cli("compile", model, "--spec", spec, "-o", tmp_path / "out",
                       "--cache-dir", tmp_path / "cache", cwd=cwd, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "ALL BUDGETS HOLD" in result.stderr  # agreement with fp32: the real weights were read
    assert "100.00 % agreement" in result.stderr


# --------------------------------------------------------------------------- item 4


def _with_location(tmp_path: Path, location: str) -> Path:
    model = external_model(tmp_path / "proj")
    proto = onnx.load(str(model), load_external_data=False)
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    onnx.save(proto, str(model))
    return model


@pytest.mark.parametrize("location,says", [
    ("../secret.txt", "points outside the model's folder"),
    ("../../../../../../../../../dev/zero", "points outside the model's folder"),
    ("/etc/passwd", "points outside the model's folder"),
    ("missing.data", "does not exist"),
    (".", "is not a regular file"),
])
def test_external_data_location_outside_model_folder_is_refused_before_reading(
        tmp_path, location, says):
    (tmp_path / "secret.txt").write_text("secret\n")
    model = _with_location(tmp_path, location)
    spec = spec_file(tmp_path / "s.edge")
    depfile = tmp_path / "deps.d"
    result = edgec_cli("compile", model, "--spec", spec, "-o", tmp_path / "out",
                       "--cache-dir", tmp_path / "cache", "--depfile", depfile,
                       cwd=tmp_path, timeout=60)
    line = one_line(result, 3)
    assert says in line and "fc0.weight" in line
    assert not depfile.exists()  # refused before anything is listed (or hashed)


# --------------------------------------------------------------------------- item 5


def _check(spec: Path, timeout=30):
    return edgec_cli("check", spec, cwd=spec.parent, timeout=timeout)


def test_include_fan_out_is_read_once_per_file(tmp_path):
    # 16 files each including the next three times: 3**15 applications before.
    for i in range(16):
        body = "".join(f'include "f{i + 1}.edge"\n' for _ in range(3)) if i < 15 \
            else "target host\n"
        (tmp_path / f"f{i}.edge").write_text(body)
    result = _check(tmp_path / "f0.edge", timeout=30)
    assert result.returncode == 0, result.stderr


def test_include_total_file_count_is_bounded(tmp_path):
    for i in range(100):
        (tmp_path / f"g{i}.edge").write_text("target host\n")
    (tmp_path / "main.edge").write_text("".join(f'include "g{i}.edge"\n' for i in range(100)))
    result = _check(tmp_path / "main.edge")
    assert result.returncode == 2
    assert "includes more than 64 files in all" in result.stderr


@pytest.mark.parametrize("target", ["/dev/zero", "/dev/stdin", "fifo"])
def test_include_of_a_device_or_fifo_is_refused_without_reading(tmp_path, target):
    if target == "fifo":
        os.mkfifo(tmp_path / "fifo")
    (tmp_path / "main.edge").write_text(f'include "{target}"\ntarget host\n')
    proc = subprocess.Popen([sys.executable, "-m", "edgec", "check", str(tmp_path / "main.edge")],
                            cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        _, err = proc.communicate(timeout=30)  # stdin stays open: a read would hang
    finally:
        proc.kill()
    assert proc.returncode == 2, err
    assert "is not a regular file" in err


def test_check_of_dev_zero_is_refused_without_reading(tmp_path):
    result = edgec_cli("check", "/dev/zero", cwd=tmp_path, timeout=30)
    assert result.returncode == 2
    assert "is not a regular file" in result.stderr


def test_oversized_spec_file_is_refused_before_reading_it_whole(tmp_path):
    big = tmp_path / "big.edge"
    with open(big, "wb") as f:
        f.truncate(3 << 30)  # sparse: 3 GiB that would take seconds and memory to read
    result = edgec_cli("check", big, cwd=tmp_path, timeout=30)
    assert result.returncode == 2
    assert "over the limit of 1 MiB" in result.stderr


def test_include_of_a_non_spec_file_is_one_line_without_its_content(tmp_path):
    secret = tmp_path / "passwd"
    secret.write_text("".join(f"user{i}:x:{i}:{i}:secret-{i}:/home/u{i}:/bin/sh\n"
                              for i in range(40)))
    (tmp_path / "main.edge").write_text('include "passwd"\ntarget host\n')
    result = _check(tmp_path / "main.edge")
    assert result.returncode == 2
    assert "secret-" not in result.stderr and "user1" not in result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ": error: " in ln]
    assert errors == [f"{tmp_path / 'main.edge'}:1:9: error: passwd is not a spec file "
                      "(its first line does not parse as a spec statement)"], result.stderr


# --------------------------------------------------------------------------- item 6


def test_replaying_a_reproducer_with_a_hostile_option_runs_nothing(tmp_path):
    from dataclasses import dataclass
    from typing import ClassVar

    from edgec.frontend import import_model
    from edgec.passmgr import InternalError, Pass, PassManager, PassRegistry

    @dataclass(frozen=True)
    class Crash(Pass):
        name: ClassVar[str] = "crash"
        note: str = ""

        def run(self, model, ctx):
            raise RuntimeError("boom")

    registry = PassRegistry()
    registry.register(Crash)
    hostile = "x'; touch PWNED; echo '"
    pipeline = f'crash{{note="{hostile}"}}'
    manager = PassManager(pipeline, registry=registry, reproducer_dir=str(tmp_path / "r"))
    with pytest.raises(InternalError):
        manager.run(import_model(mlp()), input_bytes=mlp().SerializeToString())
    [repro] = list((tmp_path / "r").iterdir())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "edgec").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > argv.txt\n')
    (bin_dir / "edgec").chmod(0o755)
    subprocess.run(["sh", "command.sh"], cwd=repro, check=True, timeout=30,
                   env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert not (repro / "PWNED").exists()
    argv = (repro / "argv.txt").read_text().splitlines()
    assert argv[argv.index("-p") + 1] == (repro / "pipeline.txt").read_text().strip()
    assert hostile in argv[argv.index("-p") + 1]


# --------------------------------------------------------------------------- item 16


def test_plugin_calling_sys_exit_on_import_is_a_broken_plugin_not_a_success(tmp_path):
    site = tmp_path / "site"
    (site / "exiter").mkdir(parents=True)
    (site / "exiter" / "__init__.py").write_text("import sys\nsys.exit(0)\n")
    fake_distribution(site, "exiter", "0.1", {"exit-pass": "exiter:Pass"},
                      groups={"edgec.backends": {"exit-backend": "exiter:Backend"}})
    onnx.save(mlp(), str(tmp_path / "m.onnx"))
    env = {"PYTHONPATH": f"{REPO}{os.pathsep}{site}"}
    result = edgec_cli("opt", "m.onnx", "-o", "out.onnx", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.onnx").exists()  # the built-in passes ran
    assert "plugin 'exiter' failed to load entry point 'exit-pass = exiter:Pass': " \
           "it called sys.exit(0) while loading" in result.stderr
    used = edgec_cli("opt", "m.onnx", "-p", "exit-pass", "-o", "out2.onnx", cwd=tmp_path, env=env)
    assert used.returncode == 2, used.stderr
    assert not (tmp_path / "out2.onnx").exists()
    spec = spec_file(tmp_path / "s.edge")
    compiled = edgec_cli("compile", "m.onnx", "--spec", spec, "-o", "art",
                         "--cache-dir", tmp_path / "cache", cwd=tmp_path, env=env)
    assert compiled.returncode == 0, compiled.stderr
    assert (tmp_path / "art" / "manifest.json").exists()  # compiled, not exited early


# --------------------------------------------------------------------------- item 10, and
# item 12's --data/labels files: one located line, exit 2

DIGITS = REPO / "spec_examples" / "digits.onnx"
DIGITS_DATA = REPO / "spec_examples" / "data" / "digits.npz"
DIGITS_LABELS = REPO / "spec_examples" / "data" / "digits-labels.npz"


def _labelled_spec(path: Path, labels: Path) -> Path:
    return spec_file(path, body=f'accuracy {{\n  metric accuracy\n  tolerance 1 %\n'
                                f'  data "{DIGITS_DATA}"\n  labels "{labels}"\n}}\n')


def _bad_npz(folder: Path, kind: str, key: str, good: np.ndarray) -> Path:
    import io
    import zipfile

    path = folder / f"{kind}.npz"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "npy":
        with open(path, "wb") as f:
            np.save(f, good)
    elif kind == "truncated":
        np.savez(path, **{key: good})
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "corrupt":
        np.savez(path, **{key: good})
        data = bytearray(path.read_bytes())
        data[100:140] = b"\xff" * 40
        path.write_bytes(bytes(data))
    elif kind == "lying-header":
        buf = io.BytesIO()
        np.lib.format.write_array(buf, good[:2])
        shape = str(good[:2].shape).encode()
        claimed = str((10**12,) + good.shape[1:]).encode()
        with zipfile.ZipFile(path, "w") as z:
            z.writestr(f"{key}.npy", buf.getvalue().replace(shape, claimed))
    elif kind == "object":
        np.savez(path, **{key: np.array([None] * len(good), dtype=object)})
    elif kind == "strings":
        np.savez(path, **{key: good.astype(str)})
    else:
        raise ValueError(kind)
    return path


@pytest.mark.parametrize("labels,says", [
    ("one-hot", "labels must be integer class indices of rank 1"),
    ("float", "labels must be integer class indices of rank 1"),
    ("huge", "label 1000000000000 is not a class of this model: its first output has 10 classes"),
    ("negative", "label -1 is not a class of this model"),
    ("too-few", "labels hold 300 entries, but the data holds 359 samples"),
    ("too-many", "labels hold 400 entries, but the data holds 359 samples"),
])
def test_labels_that_are_not_class_indices_of_the_data_are_refused(tmp_path, labels, says):
    good = np.load(DIGITS_LABELS)["labels"]
    array = {"one-hot": lambda: np.eye(10, dtype=np.int64)[good],
             "float": lambda: good.astype(np.float32),
             "huge": lambda: np.full_like(good, 10**12),
             "negative": lambda: np.where(np.arange(len(good)) == 7, -1, good),
             "too-few": lambda: good[:300],
             "too-many": lambda: np.concatenate([good, good[:41]])}[labels]()
    np.savez(tmp_path / "labels.npz", labels=array)
    spec = _labelled_spec(tmp_path / "s.edge", tmp_path / "labels.npz")
    result = edgec_cli("compile", DIGITS, "--spec", spec, "-o", tmp_path / "out",
                       "--cache-dir", tmp_path / "cache", cwd=tmp_path)
    line = one_line(result, 2)
    assert says in line and line.startswith(f"{tmp_path / 'labels.npz'}: error: "), line
    assert not (tmp_path / "out").exists()


BAD_FILES = ["empty", "npy", "truncated", "corrupt", "lying-header", "object", "strings"]


@pytest.mark.parametrize("kind", BAD_FILES)
def test_unreadable_labels_file_is_one_line_exit_2(tmp_path, kind):
    path = _bad_npz(tmp_path, kind, "labels", np.load(DIGITS_LABELS)["labels"])
    spec = _labelled_spec(tmp_path / "s.edge", path)
    result = edgec_cli("compile", DIGITS, "--spec", spec, "-o", tmp_path / "out",
                       "--cache-dir", tmp_path / "cache", cwd=tmp_path)
    assert one_line(result, 2).startswith(f"{path}: error: labels file ")


@pytest.mark.parametrize("kind", BAD_FILES + ["device"])
def test_unreadable_data_file_is_one_line_exit_2(tmp_path, kind):
    path = "/dev/zero" if kind == "device" else \
        _bad_npz(tmp_path, kind, "input", np.load(DIGITS_DATA)["input"])
    result = edgec_cli("compile", DIGITS, "--spec", spec_file(tmp_path / "s.edge"),
                       "--data", path, "-o", tmp_path / "out",
                       "--cache-dir", tmp_path / "cache", cwd=tmp_path, timeout=60)
    assert one_line(result, 2).startswith(f"{path}: error: ")


def test_lying_npz_header_is_refused_before_allocating(tmp_path):
    from edgec.data import read_npz
    from edgec.diagnostics import UsageError

    path = _bad_npz(tmp_path, "lying-header", "input", np.load(DIGITS_DATA)["input"])
    import resource
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(UsageError) as info:
        read_npz(str(path), ["input"])
    # the runtime's reader compares the header with the member's size first
    assert "its header lies" in info.value.diagnostics[0].message
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB


def test_unused_arrays_in_an_npz_are_not_decompressed(tmp_path):
    from edgec.data import read_npz

    big = np.zeros(64 << 20, dtype=np.uint8)  # 64 MiB that deflates to ~64 KiB
    np.savez_compressed(tmp_path / "d.npz", input=np.ones((2, 3), np.float32), unused=big)
    del big
    import resource
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    arrays = read_npz(str(tmp_path / "d.npz"), ["input"])
    assert list(arrays) == ["input"] and arrays["input"].shape == (2, 3)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 32_000  # KiB


# --------------------------------------------------------------------------- item 11


def _growing_model(kind: str) -> onnx.ModelProto:
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    shape = np.array([1000, 1000, 1000], np.int64)  # 1e9 elements: 4 GB if computed
    nodes = [helper.make_node("Identity", ["s"], ["t"])]
    inits = {"s": shape}
    out_type = T.FLOAT
    if kind == "ConstantOfShape":
        nodes.append(helper.make_node("ConstantOfShape", ["t"], ["big"]))
    elif kind == "Expand":
        nodes.append(helper.make_node("Expand", ["one", "t"], ["big"]))
        inits["one"] = np.ones(1, np.float32)
    elif kind == "Tile":
        nodes.append(helper.make_node("Tile", ["one", "t"], ["big"]))
        inits["one"] = np.ones((1, 1, 1), np.float32)
    elif kind == "Range":
        nodes = [helper.make_node("Range", ["a", "b", "c"], ["big"])]
        inits = {"a": np.array(0, np.int64), "b": np.array(500_000_000, np.int64),
                 "c": np.array(1, np.int64)}
        out_type = T.INT64
    elif kind == "outer-Add":
        nodes = [helper.make_node("Identity", ["col"], ["t"]),
                 helper.make_node("Add", ["t", "row"], ["big"])]
        inits = {"col": np.ones((40000, 1), np.float32), "row": np.ones((1, 40000), np.float32)}
    nodes.append(helper.make_node("Identity", ["x"], ["y"]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [1])],
        # The big output declares shape [1]: a lie the size bound must not believe.
        [helper.make_tensor_value_info("big", out_type, [1]),
         helper.make_tensor_value_info("y", T.FLOAT, [1])],
        [numpy_helper.from_array(a, n) for n, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("kind", ["ConstantOfShape", "Expand", "Tile", "Range", "outer-Add"])
def test_fold_constants_bounds_output_size_before_computing(tmp_path, kind):
    onnx.save(_growing_model(kind), str(tmp_path / "m.onnx"))
    code = ("import resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_AS, (1 << 31, 1 << 31))\n"
            "from edgec.cli import main\n"
            "sys.exit(main(['opt', 'm.onnx', '-p', 'fold-constants', '-o', 'out.onnx',"
            " '--stats']))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert "fold-constants - too-large" in result.stderr
    out = onnx.load(str(tmp_path / "out.onnx"))
    assert sum(t.ByteSize() for t in out.graph.initializer) < 1 << 20  # nothing big was folded


def test_spec_batch_beyond_the_limit_is_a_located_error(tmp_path):
    spec = tmp_path / "s.edge"
    spec.write_text("target host\nbudget {\n  latency < 5 ms p50 at batch 100000000\n}\n")
    result = edgec_cli("check", spec, cwd=tmp_path)
    assert result.returncode == 2
    assert f"{spec}:3:31: error: a batch size must be at most 1024" in result.stderr


@pytest.mark.parametrize("command", ["opt", "compile"])
def test_model_path_to_a_device_is_refused_without_reading(tmp_path, command):
    extra = ["--spec", spec_file(tmp_path / "s.edge"), "-o", tmp_path / "out"] \
        if command == "compile" else ["-o", tmp_path / "out.onnx"]
    result = edgec_cli(command, "/dev/zero", *extra, cwd=tmp_path, timeout=30)
    assert one_line(result, 3) == \
        "/dev/zero: error: cannot read the model: is not a regular file (a device, FIFO or socket)"


def test_model_with_a_non_utf8_name_is_a_model_error(tmp_path):
    data = mlp().SerializeToString()
    name = mlp().graph.node[0].name.encode()
    assert name and data.count(name) >= 1
    (tmp_path / "m.onnx").write_bytes(data.replace(name, b"\xe9" * len(name), 1))
    result = edgec_cli("opt", "m.onnx", "-o", "out.onnx", cwd=tmp_path)
    assert one_line(result, 3).endswith("is not UTF-8 text")


def test_external_data_that_does_not_back_the_tensor_exactly_is_a_model_error(tmp_path):
    model = external_model(tmp_path)
    proto = onnx.load(str(model), load_external_data=False)
    t = proto.graph.initializer[0]
    for e in list(t.external_data):
        if e.key == "length":
            t.external_data.remove(e)  # without a length, the rest of the file is read
    onnx.save(proto, str(model))
    result = edgec_cli("opt", model, "-o", tmp_path / "out.onnx", cwd=tmp_path)
    assert "but its external data holds" in one_line(result, 3)
