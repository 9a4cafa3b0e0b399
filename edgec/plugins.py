"""What the plugin registries (passes, backends, targets, metrics) share in loading
entry points: who offers one, and one line saying why loading it failed. Below every
registry, so that none imports another to report a broken plugin."""

from __future__ import annotations

import importlib.metadata


def plugin_failure(error: BaseException) -> str:
    """One line saying why loading a plugin failed."""
    if isinstance(error, SystemExit):
        return f"it called sys.exit({error.code!r}) while loading"
    return f"{type(error).__name__}: {error}".splitlines()[0] if str(error) \
        else type(error).__name__


def distribution_name(ep: importlib.metadata.EntryPoint) -> str:
    """The name of the distribution that declares the entry point ``ep``."""
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else "<unknown distribution>"
