"""Shared paths for the spec-language tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _host_detected():
    # Detecting the host imports TVM once (seconds); do it before any timed or
    # deadline-bound test rather than inside one.
    from edgec.dsl import host
    host.llvm_cpu()
