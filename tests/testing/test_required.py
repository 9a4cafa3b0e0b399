"""EDGEC_REQUIRE turns a missing tool's skip into a failure."""

import pytest

from edgec.testing.required import import_or_missing, missing, required


def test_required_reads_a_comma_or_space_list(monkeypatch):
    monkeypatch.setenv("EDGEC_REQUIRE", "tvm,cross chromium")
    assert required("tvm") and required("cross") and required("chromium")
    assert not required("emulator")
    monkeypatch.delenv("EDGEC_REQUIRE")
    assert not required("tvm")
    with pytest.raises(ValueError, match="unknown tool 'tmv'"):
        required("tmv")


def test_missing_skips_unless_required(monkeypatch):
    monkeypatch.setenv("EDGEC_REQUIRE", "emulator")
    with pytest.raises(pytest.skip.Exception, match="no chromium"):
        missing("chromium", "no chromium")
    monkeypatch.setenv("EDGEC_REQUIRE", "tvm,cross,chromium,emulator")
    with pytest.raises(pytest.fail.Exception, match="EDGEC_REQUIRE lists 'chromium', but no chromium"):
        missing("chromium", "no chromium")


def test_import_or_missing(monkeypatch):
    monkeypatch.delenv("EDGEC_REQUIRE", raising=False)
    assert import_or_missing("json").dumps(1) == "1"
    with pytest.raises(pytest.skip.Exception, match="cannot import no_such_module_here"):
        import_or_missing("no_such_module_here")
    monkeypatch.setenv("EDGEC_REQUIRE", "tvm")
    with pytest.raises(pytest.fail.Exception, match="lists 'tvm'"):
        import_or_missing("no_such_module_here")


def test_ci_requires_every_tool():
    from pathlib import Path

    from edgec.testing.required import TOOLS

    script = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    assert f'EDGEC_REQUIRE="${{EDGEC_REQUIRE:+$EDGEC_REQUIRE,}}{",".join(TOOLS)}"' in script
