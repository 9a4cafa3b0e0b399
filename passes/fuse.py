"""Fusion: patterns of primitive ops rewritten into fewer, equivalent ops.

Each named pattern is a table of rules (pattern / check / rewrite) in its own module,
whose docstring states the rewrite and the conditions under which it is legal:

    conv-bn, convtranspose-bn, gemm-bn   fuse_batchnorm   Conv(x, W, b) ∘ BatchNorm -> Conv(x, W', b')
    conv-mul, conv-add, gemm-mul,        fuse_affine      Conv(x, W, b) · s + c -> Conv(x, W·s, b·s + c);
      gemm-add, matmul-add                                A·B + c -> Gemm(A, B, c)
    pad-conv, pad-pool                   fuse_pad         Conv(Pad(x, p, 0)) -> Conv(x, pads + p)
    transpose-chain, reshape-chain       fuse_reshape     Transpose(Transpose(x)) -> Transpose(x) | x, …
    gelu-erf, gelu-tanh, silu, hardswish fuse_activation  x·0.5·(1 + erf(x/√2)) -> Gelu(x), …
    layer-norm                           fuse_layer_norm  (x - E[x]) / √(Var[x] + ε)·γ + β -> LayerNormalization
    softmax                              fuse_softmax     Exp(x - max x) / Σ Exp(x - max x) -> Softmax(x)
    qdq-cancel                           fuse_qdq         QuantizeLinear(DequantizeLinear(q)) -> q
    attention                            fuse_attention   Softmax(q·kᵀ/c)·v over heads -> com.microsoft::Attention

``fuse`` runs the default set (every pattern; see `DEFAULT_PATTERNS`), ``fuse{patterns=conv-bn,pad-conv}``
a chosen one. The stats count each pattern's rewrites. Rules are applied with a
worklist to a fixed point, in the main graph and in every If/Loop/Scan body (model-
local function bodies are left alone: their opset imports are their own).

Ops that only exist from some opset on (LayerNormalization 17, HardSwish 14, Gelu 20,
Swish 24) are only produced when the model's default-domain opset has them. With
``raise-opset=N`` the pass first raises that opset to N, but only when no op the model
uses changes its definition between the two versions (by ONNX's schemas: an op whose
latest version differs is left as it was, and so is the opset, with a warning).

Folding BN, Mul and Add into weights reorders floating-point arithmetic: outputs move
by rounding only, which the tests hold to 1e-4 (relative and absolute).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar

import onnx

from edgec.diagnostics import Location
from edgec.ir.core import Model
from edgec.passes import (fuse_activation, fuse_affine, fuse_attention, fuse_batchnorm,
                          fuse_layer_norm, fuse_pad, fuse_qdq, fuse_reshape, fuse_softmax)
from edgec.passmgr.base import OptionError, Pass, PassContext, PassResult
from edgec.rewrite import RewriteDriver, Rule

RULE_MODULES = (fuse_batchnorm, fuse_affine, fuse_pad, fuse_reshape, fuse_activation,
                fuse_layer_norm, fuse_softmax, fuse_qdq, fuse_attention)

# Pattern name -> its rules, in the order the modules list them.
PATTERNS: dict[str, list[Rule]] = {}
for _module in RULE_MODULES:
    for _rule in _module.RULES:
        PATTERNS.setdefault(_rule.name, []).append(_rule)

# Every pattern is on by default. ``attention`` is in the set because onnxruntime
# runs com.microsoft::Attention faster than the primitive subgraph and within 1e-6 of
# it on the transformer benchmark (benchmarks/fusion_vs_simplifiers.py prints both).
DEFAULT_PATTERNS: tuple[str, ...] = tuple(PATTERNS)


@dataclass(frozen=True)
class Fuse(Pass):
    """Fuse patterns of ops (BatchNorm into Conv, GELU, LayerNorm, attention, …) into fewer ops."""

    name: ClassVar[str] = "fuse"
    patterns: tuple[str, ...] = field(default=(), metadata={
        "help": "patterns to apply (default: all): " + ", ".join(PATTERNS)})
    exclude: tuple[str, ...] = field(default=(), metadata={
        "help": "patterns to leave out (e.g. attention, whose contrib op only onnxruntime runs)"})
    raise_opset: int = field(default=0, metadata={
        "help": "raise the default-domain opset to this version first, when no op's "
                "definition changes in between (0: never)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for option in ("patterns", "exclude"):
            unknown = [p for p in getattr(self, option) if p not in PATTERNS]
            if unknown:
                raise OptionError(option, f"unknown pattern '{unknown[0]}'; known patterns: "
                                          + ", ".join(PATTERNS))
        if self.raise_opset < 0:
            raise OptionError("raise-opset", f"must be >= 0 (0: never), got {self.raise_opset}")

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        selected = tuple(p for p in (self.patterns or DEFAULT_PATTERNS) if p not in self.exclude)
        stats: dict[str, int | float] = {}
        raised = False
        if self.raise_opset:
            reason = raise_opset(model, self.raise_opset)
            if reason:
                ctx.diagnostics.warning(f"fuse: opset not raised to {self.raise_opset}: {reason}",
                                        Location(obj=f"model '{model.graph.name}'"),
                                        code="fuse.opset-not-raised")
            else:
                raised = model.opset("") == self.raise_opset
            stats["opset-raised"] = int(raised)
        rules = [rule for name in selected for rule in PATTERNS[name]]
        driver = RewriteDriver(rules, model)
        for graph in [model.graph, *model.graph.subgraphs()]:
            driver.run(graph)
        counts = Counter(driver.counts)
        stats.update({name: counts[name] for name in selected})
        return PassResult(raised or bool(sum(counts.values())), stats)


def raise_opset(model: Model, target: int) -> str | None:
    """Raise the model's default-domain opset to ``target`` in place; None when done (or
    nothing to do), else why not."""
    current = model.opset("")
    if current is None or target <= current:
        return None
    if target > onnx.defs.onnx_opset_version():
        return f"onnx {onnx.__version__} knows opsets up to {onnx.defs.onnx_opset_version()}"
    if model.functions:
        return "the model has local functions, whose opset imports would disagree"
    changed = set()
    for graph in [model.graph, *model.graph.subgraphs()]:
        for node in graph:
            if node.domain not in ("", "ai.onnx"):
                continue
            before, after = _since(node.op_type, current), _since(node.op_type, target)
            if before is None or before != after:
                changed.add(node.op_type)
    if changed:
        return ", ".join(sorted(changed)) + f" changed between opset {current} and {target}"
    model.opset_imports["" if "" in model.opset_imports else "ai.onnx"] = target
    needed = onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", target)])
    model.ir_version = max(model.ir_version, needed)
    return None


def _since(op_type: str, version: int) -> int | None:
    try:
        return onnx.defs.get_schema(op_type, version, "").since_version
    except onnx.defs.SchemaError:
        return None
