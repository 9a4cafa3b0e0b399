"""The rewrite: every node that writes or reads a pruned channel group, made smaller.

Conv/Gemm/MatMul lose output channels (weight rows, bias entries) and input channels
(weight columns, with the removed channels' mean folded into the bias:
`compensation`); depthwise Convs, BatchNormalization parameters, per-channel constant
operands of binary ops and Reshape shape constants follow the channels they carry.
"""

from __future__ import annotations

import numpy as np

from edgec.ir.core import Attr, AttrType, Model, Node, Value
from edgec.ir.types import Shape, TensorType
from edgec.passes.prune_channels.compensation import ChannelMeans
from edgec.passes.prune_channels.layout import BINARY, ChannelAnalysis, node_attr, value_dims


class ChannelRewrite:
    """Applies a choice of kept channels (group root -> kept indices) to the model."""

    def __init__(self, model: Model, analysis: ChannelAnalysis, keep: dict[int, np.ndarray],
                 compensate: bool):
        self.model = model
        self.a = analysis
        self.keep = keep
        self.means = ChannelMeans(analysis) if compensate else None
        self.index: dict[int, np.ndarray] = {}
        self.replaced: list[Value] = []

    def indices(self, v: Value | None) -> np.ndarray | None:
        """Positions kept along ``v``'s channel axis; None when none of its groups lose channels."""
        return None if v is None else self.index.get(id(v))

    def apply(self) -> dict[str, int]:
        a = self.a
        self.compute_indices()
        if self.means is not None:
            self.means.propagate()
        removed: dict[str, int] = {}
        for node in a.nodes:
            self._rewrite(node, removed)
        for vid, idx in self.index.items():
            v = a.values[vid]
            d = v.shape.dims if v.shape is not None else None
            if isinstance(v.type, TensorType) and d is not None:
                dims = list(d)
                dims[a.layout[vid].axis] = len(idx)
                v.type = TensorType(v.type.dtype, Shape(tuple(dims), v.shape.denotations))
        graph = self.model.graph
        for v in self.replaced:
            if not v.has_uses() and v.is_constant() and graph.initializers.get(v.name) is v:
                graph.remove_initializer(v.name)
        return removed

    def compute_indices(self) -> None:
        a = self.a
        for vid, lay in a.layout.items():
            if not any(a.find(g) in self.keep for g, _ in lay.segments):
                continue
            parts, offset = [], 0
            for g, n in lay.segments:
                kept = self.keep.get(a.find(g), np.arange(n))
                parts.append(offset + kept)
                offset += n
            channels = np.concatenate(parts)
            self.index[vid] = (channels[:, None] * lay.inner + np.arange(lay.inner)).ravel()

    # -- helpers
    def _set_input(self, node: Node, i: int, array: np.ndarray, name: str) -> None:
        old = node.inputs[i] if i < len(node.inputs) else None
        if old is not None:
            self.replaced.append(old)
        new = self.model.graph.make_constant(array, (old.name if old is not None else None) or name)
        if i < len(node.inputs):
            node.set_input(i, new)
        else:
            while len(node.inputs) < i:
                node.append_input(None)
            node.append_input(new)

    def _rewrite(self, node: Node, removed: dict[str, int]) -> None:
        op = node.op_type
        x = node.inputs[0] if node.inputs else None
        out = node.outputs[0]
        i_in, i_out = self.indices(x), self.indices(out)
        if op in ("Conv", "Gemm", "MatMul") and id(out) in self.a.layout and (
                op != "Conv" or node_attr(node, "group", 1) == 1):
            self._rewrite_linear(node, i_in, i_out, removed)
        elif op == "Conv" and i_out is not None:  # depthwise
            w = node.inputs[1].const.numpy()
            self._set_input(node, 1, w[i_out], "weight")
            if len(node.inputs) > 2 and node.inputs[2] is not None:
                self._set_input(node, 2, node.inputs[2].const.numpy()[i_out], "bias")
            node.attributes["group"] = Attr("group", AttrType.INT, len(i_in))
        elif op == "BatchNormalization" and i_out is not None:
            for k in range(1, 5):
                self._set_input(node, k, node.inputs[k].const.numpy()[i_out], "bn")
        elif op in BINARY and i_out is not None:
            lay = self.a.layout[id(out)]
            for k, v in enumerate(node.inputs):
                if v is None or id(v) in self.a.layout:
                    continue
                d = value_dims(v)
                p = lay.axis + len(d)
                if p >= 0 and d[p] != 1:
                    self._set_input(node, k, np.take(v.const.numpy(), i_out, axis=p), "operand")
        elif op == "Reshape" and i_out is not None:
            shape = node.inputs[1].const.numpy().copy()
            axis = self.a.layout[id(out)].axis + len(shape)
            if shape[axis] != -1:  # an explicit size (or 0, "copy"): write the new size
                shape[axis] = len(i_out)
            self._set_input(node, 1, shape, "shape")

    def _rewrite_linear(self, node: Node, i_in, i_out, removed: dict[str, int]) -> None:
        op = node.op_type
        w = node.inputs[1].const.numpy()
        n_out = self.a.layout[id(node.outputs[0])].size
        bias_i = 2 if op in ("Conv", "Gemm") else None  # MatMul has no bias to compensate in
        bias_v = node.inputs[bias_i] if bias_i is not None and len(node.inputs) > bias_i else None
        bias = None if bias_v is None else np.array(bias_v.const.numpy(), copy=True)
        bias_changed = False
        # Weight axes: Conv [out, in, k...], Gemm transB [out, in], Gemm/MatMul [in, out].
        trans = op == "Gemm" and node_attr(node, "transB", 0)
        in_axis = 1 if op == "Conv" or trans else 0
        out_axis = 0 if op == "Conv" or trans else 1
        delta = (self.means.removed_contribution(node, w, in_axis, i_in)
                 if self.means is not None and bias_i is not None else None)
        if delta is not None:
            if op == "Gemm":
                beta = node_attr(node, "beta", 1.0)
                delta = delta * node_attr(node, "alpha", 1.0) / beta if beta else None
        if delta is not None:
            if bias is None:
                bias = np.zeros(n_out, dtype=w.dtype)
            elif bias.size == 1 and n_out != 1:
                bias = np.full(n_out, bias.reshape(-1)[0], dtype=bias.dtype)
            bias = (bias + delta).astype(bias.dtype)
            bias_changed = True
        if i_out is not None:
            w = np.take(w, i_out, axis=out_axis)
            if bias is not None and bias.ndim and bias.shape[-1] == n_out and n_out != 1:
                bias = np.take(bias, i_out, axis=bias.ndim - 1)
                bias_changed = True
            removed[node.name or node.outputs[0].name or op] = n_out - len(i_out)
        if i_in is not None:
            w = np.take(w, i_in, axis=in_axis)
        if i_in is not None or i_out is not None:
            self._set_input(node, 1, w, "weight")
        if bias_changed:
            self._set_input(node, bias_i, bias, "bias")
