"""``legalize-tvm``: rewrite what TVM's relax ONNX importer cannot take into what it can.

TVM 0.27's importer (``tvm.relax.frontend.onnx.from_onnx``) refuses or mistranslates
graphs that onnxruntime runs: shapes computed at run time (``Shape → Gather → Concat →
Reshape``: "Node cannot handle ShapeExpr inputs", "Reshape requires the input new shape
to be Shape"), operators it has no converter for or whose converter is another domain's
(ONNX ``Attention`` reaches the com.microsoft converter: ``KeyError: 'num_heads'``), and
values whose type is missing. The group runs, in order:

1. ``bind-dims`` (only under ``edgec compile``, where the spec gives the batch, and only
   where the graph reads shapes): the inputs' symbolic batch dimension becomes the
   spec's batch; the model records it (``edgec.legalize-tvm.bound-batch``) and the tvm
   backend's module then takes that batch only, run a batch at a time;
2. then, until nothing changes (at most ``max-iterations`` rounds): type inference
   (``edgec.ir.shape_inference.infer_types``, what ``infer-shapes`` runs);
   ``widen-half`` (float16 MatMul, Conv, Gemm, Attention, Softmax computed in float32, and
   the values they pass each other through Add/Mul/Where/... kept float32, as onnxruntime
   does);
   ``expand-functions`` (ops TVM lacks become their ONNX function bodies);
   ``lower-castlike`` (``CastLike(x, like)`` → ``Cast(x, to=dtype(like))``);
   ``lower-isinf`` (IsInf's detect_negative/detect_positive, which TVM ignores);
   ``guard-bitshift`` (once: out-of-range shift amounts as ONNX defines them);
   ``guard-float-mod`` (once: float Mod by an infinity); ``stable-softplus`` (Softplus
   and Mish without the cancellation of ``log(1 + exp(x))``); ``omit-empty-resize-inputs``
   (Paddle2ONNX's empty roi/scales beside sizes); ``unroll-rnn`` (LSTM, GRU and RNN over a
   sequence of known length as their steps); ``sink-into-if`` (what follows an If whose
   output shape depends on the branch, moved into both branches);
   ``fold-empty-reductions``; ``lower-lpnorm``;
   ``unroll-cumprod``; ``widen-integer-pow``; ``expand-resize-axes``;
   ``fold-constants``; ``max-at-lowest`` (a -inf test of a max-reduction, which TVM
   starts at the lowest finite value); ``dce``. With
   every dimension known, ``Shape``/``Size`` fold, and the shape arithmetic behind
   Reshape, Expand, Tile, Slice, Resize, ConstantOfShape, Range and Reduce axes folds to
   the constants the importer needs; types become populated on the way.

Each of these is a pass of its own (``edgec opt -p expand-functions``), with a
docstring that says when it is legal; ``legalize-tvm`` is what the tvm candidate's
pipeline runs before the model is handed to TVM. The rewrites live by concern:
``shapes`` (bind-dims, omit-empty-resize-inputs, expand-resize-axes,
fold-empty-reductions), ``numerics`` (widen-half, stable-softplus, guard-float-mod,
guard-bitshift, widen-integer-pow, max-at-lowest), ``decompose`` (expand-functions,
lower-castlike, lower-isinf, lower-lpnorm, unroll-cumprod), ``recurrent``
(unroll-rnn) and ``branches`` (sink-into-if); this module holds the group and re-exports
them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from edgec.ir.core import Model
from edgec.ir.shape_inference import infer_types
from edgec.ir.types import TensorType
from edgec.passmgr.base import OptionError, Pass, PassContext, PassResult

from .branches import SinkIntoIf
from .decompose import (DEFAULT_EXPANDED_OPS, ExpandFunctions, LowerCastLike, LowerIsInf,
                        LowerLpNormalization, UnrollCumProd)
from .numerics import (GuardBitShift, GuardFloatMod, MaxAtLowest, StableSoftplus, WidenHalf,
                       WidenIntegerPow)
from .recurrent import UnrollRecurrent
from .shapes import (BindDims, ExpandResizeAxes, FoldEmptyReductions, OmitEmptyResizeInputs,
                     spec_batch)


BOUND_BATCH_KEY = "edgec.legalize-tvm.bound-batch"


def _shape_reads_symbolic_input(model: Model) -> bool:
    """Whether binding the batch can help: a graph input has a symbolic leading
    dimension and the graph reads shapes (Shape, Size) that it could flow into."""
    symbolic = any(isinstance(v.type, TensorType) and v.type.shape is not None and v.type.shape.dims
                   and not isinstance(v.type.shape.dims[0], int)
                   for v in model.graph.inputs if not v.is_initializer())
    return symbolic and any(n.op_type in ("Shape", "Size") for n in model.graph)


@dataclass(frozen=True)
class LegalizeTVM(Pass):
    """Make a model importable by TVM's relax ONNX importer (see the module docstring).

    Every step is legal on its own (see each pass); the group changes no output beyond
    the rounding of the expanded function bodies.
    """

    name: ClassVar[str] = "legalize-tvm"
    bind_batch: bool = field(default=True, metadata={
        "help": "bind the inputs' symbolic batch dimension to the spec's batch, where the "
                "graph reads shapes (only with a spec; the module then takes that batch only)"})
    expand: tuple[str, ...] = field(default=DEFAULT_EXPANDED_OPS, metadata={
        "help": "the ops expand-functions expands"})
    max_iterations: int = field(default=4, metadata={
        "help": "rounds of infer-shapes, expand-functions, lower-castlike, fold-constants "
                "and dce at most"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_iterations < 1:
            raise OptionError("max-iterations", f"must be at least 1, got {self.max_iterations}")

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        # Types come from the IR's own inference; constant folding and dead-code
        # elimination have no IR-level form yet, so the group runs those passes.
        from edgec.passes.dce import DeadCodeElimination
        from edgec.passes.fold_constants import FoldConstants

        stats: dict[str, int | float] = {}
        modified = False

        def step(p: Pass) -> bool:
            nonlocal model, modified
            result = p.run(model, ctx)
            if result.model is not None:
                model = result.model
            for key, value in result.stats.items():
                stats[f"{p.name}.{key}"] = stats.get(f"{p.name}.{key}", 0) + value
            modified |= result.modified
            return result.modified

        def infer() -> bool:  # counted as infer-shapes would count it
            nonlocal modified
            typed = infer_types(model, ctx.diagnostics)
            stats["infer-shapes.values-typed"] = stats.get("infer-shapes.values-typed", 0) + typed
            modified |= typed > 0
            return typed > 0

        guarded_bitshifts = guarded_mods = False
        if self.bind_batch and ctx.spec is not None and _shape_reads_symbolic_input(model):
            if step(BindDims()):
                # The tvm backend records it: the module then takes that batch only, and
                # edgec runs it a batch at a time (BuildResult.batch).
                model.metadata_props[BOUND_BATCH_KEY] = str(spec_batch(ctx) or 1)
        for _ in range(self.max_iterations):
            # Context-dependent function bodies need their inputs' types, and a body
            # may hold another op to expand (SoftmaxCrossEntropyLoss holds
            # NegativeLogLikelihoodLoss): infer, expand, and go round again.
            changed = infer()
            changed |= step(WidenHalf())
            changed |= step(ExpandFunctions(ops=self.expand))
            changed |= step(LowerCastLike())
            changed |= step(LowerIsInf())
            if not guarded_bitshifts:  # once: its own output is a BitShift again
                guarded_bitshifts = step(GuardBitShift())
                changed |= guarded_bitshifts
            if not guarded_mods:  # once: its own output holds the Mod again
                guarded_mods = step(GuardFloatMod())
                changed |= guarded_mods
            changed |= step(StableSoftplus())
            changed |= step(OmitEmptyResizeInputs())
            changed |= step(UnrollRecurrent())
            changed |= step(SinkIntoIf())
            changed |= step(FoldEmptyReductions())
            changed |= step(LowerLpNormalization())
            changed |= step(UnrollCumProd())
            changed |= step(WidenIntegerPow())
            changed |= step(ExpandResizeAxes())
            changed |= step(FoldConstants())
            changed |= step(MaxAtLowest())
            changed |= step(DeadCodeElimination())
            if not changed:
                break
        return PassResult(modified, stats, model=model)


__all__ = ["BindDims", "DEFAULT_EXPANDED_OPS", "ExpandFunctions", "ExpandResizeAxes", "FoldEmptyReductions",
           "GuardBitShift", "GuardFloatMod", "LowerLpNormalization", "UnrollCumProd", "WidenIntegerPow",
           "LegalizeTVM", "LowerCastLike", "LowerIsInf", "MaxAtLowest", "OmitEmptyResizeInputs",
           "SinkIntoIf", "StableSoftplus", "UnrollRecurrent", "WidenHalf"]
