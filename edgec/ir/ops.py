"""What edgec knows about operators as such, independent of any pass: which ones are
not pure functions of their inputs, which domains hold only pure ones, which produce
values that are not tensors. Passes ask here instead of keeping their own tables."""

from __future__ import annotations

from edgec.ir.core import Node

# Same inputs, different outputs: merging, folding or reusing two of these would
# change the model.
NON_DETERMINISTIC_OPS = frozenset({
    "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
    "Multinomial", "Bernoulli", "BiasDropout", "BitmaskDropout", "BitmaskBiasDropout",
})

# Domains whose ops are pure functions of their inputs (less NON_DETERMINISTIC_OPS);
# a custom domain's may not be.
PURE_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})

# Ops whose values are sequences or optionals, which an initializer cannot hold.
NON_TENSOR_OPS = frozenset({
    "SequenceConstruct", "SequenceEmpty", "SequenceInsert", "SequenceErase", "SequenceAt",
    "SequenceLength", "SplitToSequence", "ConcatFromSequence", "SequenceMap", "Optional",
    "OptionalGetElement", "OptionalHasElement",
})


def canonical_domain(domain: str) -> str:
    """``ai.onnx`` is the default domain's other name."""
    return "" if domain == "ai.onnx" else domain


def is_deterministic(node: Node) -> bool:
    """Whether ``node`` gives the same outputs for the same inputs every time."""
    if node.op_type in NON_DETERMINISTIC_OPS:
        return False
    # Dropout is random only in training mode, which its third input switches on.
    if node.op_type == "Dropout" and len(node.inputs) > 2 and node.inputs[2] is not None:
        return False
    return True
