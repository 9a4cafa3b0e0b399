"""Chains of Transpose, Reshape, Flatten, Squeeze and Unsqueeze cancelled or merged.

    Transpose(Transpose(x, p), q)        -> Transpose(x, p∘q), or x when p∘q is the identity
    Transpose(x, identity)               -> x
    Reshape(R(x), s)                     -> Reshape(x, s)       R any of Reshape/Flatten/Squeeze/Unsqueeze
    S(R(x))  with a static output shape  -> Reshape(x, shape)   S any of Flatten/Squeeze/Unsqueeze
    Squeeze(Unsqueeze(x, a), a)          -> x
    Unsqueeze(Squeeze(x, a), a)          -> x
    R(x) whose static output shape is x's static shape -> x

Legal when: permutations and shapes are constants (or attributes); a target shape
holding 0 copies a dimension from the value it reshapes, so Reshape(R(x), s) needs
``allowzero`` or no 0 in ``s``; axes compare after normalising negative ones, which
needs the rank; shapes compared for no-op removal are fully static. Replacing a
value by ``x`` is skipped when the value is a graph output and ``x`` is a graph
input or another output (an Identity would be needed anyway).
"""

from __future__ import annotations

import numpy as np

from edgec.ir.core import Model
from edgec.rewrite import (Builder, Const, Match, Op, Rule, Var, attribute, axes_operand,
                           rank_of, replaceable_by, static_shape)

SHAPE_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")


def _perm(node, rank: int | None) -> list[int] | None:
    perm = attribute(node, "perm")
    if perm is None:
        return None if rank is None else list(reversed(range(rank)))
    return list(perm)


# --------------------------------------------------------------------------- transposes

def check_transpose_transpose(match: Match, model: Model) -> str | None:
    inner, outer = match.nodes["inner"], match.root
    rank = rank_of(match["x"])
    p, q = _perm(inner, rank), _perm(outer, rank)
    if p is None or q is None or len(p) != len(q):
        return "a permutation is unknown"
    composed = [p[i] for i in q]
    shared = any(r is not outer for r in inner.outputs[0].consumers()) or inner.outputs[0].is_graph_output()
    if composed == sorted(composed):
        return replaceable_by(outer.outputs[0], match["x"])
    if shared:
        return "the inner Transpose has other readers"
    return None


def rewrite_transpose_transpose(match: Match, b: Builder):
    inner, outer = match.nodes["inner"], match.root
    rank = rank_of(match["x"])
    p, q = _perm(inner, rank), _perm(outer, rank)
    composed = [p[i] for i in q]  # type: ignore[index]
    if composed == sorted(composed):
        return match["x"]
    return b.op("Transpose", [match["x"]], {"perm": composed})


def check_identity_transpose(match: Match, model: Model) -> str | None:
    perm = attribute(match.root, "perm")
    if perm is None:
        return "no explicit permutation" if rank_of(match["x"]) not in (0, 1) else None
    if list(perm) != sorted(perm):
        return "the permutation is not the identity"
    return replaceable_by(match.root.outputs[0], match["x"])


# --------------------------------------------------------------------------- reshapes

def check_reshape_reshape(match: Match, model: Model) -> str | None:
    shape = match.constants["shape"]
    if shape.dtype != np.int64:
        return "the shape is not int64"
    if 0 in shape and not attribute(match.root, "allowzero", 0):
        return "the target shape copies dimensions (0) from the intermediate value"
    return None


def rewrite_reshape_reshape(match: Match, b: Builder):
    return b.op("Reshape", [match["x"], match["shape"]], dict(match.root.attributes))


def check_static_chain(match: Match, model: Model) -> str | None:
    if static_shape(match.root.outputs[0]) is None:
        return "the output shape is not static"
    if static_shape(match["x"]) is None and rank_of(match["x"]) is None:
        return "the input's rank is unknown"
    return None


def rewrite_static_chain(match: Match, b: Builder):
    shape = b.constant(np.array(static_shape(match.root.outputs[0]), dtype=np.int64),
                       f"{match.root.name or 'reshape'}.shape")
    return b.op("Reshape", [match["x"], shape])


def check_squeeze_unsqueeze(match: Match, model: Model) -> str | None:
    inner, outer = match.nodes["inner"], match.root
    a, c = axes_operand(inner), axes_operand(outer)
    if a is None or c is None:
        return "axes are not constant"
    rank = rank_of(match["x"])
    if any(x < 0 for x in a + c):
        if rank is None:
            return "negative axes and unknown rank"
        inner_rank = rank + len(a) if inner.op_type == "Unsqueeze" else rank
        a = [x + inner_rank if x < 0 else x for x in a]
        c = [x + inner_rank if x < 0 else x for x in c]
    if sorted(a) != sorted(c):
        return "the axes differ"
    return replaceable_by(outer.outputs[0], match["x"])


def check_noop(match: Match, model: Model) -> str | None:
    before, after = static_shape(match["x"]), static_shape(match.root.outputs[0])
    if before is None or after is None:
        return "shapes are not static"
    if before != after:
        return "the shape changes"
    return replaceable_by(match.root.outputs[0], match["x"])


def _keep_input(match: Match, b: Builder):
    return match["x"]


def _shape_op(op_type: str, inner, name: str | None = None) -> Op:
    return Op(op_type, inner, name=name, extra_inputs=True)


RULES = [
    # Transpose(Transpose(x, p), q) -> Transpose(x, p∘q) | x
    Rule("transpose-chain", Op("Transpose", Op("Transpose", Var("x"), name="inner")),
         check_transpose_transpose, rewrite_transpose_transpose, shared_ok=("inner",)),
    # Transpose(x, identity) -> x
    Rule("transpose-chain", Op("Transpose", Var("x")), check_identity_transpose, _keep_input),
    # Squeeze(Unsqueeze(x, a), a) -> x ;  Unsqueeze(Squeeze(x, a), a) -> x
    Rule("reshape-chain", _shape_op("Squeeze", _shape_op("Unsqueeze", Var("x"), "inner")),
         check_squeeze_unsqueeze, _keep_input),
    Rule("reshape-chain", _shape_op("Unsqueeze", _shape_op("Squeeze", Var("x"), "inner")),
         check_squeeze_unsqueeze, _keep_input),
    # S(x) of x's own static shape -> x
    *[Rule("reshape-chain", _shape_op(op, Var("x")), check_noop, _keep_input) for op in SHAPE_OPS],
    # Reshape(R(x), s) -> Reshape(x, s)
    *[Rule("reshape-chain", Op("Reshape", _shape_op(inner, Var("x")), Const("shape")),
           check_reshape_reshape, rewrite_reshape_reshape) for inner in SHAPE_OPS],
    # S(R(x)) -> Reshape(x, static shape of S's output)
    *[Rule("reshape-chain", _shape_op(outer, _shape_op(inner, Var("x"))), check_static_chain,
           rewrite_static_chain) for outer in ("Flatten", "Squeeze", "Unsqueeze") for inner in SHAPE_OPS],
]
