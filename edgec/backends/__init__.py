"""Backends: onnxruntime and TVM built in, others through the ``edgec.backends`` entry points."""

from __future__ import annotations

import functools
import importlib.metadata

from edgec.backends.base import (Backend, BackendError, BuildOptions, BuildResult, LatencyStats,
                                 RpcConfig)
from edgec.diagnostics import Diagnostic, UsageError

ENTRY_POINT_GROUP = "edgec.backends"


@functools.lru_cache(maxsize=1)
def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def backend_names() -> list[str]:
    return sorted(_entry_points())


@functools.lru_cache(maxsize=None)
def get_backend(name: str) -> Backend:
    ep = _entry_points().get(name)
    if ep is None:
        raise UsageError(Diagnostic.error(
            f"unknown backend '{name}' (installed: {', '.join(backend_names()) or 'none'})"))
    try:
        return ep.load()()
    except (Exception, SystemExit) as e:  # a plugin's sys.exit() is a broken plugin
        from edgec.passmgr.registry import plugin_failure

        raise UsageError(Diagnostic.error(
            f"backend '{name}' failed to load: {plugin_failure(e)}")) from None


__all__ = ["Backend", "BackendError", "BuildOptions", "BuildResult", "LatencyStats", "RpcConfig",
           "backend_names", "get_backend"]
