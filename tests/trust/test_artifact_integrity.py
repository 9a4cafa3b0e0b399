"""Artifacts are trusted only after they are verified (issue 12, items 9, 12 and 17): every
file the manifest lists is checked by size and sha256 before load/run/bench/inspect, the
files the manifest names are plain names inside the folder and listed, a damaged manifest
is one line, exit 2."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from edgec.cli import main as edgec_main
from edgec.testing.artifacts import (DIGITS_DATA, built, one_line_exit_2,  # noqa: F401
                                     ort_artifact, tvm_artifact)



def edit_manifest(folder: Path, change) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    result = change(manifest)
    path.write_text(json.dumps(manifest if result is None else result))


def relist(folder: Path, name: str) -> None:
    """Make the manifest agree with the file ``name`` as it is now (a consistent forgery)."""
    data = (folder / name).read_bytes()
    edit_manifest(folder, lambda m: m["files"].__setitem__(
        name, {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}))


# --------------------------------------------------------------------------- item 9


def test_inspect_reports_a_deleted_model_exit_2(ort_artifact, capsys):
    (ort_artifact / "model.onnx").unlink()
    code = edgec_main(["inspect", str(ort_artifact)])
    captured = capsys.readouterr()
    assert code == 2 and "model.onnx is missing" in captured.err
    assert "ALL BUDGETS HOLD" not in captured.out


@pytest.mark.parametrize("command", ["run", "bench", "inspect"])
def test_same_size_zeroed_model_is_caught_by_sha256(ort_artifact, capsys, command):
    path = ort_artifact / "model.onnx"
    path.write_bytes(bytes(path.stat().st_size))
    argv = [command, ort_artifact] + (["--inputs", DIGITS_DATA] if command == "run" else [])
    err = one_line_exit_2(capsys, argv) if command != "inspect" else None
    if command == "inspect":
        assert edgec_main([command, str(ort_artifact)]) == 2
        err = capsys.readouterr().err
    assert "sha256" in err


def test_load_verifies_the_files(tvm_artifact):
    import edgec
    from edgec.diagnostics import UsageError
    with open(tvm_artifact / "model.so", "r+b") as f:
        f.seek(5000)
        f.write(b"\xcc" * 16)
    with pytest.raises(UsageError, match="sha256"):
        edgec.load(tvm_artifact)


# --------------------------------------------------------------------------- item 12, artifacts


MANIFEST_DAMAGE = {
    "json-list": lambda m: [m],
    "no-backend": lambda m: m.pop("backend") and None,
    "backend-a-string": lambda m: m.__setitem__("backend", "ort"),
    "no-files": lambda m: m.pop("files") and None,
    "files-a-list": lambda m: m.__setitem__("files", ["model.onnx"]),
    "file-entry-lacks-sha": lambda m: m["files"]["model.onnx"].pop("sha256") and None,
    "format-version": lambda m: m.__setitem__("format_version", 99),
    "details-a-list": lambda m: m["backend"].__setitem__("details", []),
    "settings-bad-level": lambda m: m["backend"]["details"]["settings"].__setitem__(
        "graph_optimization_level", "ORT_ENABLE_EVERYTHING"),
    "settings-bad-threads": lambda m: m["backend"]["details"]["settings"].__setitem__(
        "intra_op_num_threads", "many"),
    "settings-bad-providers": lambda m: m["backend"]["details"]["settings"].__setitem__(
        "providers", "CPUExecutionProvider"),
    "settings-a-list": lambda m: m["backend"]["details"].__setitem__("settings", [1]),
    "unknown-backend": lambda m: m["backend"].__setitem__("name", "mystery"),
}
# Damage that leaves the artifact runnable: it must not crash what reads it after the run.
HARMLESS_DAMAGE = {
    "target-a-list": lambda m: m.__setitem__("target", ["host"]),
    "spec-a-string": lambda m: m.__setitem__("spec", "fast"),
    "budget-batch-a-string": lambda m: m["spec"]["budget"].__setitem__("latency", {"batch": "x"}),
}


@pytest.mark.parametrize("damage", sorted(HARMLESS_DAMAGE))
@pytest.mark.parametrize("command", ["run", "bench"])
def test_harmless_manifest_damage_still_runs(ort_artifact, capsys, damage, command):
    edit_manifest(ort_artifact, HARMLESS_DAMAGE[damage])
    argv = [command, str(ort_artifact)] + (["--inputs", str(DIGITS_DATA)] if command == "run" else [])
    code = edgec_main(argv)
    err = capsys.readouterr().err
    assert code == 0 and "internal error" not in err, err


@pytest.mark.parametrize("damage", sorted(MANIFEST_DAMAGE))
@pytest.mark.parametrize("command", ["run", "bench"])
def test_damaged_manifest_is_one_line_exit_2(ort_artifact, capsys, damage, command):
    edit_manifest(ort_artifact, MANIFEST_DAMAGE[damage])
    argv = [command, ort_artifact] + (["--inputs", DIGITS_DATA] if command == "run" else [])
    one_line_exit_2(capsys, argv)


@pytest.mark.parametrize("damage", ["json-list", "no-backend", "no-files", "format-version"])
def test_damaged_manifest_inspect_exit_2(ort_artifact, capsys, damage):
    edit_manifest(ort_artifact, MANIFEST_DAMAGE[damage])
    one_line_exit_2(capsys, ["inspect", ort_artifact])


def test_manifest_without_spec_or_budgets(ort_artifact, capsys):
    edit_manifest(ort_artifact, lambda m: m.pop("spec") and m.pop("budgets") and None)
    assert edgec_main(["run", str(ort_artifact), "--inputs", str(DIGITS_DATA)]) == 0
    assert edgec_main(["bench", str(ort_artifact)]) == 0  # batch 1 without a spec
    one_line_exit_2(capsys, ["inspect", ort_artifact])


@pytest.mark.parametrize("raw", [b"\xff\xfe{\x00", b"{\"format_version\": 1, ", b"", b"[]",
                                 b"\"text\"", b"[" * 100000])
def test_unreadable_manifest_is_one_line_exit_2(ort_artifact, capsys, raw):
    (ort_artifact / "manifest.json").write_bytes(raw)
    for command in (["run", ort_artifact, "--inputs", DIGITS_DATA], ["bench", ort_artifact],
                    ["inspect", ort_artifact]):
        one_line_exit_2(capsys, command)


def test_not_an_artifact(tmp_path, capsys):
    one_line_exit_2(capsys, ["run", tmp_path, "--inputs", DIGITS_DATA])
    one_line_exit_2(capsys, ["bench", tmp_path / "nope"])


@pytest.mark.parametrize("command", ["run", "bench"])
def test_model_onnx_missing_or_corrupt_exit_2(ort_artifact, capsys, command):
    argv = [command, ort_artifact] + (["--inputs", DIGITS_DATA] if command == "run" else [])
    (ort_artifact / "model.onnx").unlink()
    one_line_exit_2(capsys, argv)
    (ort_artifact / "model.onnx").write_bytes(b"not an onnx model")
    relist(ort_artifact, "model.onnx")  # consistent with the manifest, still not a model
    err = one_line_exit_2(capsys, argv)
    assert "onnxruntime" in err


def test_module_that_is_not_a_tvm_module_exit_2(tvm_artifact, capsys):
    libm = next(p for p in ("/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6",
                            "/lib64/libm.so.6") if Path(p).exists())
    shutil.copy(libm, tvm_artifact / "model.so")
    relist(tvm_artifact, "model.so")
    err = one_line_exit_2(capsys, ["run", tvm_artifact, "--inputs", DIGITS_DATA])
    assert "not a TVM module" in err
    # A new file (unlink first): the library loaded above stays mapped in this process.
    (tvm_artifact / "model.so").unlink()
    (tvm_artifact / "model.so").write_bytes(b"#!/bin/sh\necho not elf\n")
    relist(tvm_artifact, "model.so")
    assert "ELF" in one_line_exit_2(capsys, ["bench", tvm_artifact])


# --------------------------------------------------------------------------- item 17


@pytest.fixture
def evil_so(tmp_path):
    """A shared library whose constructor leaves a marker file: loading it shows."""
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    marker = tmp_path / "LOADED"
    source = tmp_path / "evil.c"
    source.write_text('#include <stdio.h>\n__attribute__((constructor)) static void f(void) {'
                      f' FILE *m = fopen("{marker}", "w"); if (m) fclose(m); }}\n')
    so = tmp_path / "elsewhere" / "evil.so"
    so.parent.mkdir()
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(so), str(source)], check=True)
    return so, marker


@pytest.mark.parametrize("where", ["absolute", "parent", "unlisted", "subfolder"])
def test_module_path_is_confined_to_listed_plain_names(tvm_artifact, evil_so, capsys, where):
    so, marker = evil_so
    if where == "absolute":
        name = str(so)
    elif where == "parent":
        (tvm_artifact.parent / "evil").mkdir()
        shutil.copy(so, tvm_artifact.parent / "evil" / "evil.so")
        name = "../evil/evil.so"
    elif where == "unlisted":
        shutil.copy(so, tvm_artifact / "evil.so")
        name = "evil.so"
    else:
        (tvm_artifact / "sub").mkdir()
        shutil.copy(so, tvm_artifact / "sub" / "evil.so")
        name = "sub/evil.so"
    edit_manifest(tvm_artifact, lambda m: m["backend"]["details"].__setitem__("module", name))
    for command in (["run", tvm_artifact, "--inputs", DIGITS_DATA], ["bench", tvm_artifact]):
        one_line_exit_2(capsys, command)
    assert not marker.exists()


def test_ort_artifact_renamed_tvm_loads_nothing(ort_artifact, evil_so, capsys):
    so, marker = evil_so
    shutil.copy(so, ort_artifact / "model.so")
    edit_manifest(ort_artifact, lambda m: m["backend"].__setitem__("name", "tvm"))
    one_line_exit_2(capsys, ["run", ort_artifact, "--inputs", DIGITS_DATA])
    edit_manifest(ort_artifact, lambda m: m["backend"]["details"].__setitem__("module", "model.so"))
    one_line_exit_2(capsys, ["run", ort_artifact, "--inputs", DIGITS_DATA])
    assert not marker.exists()


def test_symlinked_file_in_the_artifact_is_refused(ort_artifact, tmp_path, capsys):
    target = tmp_path / "model-elsewhere.onnx"
    shutil.move(ort_artifact / "model.onnx", target)
    (ort_artifact / "model.onnx").symlink_to(target)
    assert "symbolic link" in one_line_exit_2(capsys, ["run", ort_artifact, "--inputs",
                                                       DIGITS_DATA])
