"""Shapes the importer needs as constants: ``bind-dims`` (the symbolic batch bound to the
spec's), ``omit-empty-resize-inputs`` and ``expand-resize-axes`` (Resize inputs as TVM
reads them), and ``fold-empty-reductions`` (reductions over an axis of extent 0)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from edgec.ir.core import Model
from edgec.ir.types import DataType, Shape, TensorType
from edgec.passmgr.base import OptionError, Pass, PassContext, PassResult

from .common import ONNX_DOMAINS, constant_value, static_dims


def spec_batch(ctx: PassContext) -> int | None:
    spec = ctx.spec
    latency = getattr(getattr(spec, "budget", None), "latency", None)
    batch = getattr(latency, "batch", None)
    return batch if isinstance(batch, int) and batch > 0 else None


@dataclass(frozen=True)
class BindDims(Pass):
    """Give the graph inputs' symbolic leading dimension a fixed size (the batch).

    Legal when the artifact is only ever run at that batch: the spec's latency budget
    names it (``latency < 10ms at batch 4``), and ``edgec compile`` measures and ships
    the model at it. Other symbolic dimensions (sequence lengths) are left as they are.
    """

    name: ClassVar[str] = "bind-dims"
    batch: int = field(default=0, metadata={
        "help": "the size of the leading symbolic dimension; 0: the spec's batch (1 without a spec)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch < 0:
            raise OptionError("batch", f"must be >= 0 (0: the spec's batch), got {self.batch}")

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        batch = self.batch or spec_batch(ctx) or 1
        bound = 0
        for v in model.graph.inputs:
            if v.is_initializer() or not isinstance(v.type, TensorType):
                continue
            shape = v.type.shape
            if shape is None or shape.dims is None or not shape.dims or isinstance(shape.dims[0], int):
                continue
            v.type = TensorType(v.type.dtype, Shape((batch, *shape.dims[1:]), shape.denotations))
            bound += 1
        return PassResult(bound > 0, {"inputs-bound": bound})


@dataclass(frozen=True)
class OmitEmptyResizeInputs(Pass):
    """``Resize(x, roi=[], scales=[], sizes)`` → ``Resize(x, "", "", sizes)``: a constant
    empty ``roi`` or ``scales`` becomes the absent input.

    Legal always: ONNX Resize defines an empty ``roi``/``scales`` as not given
    (Paddle2ONNX writes them so beside ``sizes``); TVM 0.27 counts the empty tensor as
    given and refuses "Only one of scales and sizes can be provided".
    """

    name: ClassVar[str] = "omit-empty-resize-inputs"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        omitted = 0
        for g in [model.graph, *model.graph.subgraphs()]:
            for node in g:
                if node.op_type != "Resize" or node.domain not in ONNX_DOMAINS:
                    continue
                for index in (1, 2):
                    v = node.inputs[index] if index < len(node.inputs) else None
                    if v is not None and v.is_constant() and v.const.numpy().size == 0:
                        node.set_input(index, None)
                        omitted += 1
        return PassResult(omitted > 0, {"inputs-omitted": omitted})


_REDUCTIONS = ("ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceProd", "ReduceMax",
               "ReduceMin", "ReduceLogSum", "ReduceLogSumExp", "ReduceMean")


@dataclass(frozen=True)
class FoldEmptyReductions(Pass):
    """A reduction over an axis of extent 0 → a constant of the output's shape holding the
    reduction's value over no elements: 0 (Sum, SumSquare, L1, L2), 1 (Prod), -inf
    (Max, LogSum, LogSumExp), +inf (Min), NaN (Mean); for integer types the type's
    lowest (Max) or highest (Min) value.

    Legal when the input's shape is known and the axes are constants: the output is
    then those values whatever the data (ONNX defines the empty reductions so); TVM
    0.27 returns whatever its loop leaves.
    """

    name: ClassVar[str] = "fold-empty-reductions"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        import numpy as np

        folded = 0
        for g in [model.graph, *model.graph.subgraphs()]:
            for node in list(g):
                if node.op_type not in _REDUCTIONS or node.domain not in ONNX_DOMAINS or not node.inputs:
                    continue
                dims = static_dims(node.inputs[0])
                if dims is None or 0 not in dims or node.output.dtype in (None, DataType.UNDEFINED):
                    continue
                opset = model.opset("") or 1
                axes_in_input = node.op_type == "ReduceSum" and opset >= 13 or opset >= 18
                if axes_in_input:
                    given = node.inputs[1] if len(node.inputs) > 1 else None
                    axes = constant_value(given)
                    if given is not None and axes is None:
                        continue
                    axes = None if axes is None or axes.size == 0 else axes.tolist()
                    if axes is None and node.attr("noop_with_empty_axes", 0):
                        continue  # the identity, not a reduction
                else:
                    axes = node.attr("axes")
                axes = list(range(len(dims))) if axes is None else [a % len(dims) for a in axes]
                if all(dims[a] for a in axes):
                    continue
                keep = node.attr("keepdims", 1)
                shape = tuple(1 if i in axes else d for i, d in enumerate(dims) if keep or i not in axes)
                dtype = np.dtype(node.output.dtype.to_numpy())
                value = {"ReduceProd": 1, "ReduceMean": np.nan, "ReduceMax": -np.inf, "ReduceLogSum": -np.inf,
                         "ReduceLogSumExp": -np.inf, "ReduceMin": np.inf}.get(node.op_type, 0)
                if dtype.kind in "iu" and value in (np.inf, -np.inf):
                    value = np.iinfo(dtype).max if value > 0 else np.iinfo(dtype).min
                elif dtype.kind == "b":
                    value = node.op_type == "ReduceMin"
                elif dtype.kind not in "fiu" or isinstance(value, float) and np.isnan(value) and dtype.kind != "f":
                    continue
                constant = g.make_constant(np.full(shape, value, dtype), "empty_reduction")
                g.replace_value(node.output, constant)
                g.remove(node, safe=False)
                folded += 1
        return PassResult(folded > 0, {"reductions-folded": folded})


@dataclass(frozen=True)
class ExpandResizeAxes(Pass):
    """``Resize`` with the ``axes`` attribute → the same Resize on every axis: ``scales``
    get 1 and ``sizes`` the input's extent on the other axes (``roi`` 0 and 1); with
    ``keep_aspect_ratio_policy``, ``sizes`` become the sizes the policy gives.

    Legal when the input's shape is known and scales/sizes/roi are constants (ONNX
    defines the other axes as unchanged), and for a policy only where the sizes it
    gives are exactly its scale times the input's (the interpolation uses that scale);
    TVM 0.27 reads scales and sizes as full-rank and ignores the policy.
    """

    name: ClassVar[str] = "expand-resize-axes"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        import numpy as np

        expanded = 0
        for g in [model.graph, *model.graph.subgraphs()]:
            for node in list(g):
                if node.op_type != "Resize" or node.domain not in ONNX_DOMAINS or node.attr("axes") is None \
                        and node.attr("keep_aspect_ratio_policy", "stretch") in ("stretch", b"stretch"):
                    continue
                dims = static_dims(node.inputs[0])
                policy = node.attr("keep_aspect_ratio_policy", "stretch")
                policy = policy.decode() if isinstance(policy, bytes) else policy
                if dims is None:
                    continue
                rank = len(dims)
                axes = [a % rank for a in (node.attr("axes") or range(rank))]
                inputs = list(node.inputs) + [None] * (4 - len(node.inputs))
                values = [constant_value(v) if v is not None else None for v in inputs[1:4]]
                if any(v is None and given is not None for v, given in zip(values, inputs[1:4])):
                    continue
                roi, scales, sizes = values
                new = list(inputs)
                if roi is not None and roi.size:
                    full = np.concatenate([np.zeros(rank), np.ones(rank)]).astype(roi.dtype)
                    for i, a in enumerate(axes):
                        full[a], full[rank + a] = roi[i], roi[len(axes) + i]
                    new[1] = g.make_constant(full, "roi")
                if scales is not None and scales.size:
                    full = np.ones(rank, scales.dtype)
                    full[axes] = scales
                    new[2] = g.make_constant(full, "scales")
                if sizes is not None and sizes.size:
                    full = np.array(dims, sizes.dtype)
                    if policy != "stretch":
                        # One scale for every resized axis; the sizes it gives, rounded
                        # half up, are what the Resize means only where they are that
                        # scale exactly (the interpolation uses the scale).
                        ratios = [sizes[i] / dims[a] for i, a in enumerate(axes)]
                        scale = min(ratios) if policy == "not_larger" else max(ratios)
                        out = [int(scale * dims[a] + 0.5) for a in axes]
                        if any(o / dims[a] != scale for o, a in zip(out, axes)):
                            continue
                        full[axes] = out
                    else:
                        full[axes] = sizes
                    new[3] = g.make_constant(full, "sizes")
                elif policy != "stretch":
                    continue
                while new and new[-1] is None:
                    new.pop()
                node.set_inputs(new)
                node.attributes.pop("axes", None)
                node.attributes.pop("keep_aspect_ratio_policy", None)
                expanded += 1
        return PassResult(expanded > 0, {"resizes-expanded": expanded})
