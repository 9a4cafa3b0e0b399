"""Tests that need a tool this host may lack: a skip here, a failure in CI.

``EDGEC_REQUIRE`` is a comma- (or space-) separated list of the tools a run must have:
``tvm`` (apache-tvm and what its RPC needs), ``cross`` (the cross compilers and
``file`` that check cross-compiled modules), ``chromium`` (the report screenshot) and
``emulator`` (the emulated arm64 device). For a listed tool, a test that would skip
because the tool is missing fails instead, so a CI image that lost a tool cannot pass
by skipping; ``.ci/run`` lists all four.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

TOOLS = ("tvm", "cross", "chromium", "emulator")


def required(tool: str) -> bool:
    """Whether ``EDGEC_REQUIRE`` lists ``tool``."""
    if tool not in TOOLS:
        raise ValueError(f"unknown tool '{tool}'; EDGEC_REQUIRE knows: {', '.join(TOOLS)}")
    return tool in os.environ.get("EDGEC_REQUIRE", "").replace(",", " ").split()


def missing(tool: str, reason: str) -> NoReturn:
    """Skip the test because ``tool`` is missing (``reason`` says how), or fail it when
    ``EDGEC_REQUIRE`` lists the tool."""
    import pytest

    if required(tool):
        pytest.fail(f"EDGEC_REQUIRE lists '{tool}', but {reason}", pytrace=False)
    pytest.skip(reason)


def import_or_missing(module: str, tool: str = "tvm", reason: str | None = None) -> ModuleType:
    """``pytest.importorskip`` for a module that belongs to ``tool``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing(tool, reason or f"cannot import {module}: {error}")
