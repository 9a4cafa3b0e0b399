"""Multi-head self-attention in primitive ops recognised as onnxruntime's ``com.microsoft::Attention``.

    q, k, v = (x·W_q + b_q), (x·W_k + b_k), (x·W_v + b_v)
    h(t)    = Transpose(Reshape(t, [B, S, H, D]))          (k's perm puts D before S)
    y       = Reshape(Transpose(Softmax(h(q)·h(k) / c) · h(v)), [B, S, H·D])
        -> com.microsoft::Attention(x, [W_q W_k W_v], [b_q b_k b_v], num_heads=H, scale=1/c)

This is the subgraph PyTorch's exporter writes for a BERT-style self-attention
without a mask. Legal when: x is float32 of known rank 3; the three projections read
the same x, their weights are constants [hidden_in, H·D] and biases constants [H·D];
the head reshapes use constant shapes [B, S, H, D] with positive H and D (B and S
may be 0 or -1, as they are copied) and the merge reshape [B, S, H·D] (or 0/-1 for
B and S); q and v use perm [0,2,1,3], k [0,2,3,1], the context perm [0,2,1,3];
Softmax is over the last axis; the scale is a constant scalar (Div by c or Mul by
1/c). onnxruntime's CPU EP runs the op; other runtimes may not, which is why the
``fuse`` pass makes this pattern a choice (see its docstring for the measurement).
"""

from __future__ import annotations

import numpy as np

from edgec.ir.core import Model
from edgec.ir.types import DataType
from edgec.rewrite import Builder, Const, Match, Op, Rule, Var, attribute, rank_of

CONTRIB = "com.microsoft"


def _heads(t: str, shape: str, name: str) -> Op:
    projection = Op("Add", Op("MatMul", Var("x"), Const(f"W{t}")), Const(f"b{t}"), commutative=True)
    return Op("Transpose", Op("Reshape", projection, Const(shape)), name=name)


def _pattern(scale_op: str) -> Op:
    scores = Op("MatMul", _heads("q", "split_q", "tq"), _heads("k", "split_k", "tk"))
    scaled = (Op("Div", scores, Const("c"), name="scale_node") if scale_op == "Div"
              else Op("Mul", scores, Const("c"), commutative=True, name="scale_node"))
    probs = Op("Softmax", scaled, name="softmax")
    context = Op("MatMul", probs, _heads("v", "split_v", "tv"))
    return Op("Reshape", Op("Transpose", context, name="tc"), Const("merge"), name="merge_node")


def _split(match: Match) -> tuple[int, int] | str:
    shapes = [match.constants[k] for k in ("split_q", "split_k", "split_v")]
    if any(s.shape != (4,) or not np.array_equal(s, shapes[0]) for s in shapes):
        return "the head reshapes differ or are not 4-D"
    heads, head_dim = int(shapes[0][2]), int(shapes[0][3])
    if heads <= 0 or head_dim <= 0:
        return "the head count or size is not a literal"
    return heads, head_dim


def _scale(match: Match) -> float | str:
    c = match.constants["c"]
    if c.size != 1 or c.dtype.kind != "f" or float(c.reshape(())) == 0:
        return "the scale is not a nonzero scalar"
    value = float(c.reshape(()))
    return 1.0 / value if match.nodes["scale_node"].op_type == "Div" else value


def check_attention(match: Match, model: Model) -> str | None:
    x = match["x"]
    if x.dtype is not DataType.FLOAT or rank_of(x) != 3:
        return "x is not float32 of rank 3"
    found = _split(match)
    if isinstance(found, str):
        return found
    heads, head_dim = found
    hidden = heads * head_dim
    for t in "qkv":
        w, bias = match.constants[f"W{t}"], match.constants[f"b{t}"]
        if w.dtype != np.float32 or w.ndim != 2 or w.shape[1] != hidden:
            return f"W_{t} is not a float32 [hidden_in, {hidden}] constant"
        if bias.dtype != np.float32 or bias.shape != (hidden,):
            return f"b_{t} is not a float32 [{hidden}] constant"
    if x.shape.dims[2] not in (None, match.constants["Wq"].shape[0]) and isinstance(x.shape.dims[2], int):
        return "x's hidden size differs from the weights'"
    perms = {k: list(attribute(match.nodes[k], "perm", [])) for k in ("tq", "tk", "tv", "tc")}
    if perms != {"tq": [0, 2, 1, 3], "tk": [0, 2, 3, 1], "tv": [0, 2, 1, 3], "tc": [0, 2, 1, 3]}:
        return "the head transposes are not the attention layout"
    split = match.constants["split_q"]
    merge = match.constants["merge"]
    if merge.shape != (3,) or int(merge[2]) not in (hidden, -1):
        return "the merge reshape is not [B, S, hidden]"
    for i in (0, 1):
        if int(merge[i]) not in (0, -1, int(split[i])) or int(split[i]) not in (0, -1, int(merge[i])):
            return "the merge reshape does not restore B and S"
    if -1 in (int(merge[0]), int(merge[1])) and int(merge[2]) == -1:
        return "the merge reshape infers two dimensions"
    if any(attribute(match.nodes[k], "allowzero", 0) for k in ("merge_node",)):
        return "a reshape uses allowzero"
    softmax = match.nodes["softmax"]
    if attribute(softmax, "axis", -1 if (model.opset("") or 0) >= 13 else 1) not in (-1, 3):
        return "Softmax is not over the last axis"
    scale = _scale(match)
    if isinstance(scale, str):
        return scale
    version = model.opset_imports.get(CONTRIB)
    if version is not None and version != 1:
        return f"the model imports {CONTRIB} at version {version}"
    return None


def rewrite_attention(match: Match, b: Builder):
    heads, head_dim = _split(match)  # type: ignore[misc]
    weights = np.concatenate([match.constants[f"W{t}"] for t in "qkv"], axis=1)
    biases = np.concatenate([match.constants[f"b{t}"] for t in "qkv"])
    name = match.root.name or "attention"
    b.model.opset_imports.setdefault(CONTRIB, 1)
    return b.op("Attention", [match["x"], b.constant(weights, f"{name}.qkv_weight"),
                              b.constant(biases, f"{name}.qkv_bias")],
                {"num_heads": heads, "scale": float(_scale(match))}, domain=CONTRIB)


RULES = [
    # Softmax(q·kᵀ / c)·v over H heads -> com.microsoft::Attention(x, W_qkv, b_qkv)
    Rule("attention", _pattern(op), check_attention, rewrite_attention) for op in ("Div", "Mul")
]
