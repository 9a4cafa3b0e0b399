"""Backends: onnxruntime and TVM built in, others through the ``edgec.backends`` entry points."""

from __future__ import annotations

import functools
import importlib.metadata

from edgec.backends.base import (Backend, BackendError, BuildOptions, BuildResult, Capabilities,
                                 LatencyStats, RpcConfig)
from edgec.diagnostics import Diagnostic, UsageError
from edgec.plugins import plugin_failure

ENTRY_POINT_GROUP = "edgec.backends"


@functools.lru_cache(maxsize=1)
def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def backend_names() -> list[str]:
    """Every installed backend's name (plugins included), without loading any."""
    return sorted(_entry_points())


def suggest_backend(name: str) -> str:
    """" (did you mean 'ort'?)" for a near miss among the installed backends, else ""."""
    import difflib

    close = difflib.get_close_matches(name, ["auto", *backend_names()], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


@functools.lru_cache(maxsize=None)
def get_backend(name: str) -> Backend:
    ep = _entry_points().get(name)
    if ep is None:
        raise UsageError(Diagnostic.error(
            f"unknown backend '{name}'{suggest_backend(name)} "
            f"(installed: {', '.join(backend_names()) or 'none'})"))
    try:
        backend = ep.load()()
    except (Exception, SystemExit) as e:  # a plugin's sys.exit() is a broken plugin
        raise UsageError(Diagnostic.error(
            f"backend '{name}' failed to load: {plugin_failure(e)}")) from None
    declared = getattr(backend, "capabilities", Capabilities())
    if not isinstance(declared, Capabilities):
        raise UsageError(Diagnostic.error(
            f"backend '{name}' ({ep.value}) declares capabilities of type "
            f"{type(declared).__name__}; expected edgec.backends.Capabilities"))
    return backend


def capabilities(name: str) -> Capabilities:
    """What the backend ``name`` declares it can do (the defaults when it declares
    nothing). Raises `UsageError` for an unknown or broken backend."""
    return getattr(get_backend(name), "capabilities", Capabilities())


def auto_backends() -> tuple[list[str], list[tuple[str, str]]]:
    """The backends `backend auto` tries, cheap builds first, and the plugins that could
    not be asked (name, why): a broken plugin is reported, never fatal to auto."""
    names, broken = [], []
    for name in backend_names():
        try:
            declared = capabilities(name)
        except UsageError as e:
            broken.append((name, e.diagnostics[0].message))
            continue
        if declared.in_auto:
            names.append(name)
    names.sort(key=lambda n: (capabilities(n).costly_build, n))
    return names, broken


__all__ = ["Backend", "BackendError", "BuildOptions", "BuildResult", "Capabilities",
           "LatencyStats", "RpcConfig", "auto_backends", "backend_names", "capabilities",
           "get_backend", "suggest_backend"]
