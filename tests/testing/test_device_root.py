"""edgec.testing.device_root without building anything: mirror discovery, the cache key,
armv7 (no wheels exist), and a missing tool named in one line."""

import pytest

from edgec.testing import device_root as dr


def test_mirror_from_deb822_and_one_line_sources(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEC_DEBIAN_MIRROR", raising=False)
    monkeypatch.setattr(dr, "Path", lambda p: tmp_path / p.lstrip("/"))
    (tmp_path / "etc/apt/sources.list.d").mkdir(parents=True)
    (tmp_path / "etc/apt/sources.list.d/debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n")
    assert dr.debian_mirror() == "http://mirror.example/debian"
    (tmp_path / "etc/apt/sources.list").write_text(
        "deb [arch=amd64] http://other.example/debian bookworm main\n")
    assert dr.debian_mirror() == "http://other.example/debian"
    monkeypatch.setenv("EDGEC_DEBIAN_MIRROR", "http://env.example/debian")
    assert dr.debian_mirror() == "http://env.example/debian"


def test_key_changes_with_every_input():
    arch = dr.arch_info("aarch64")
    base = dr._key(arch, "http://m/debian", ["numpy==1"])[0]
    assert base.startswith("arm64-bookworm-")
    assert dr._key(arch, "http://m/debian", ["numpy==1"])[0] == base
    assert dr._key(arch, "http://n/debian", ["numpy==1"])[0] != base
    assert dr._key(arch, "http://m/debian", ["numpy==2"])[0] != base


def test_armv7_has_no_wheels_and_says_so(tmp_path):
    with pytest.raises(dr.Unavailable, match="no armv7l wheels"):
        dr.build("armv7", base=tmp_path)


def test_missing_tool_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(dr.shutil, "which", lambda tool: None)
    with pytest.raises(dr.Unavailable, match=r"qemu-aarch64-static \(apt-get install "
                                             r"qemu-user-static\)"):
        dr.build("arm64", base=tmp_path)


def test_requirements_pin_this_hosts_versions():
    from importlib import metadata

    pins = dict(r.split("==") for r in dr.device_requirements())
    assert pins["numpy"] == metadata.version("numpy")
    assert "apache-tvm-ffi" in pins
