"""Helpers for the fuse tests: run ``fuse`` on ONNX text and check it with
`edgec.testing.passes` (numerics against onnxruntime, a second run fuses nothing)."""

from __future__ import annotations

from edgec.passes.fuse import Fuse
from edgec.testing.passes import assert_same_outputs, load, parse, run_pass

# Folding into weights reorders float arithmetic: outputs agree to rounding.
RTOL = ATOL = 1e-4


def fuse(text: str, *, patterns: tuple[str, ...] = (), expect: dict[str, int] | None = None,
         rtol: float = RTOL, atol: float = ATOL, feed: dict | None = None, **options):
    """Parse ``text``, run fuse, check numerics and idempotence; returns (model, the
    patterns that fired with their counts)."""
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
