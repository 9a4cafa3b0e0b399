"""Checks of a quantization pass's options against the model it runs on (what the
option parser cannot know): names in ``exclude`` must be nodes of the model."""

from __future__ import annotations

import difflib

from edgec.ir.core import Model
from edgec.passmgr.base import PassUsageError
from edgec.quantization.qdq import quantizable_graphs


def check_exclusions(model: Model, exclude: tuple[str, ...], pass_name: str) -> None:
    """Raise a usage error naming each ``exclude`` entry that is no node of ``model`` at
    this point of the pipeline (an earlier fusion may have renamed it), with the closest
    node name; an excluded name that matches nothing would otherwise be quantized
    silently."""
    if not exclude:
        return
    names = {node.name for graph in quantizable_graphs(model) for node in graph if node.name}
    missing = [name for name in exclude if name not in names]
    if not missing:
        return
    parts = []
    for name in missing:
        close = difflib.get_close_matches(name, sorted(names), n=1, cutoff=0.6)
        parts.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    raise PassUsageError(f"{pass_name}{{exclude=...}}: no node named {', '.join(parts)} in the model "
                         f"at this point of the pipeline (earlier passes may rename fused nodes)")
