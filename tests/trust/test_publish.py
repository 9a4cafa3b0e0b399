"""Issue 12, the publishing and cache half: OUT is replaced only when it is an edgec
artifact, published by an atomic swap that a kill at any step cannot lose, every file
checked by its sha256 before it is trusted, no temporary file left behind, ordinary
permissions, no absolute paths, and paths the user gives for outputs that cannot be
written are one line, exit 2."""

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from edgec import artifact as art
from edgec import publish
from edgec.testing.publish_campaigns import (DATA, DIGITS, key_of, leftovers, whole,
                                             write_spec)


def edgec(*args, cwd, env=None, timeout=300, **kw):
    full_env = dict(os.environ)
    for name in ("EDGEC_FAULT", "EDGEC_FAULT_TRACE", "EDGEC_NO_RENAMEAT2"):
        full_env.pop(name, None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "edgec", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=full_env, **kw)


def compile_(tmp_path, out, spec=None, *extra, env=None, model=DIGITS):
    spec = spec or write_spec(tmp_path / "a.edge")
    return edgec("compile", model, "--spec", spec, "-o", out, "--cache-dir",
                 tmp_path / "cache", "-q", *extra, cwd=tmp_path, env=env)


def assert_one_line_usage_error(r, *fragments):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "internal error" not in r.stderr, r.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


# --------------------------------------------------------------------------- item 1: what OUT may be


def test_compile_refuses_to_replace_a_user_folder(tmp_path):
    user = tmp_path / "userdir"
    user.mkdir()
    (user / "thesis.txt").write_text("four years of work")
    r = compile_(tmp_path, "userdir")
    assert_one_line_usage_error(r, "userdir", "refusing to replace", "thesis.txt")
    assert (user / "thesis.txt").read_text() == "four years of work"
    assert os.listdir(user) == ["thesis.txt"] and not leftovers(tmp_path)


def test_compile_refuses_the_models_own_folder_and_its_ancestors(tmp_path):
    proj = tmp_path / "proj"
    (proj / "specs").mkdir(parents=True)
    shutil.copy(DIGITS, proj / "m.onnx")
    spec = write_spec(proj / "specs" / "s.edge")
    before = tree(tmp_path)
    for out in ("proj", "proj/specs", ".", str(tmp_path.parent)):
        r = edgec("compile", "proj/m.onnx", "--spec", spec, "-o", out, "--cache-dir",
                  tmp_path / "cache", cwd=tmp_path)
        assert_one_line_usage_error(r, "the output folder is or holds")
        assert tree(tmp_path) == before


def test_compile_refuses_the_working_folder(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    r = edgec("compile", DIGITS, "--spec", write_spec(tmp_path / "a.edge"), "-o", ".",
              "--cache-dir", tmp_path / "cache", cwd=work)
    assert_one_line_usage_error(r, "the working folder")
    assert os.listdir(work) == ["notes.txt"]


def test_compile_refuses_a_cache_or_depfile_inside_the_output_folder(tmp_path):
    r = edgec("compile", DIGITS, "--spec", write_spec(tmp_path / "a.edge"), "-o", "out",
              "--cache-dir", "out/cache", cwd=tmp_path)
    assert_one_line_usage_error(r, "the cache folder")
    r = compile_(tmp_path, "out", None, "--depfile", "out/m.d")
    assert_one_line_usage_error(r, "the depfile")
    assert not (tmp_path / "out").exists()


def test_compile_refuses_an_output_folder_inside_an_artifact(tmp_path):
    # An artifact written into another one made the outer artifact hold a folder its
    # manifest does not list: every later compile of it was refused, 'which edgec did
    # not write'. It is refused before anything is written.
    assert compile_(tmp_path, "out").returncode == 0
    before = tree(tmp_path / "out")
    r = compile_(tmp_path, "out/nested")
    assert_one_line_usage_error(r, "out/nested", "inside the edgec artifact")
    assert tree(tmp_path / "out") == before and not (tmp_path / "out" / "nested").exists()
    assert not leftovers(tmp_path)


def test_compile_refuses_an_artifact_holding_anything_else(tmp_path):
    assert compile_(tmp_path, "out").returncode == 0
    (tmp_path / "out" / "notes.txt").write_text("mine")
    # Up to date: nothing is replaced, nothing deleted.
    assert compile_(tmp_path, "out").returncode == 0
    r = compile_(tmp_path, "out", write_spec(tmp_path / "b.edge", "2 %"))
    assert_one_line_usage_error(r, "notes.txt", "which edgec did not write")
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
    (tmp_path / "out" / "notes.txt").unlink()
    (tmp_path / "out" / "manifest.json").write_text('{"format_version": 1}')
    r = compile_(tmp_path, "out", write_spec(tmp_path / "b.edge", "2 %"))
    assert_one_line_usage_error(r, "not an edgec artifact")


def test_compile_replaces_its_own_artifact_and_an_empty_folder(tmp_path):
    (tmp_path / "out").mkdir()
    assert compile_(tmp_path, "out").returncode == 0
    assert key_of(tmp_path / "out") and whole(tmp_path / "out") is None
    r = compile_(tmp_path, "out", write_spec(tmp_path / "b.edge", "2 %"))
    assert r.returncode == 0, r.stderr
    assert whole(tmp_path / "out") is None and not leftovers(tmp_path, tmp_path / "cache" / "artifacts")


def test_replace_problem_names_what_is_in_the_way(tmp_path):
    assert publish.replace_problem(str(tmp_path / "none")) is None
    (tmp_path / "empty").mkdir()
    assert publish.replace_problem(str(tmp_path / "empty")) is None
    (tmp_path / "file").write_text("x")
    assert "not a folder" in publish.replace_problem(str(tmp_path / "file"))
    os.symlink(tmp_path / "empty", tmp_path / "link")
    assert "symbolic link" in publish.replace_problem(str(tmp_path / "link"))


# --------------------------------------------------------------------------- item 8: atomic publish


def test_publish_kill_between_renames_keeps_old_artifact(tmp_path):
    """The fallback protocol (no renameat2): a kill between 'old aside' and 'new in'
    leaves the old artifact whole aside; the next compile puts it back, then publishes."""
    out = tmp_path / "out"
    assert compile_(tmp_path, out).returncode == 0
    old_key = key_of(out)
    spec_b = write_spec(tmp_path / "b.edge", "2 %")
    r = compile_(tmp_path, out, spec_b, env={"EDGEC_NO_RENAMEAT2": "1", "EDGEC_FAULT": "publish:2"})
    assert r.returncode == -9
    aside = list(tmp_path.glob(".out.edgec-old-*"))
    assert not out.exists() and len(aside) == 1
    assert whole(aside[0]) is None and key_of(aside[0]) == old_key
    # A compile that is not allowed to go on (refused) still puts the old one back first.
    publish.recover(str(out))
    assert whole(out) is None and key_of(out) == old_key and not leftovers(tmp_path)
    r = compile_(tmp_path, out, spec_b)
    assert r.returncode == 0 and whole(out) is None and key_of(out) != old_key


def test_publish_kill_after_the_exchange_leaves_the_new_artifact(tmp_path):
    out = tmp_path / "out"
    assert compile_(tmp_path, out).returncode == 0
    old_key = key_of(out)
    r = compile_(tmp_path, out, write_spec(tmp_path / "b.edge", "2 %"),
                 env={"EDGEC_FAULT": "publish:2"})
    assert r.returncode == -9
    assert whole(out) is None and key_of(out) != old_key
    stale = list(tmp_path.glob(".out.edgec-tmp-*"))
    assert len(stale) == 1  # the old artifact, swapped out, not yet removed
    assert compile_(tmp_path, out).returncode == 0
    assert key_of(out) == old_key and not leftovers(tmp_path)


def test_stale_cleanup_restores_an_artifact_set_aside_instead_of_deleting_it(tmp_path):
    out = tmp_path / "out"
    assert compile_(tmp_path, out).returncode == 0
    key = key_of(out)
    os.rename(out, tmp_path / ".out.edgec-old-999999999-dead")
    (tmp_path / ".other.edgec-tmp-999999999-dead").mkdir()
    assert compile_(tmp_path, out).returncode == 0
    assert key_of(out) == key and not leftovers(tmp_path)


def test_publish_under_fault_injection_keeps_out_whole(tmp_path):
    """CI sample of campaign (d): a kill at every step of publishing a cached artifact,
    with the exchange and with the fallback protocol."""
    from edgec.testing.publish_campaigns import faults

    fig = faults(tmp_path, situations=("copy",), kinds=("publish",))
    assert fig.ok, (fig.points, fig.examples)
    assert fig.killed == fig.trials >= 7
    assert fig.after_kill_out_old and fig.after_kill_out_new and fig.after_kill_out_aside


def test_cache_store_and_discard_under_fault_injection(tmp_path):
    """CI sample of campaign (d): kills while a corrupt cache entry is discarded and the
    rebuilt one stored."""
    from edgec.testing.publish_campaigns import faults

    fig = faults(tmp_path, situations=("corrupt",), kinds=("cache",), protocols=(False,),
                 only=("corrupt entry moved out", "entry complete", "moved into place"))
    assert fig.ok, (fig.points, fig.examples)
    assert fig.trials == 3 and fig.killed == 3


# --------------------------------------------------------------------------- item 7: concurrency


def test_concurrent_compiles_into_one_out_and_on_one_cache(tmp_path):
    """CI sample of campaign (c)."""
    from edgec.testing.publish_campaigns import concurrency_same_out, concurrency_shared_cache

    (tmp_path / "same").mkdir()
    same = concurrency_same_out(tmp_path / "same", processes=4, rounds=3)
    assert same.ok and same.compiles == 12, same
    (tmp_path / "shared").mkdir()
    shared = concurrency_shared_cache(tmp_path / "shared", processes=4, rounds=4)
    assert shared.ok and shared.compiles == 16, shared


def test_cache_entry_removed_mid_copy_is_a_miss_not_a_crash(tmp_path):
    out = tmp_path / "out"
    assert compile_(tmp_path, out).returncode == 0
    entry = tmp_path / "cache" / "artifacts" / key_of(out)
    staging = tmp_path / "staging"
    staging.mkdir()
    (entry / "session.json").unlink()  # as if removed by another process mid-copy
    assert publish.cache_fetch(str(entry), key_of(out), str(staging)) is None
    assert os.listdir(staging) == [] and not entry.exists()


# --------------------------------------------------------------------------- item 9: integrity


def test_verify_files_checks_size_sha256_and_names(tmp_path):
    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "m.onnx").write_bytes(b"abc")
    good = {"bytes": 3, "sha256": art.sha256_file(str(folder / "m.onnx"))}
    assert art.verify_files(str(folder), {"files": {"m.onnx": good}}) == []
    (folder / "m.onnx").write_bytes(b"\0\0\0")
    assert "sha256" in art.verify_files(str(folder), {"files": {"m.onnx": good}})[0]
    assert "missing" in art.verify_files(str(folder), {"files": {"x": good}})[0]
    assert "plain" in art.verify_files(str(folder), {"files": {"../m.onnx": good}})[0]
    os.symlink("/dev/zero", folder / "z")
    assert art.verify_files(str(folder), {"files": {"z": good}})
    assert art.verify_files(str(folder), {"files": []})
    assert art.verify_files(str(folder), {"files": {"m.onnx": "nope"}})


def test_a_zeroed_model_in_out_is_not_up_to_date(tmp_path):
    out = tmp_path / "out"
    assert compile_(tmp_path, out).returncode == 0
    size = (out / "model.onnx").stat().st_size
    (out / "model.onnx").write_bytes(b"\0" * size)
    r = edgec("compile", DIGITS, "--spec", tmp_path / "a.edge", "-o", out, "--cache-dir",
              tmp_path / "cache", cwd=tmp_path)
    assert r.returncode == 0 and "up to date" not in r.stderr
    assert whole(out) is None


def test_a_zeroed_model_in_the_cache_is_not_copied(tmp_path):
    assert compile_(tmp_path, "first").returncode == 0
    entry = tmp_path / "cache" / "artifacts" / key_of(tmp_path / "first")
    size = (entry / "model.onnx").stat().st_size
    (entry / "model.onnx").write_bytes(b"\0" * size)
    r = edgec("compile", DIGITS, "--spec", tmp_path / "a.edge", "-o", "second", "--cache-dir",
              tmp_path / "cache", cwd=tmp_path)
    assert r.returncode == 0 and "copied from the cache" not in r.stderr
    assert whole(tmp_path / "second") is None
    assert whole(entry) is None  # the corrupt entry was replaced by the rebuilt one
    assert not leftovers(tmp_path, tmp_path / "cache" / "artifacts")


# --------------------------------------------------------------------------- items 13, 15: files written


def test_opt_output_has_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        r = edgec("opt", DIGITS, "-o", "new.onnx", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert stat.S_IMODE((tmp_path / "new.onnx").stat().st_mode) == 0o644
        # In place, with external data: each file keeps its own mode.
        model = onnx.load(DIGITS)
        onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True,
                  all_tensors_to_one_file=True, location="m.onnx.data", size_threshold=0)
        os.chmod(tmp_path / "m.onnx", 0o640)
        os.chmod(tmp_path / "m.onnx.data", 0o604)
        r = edgec("opt", "m.onnx", "-p", "dce", "-o", "m.onnx", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert stat.S_IMODE((tmp_path / "m.onnx").stat().st_mode) == 0o640
        assert stat.S_IMODE((tmp_path / "m.onnx.data").stat().st_mode) == 0o604
    finally:
        os.umask(old)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".edgec-")]


def test_artifact_and_depfile_have_ordinary_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        assert compile_(tmp_path, "out", None, "--depfile", "m.d").returncode == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.d").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o750
    for p in (tmp_path / "out").iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o640, p


def test_full_disk_leaves_no_temporary_files(tmp_path):
    out = tmp_path / "out"
    assert compile_(tmp_path, out).returncode == 0
    old_key = key_of(out)
    spec_b = write_spec(tmp_path / "b.edge", "2 %")
    for step in (1, 2, 4):
        r = compile_(tmp_path, out, spec_b, env={"EDGEC_FAULT": f"write:{step}:enospc"})
        assert_one_line_usage_error(r, "No space left on device")
        assert key_of(out) == old_key and whole(out) is None
        assert not leftovers(tmp_path, tmp_path / "cache" / "artifacts")
    # A cache that cannot be written only costs time.
    for step in (1, 2, 3):
        r = compile_(tmp_path, tmp_path / f"o{step}", spec_b,
                     env={"EDGEC_FAULT": f"cache:{step}:enospc"})
        assert r.returncode == 0, r.stderr
        assert not leftovers(tmp_path, tmp_path / "cache" / "artifacts")


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_really_full_disk_is_one_line_and_leaves_nothing(tmp_path, small_disk):
    r = edgec("compile", DIGITS, "--spec", write_spec(tmp_path / "a.edge"), "-o",
              small_disk / "out", "--cache-dir", tmp_path / "cache", "-q", cwd=tmp_path)
    assert_one_line_usage_error(r, "No space left on device")
    assert r.stderr.startswith(f"{small_disk / 'out'}: error: ")
    assert os.listdir(small_disk) == []
    r = edgec("opt", DIGITS, "-o", small_disk / "m.onnx", cwd=tmp_path)
    assert_one_line_usage_error(r, "No space left on device")
    assert os.listdir(small_disk) == []
    r = edgec("compile", DIGITS, "--spec", tmp_path / "a.edge", "-o", tmp_path / "o",
              "--cache-dir", small_disk / "cache", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not leftovers(small_disk / "cache" / "artifacts")


# --------------------------------------------------------------------------- item 18


def test_manifest_and_cache_key_do_not_depend_on_the_checkout_folder(tmp_path):
    manifests = []
    for where in ("one", "two/deeper"):
        proj = tmp_path / where / "proj"
        (proj / "data").mkdir(parents=True)
        shutil.copy(DIGITS, proj / "m.onnx")
        shutil.copy(DATA, proj / "data" / "d.npz")
        (proj / "s.edge").write_text(write_spec(tmp_path / "x.edge").read_text()
                                     .replace(str(DATA), "data/d.npz"))
        r = edgec("compile", "m.onnx", "--spec", "s.edge", "-o", "out", "--cache-dir",
                  tmp_path / where / "cache", "-q", cwd=proj)
        assert r.returncode == 0, r.stderr
        manifests.append((proj / "out" / "manifest.json").read_text())
    assert manifests[0] == manifests[1]
    assert str(tmp_path) not in manifests[0]
    assert '"data": "data/d.npz"' in manifests[0]


# --------------------------------------------------------------------------- item 12: output paths


def test_output_paths_that_cannot_be_written_are_one_line_exit_2(tmp_path):
    spec = write_spec(tmp_path / "a.edge")
    assert_one_line_usage_error(compile_(tmp_path, "/proc/foo", spec), "/proc/foo")
    (tmp_path / "adir").mkdir()
    assert_one_line_usage_error(compile_(tmp_path, "o1", spec, "--depfile", "adir"), "depfile")
    (tmp_path / "afile").write_text("x")
    assert_one_line_usage_error(compile_(tmp_path, "o2", spec, "--depfile", "afile/x.d"),
                                "depfile")
    assert_one_line_usage_error(edgec("opt", DIGITS, "-o", "adir", cwd=tmp_path), "folder")
    assert_one_line_usage_error(edgec("opt", DIGITS, "-o", "afile/m.onnx", cwd=tmp_path))
    assert_one_line_usage_error(edgec("opt", DIGITS, "--dump-dir", "afile", cwd=tmp_path),
                                "dump")
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "edgec", "opt", str(DIGITS), "-o", "-"],
                           cwd=tmp_path, stdout=full, stderr=subprocess.PIPE, text=True)
    assert_one_line_usage_error(r, "No space left on device")
    assert sorted(os.listdir(tmp_path)) == ["a.edge", "adir", "afile"]
