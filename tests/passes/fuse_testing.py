"""Helpers for the fuse tests: run ``fuse`` on ONNX text, print the rewritten nodes as IR
text, and compare onnxruntime's outputs before and after."""

from __future__ import annotations

import onnx

from pass_testing import assert_same_outputs, load, parse, run_pass

from edgec.ir.printer import print_graph
from edgec.passes.fuse import Fuse

# Folding into weights reorders float arithmetic: outputs agree to rounding.
RTOL = ATOL = 1e-4


def node_text(model) -> str:
    """The main graph's node lines in IR text form (initializers left out)."""
    lines = print_graph(model.graph).splitlines()
    return "\n".join(line.strip() for line in lines[1:-1] if not line.strip().startswith("init "))


def fuse(text: str, *, patterns: tuple[str, ...] = (), expect: dict[str, int] | None = None,
         rtol: float = RTOL, atol: float = ATOL, feed: dict | None = None, **options):
    """Parse ``text``, run fuse, check numerics and idempotence; returns (model, stats)."""
    proto = parse(text)
    model = load(proto)
    p = Fuse(patterns=patterns, **options)
    result = run_pass(p, model)
    fired = {k: v for k, v in result.stats.items() if v and k != "opset-raised"}
    if expect is not None:
        assert fired == expect, fired
    assert_same_outputs(proto, model, rtol=rtol, atol=atol, feed=feed)
    again = run_pass(p, model)
    assert not any(v for k, v in again.stats.items() if k != "opset-raised"), "second run fused again"
    return model, fired


def ops(model) -> list[str]:
    return [n.op_type for n in model.graph]


def proto_of(text: str) -> onnx.ModelProto:
    return parse(text)


def init(name: str, array) -> str:
    """An initializer in ONNX text syntax: ``float[2,3] w = {…}``."""
    import numpy as np

    array = np.asarray(array)
    kind = {np.dtype(np.float32): "float", np.dtype(np.int64): "int64",
            np.dtype(np.int8): "int8", np.dtype(np.uint8): "uint8"}[array.dtype]
    dims = ",".join(str(d) for d in array.shape)
    values = ", ".join(repr(float(v)) if kind == "float" else str(int(v)) for v in array.reshape(-1))
    shape = f"[{dims}]" if array.ndim else ""
    return f"{kind}{shape} {name} = {{{values}}}"


def weights(*shape: int, seed: int = 0):
    import numpy as np

    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)
