"""``unroll-rnn``: LSTM, GRU and RNN over a sequence of known length as their steps.

``_Recurrence.of`` reads a node and says whether it can be unrolled; ``_Unroller``
builds, per direction, the input projection and the steps (one cell body per op:
``_lstm_step``, ``_gru_step``, ``_rnn_step``); ``_replace_outputs`` gathers Y, Y_h and
Y_c and takes the node's place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from edgec.ir.core import Model, Node, Value
from edgec.ir.types import DataType, TensorType
from edgec.passmgr.base import Pass, PassContext, PassResult

from .common import ONNX_DOMAINS, Chain, float_type


# Each recurrent op: its gate count and its default activations (per direction).
_RECURRENT = {"LSTM": (4, ("Sigmoid", "Tanh", "Tanh")), "GRU": (3, ("Sigmoid", "Tanh")),
              "RNN": (1, ("Tanh",))}


@dataclass(frozen=True)
class UnrollRecurrent(Pass):
    """``LSTM``, ``GRU`` and ``RNN`` over a sequence of known length T → T steps of
    MatMul/Add/Sigmoid/Tanh/Mul per direction, as ONNX defines the cells, the input
    projection done once for the whole sequence (``G = X·Wᵀ + Wb``, plus ``Rb`` where
    the cell adds it unconditionally); Y, Y_h (and LSTM's Y_c) gathered by Concat.

    LSTM: ``g = G[t] + h·Rᵀ``; ``i, o, f = σ``, ``c̃ = tanh`` of its quarters;
    ``C = f·C + i·c̃``; ``h = o·tanh(C)``. GRU: ``z, r = σ(G[t] + h·Rᵀ)``;
    ``h̃ = tanh(G_h[t] + (r·h)·R_hᵀ + Rb_h)`` (or ``+ r·(h·R_hᵀ + Rb_h)`` with
    linear_before_reset); ``h = (1 - z)·h̃ + z·h``. RNN: ``h = tanh(G[t] + h·Rᵀ)``.

    TVM 0.27 has no converter for these (nor for Scan or Loop to write one with). Legal
    for ONNX's default cells: default activations, no clip, no input_forget, no
    peepholes, layout 0, no sequence_lens (or all equal to T), float32, T known, and the
    batch known where no initial state is given; the result is the same computation
    up to the rounding of the fused kernels. Other recurrent nodes are left as they are.
    """

    name: ClassVar[str] = "unroll-rnn"
    max_steps: int = field(default=512, metadata={
        "help": "the longest sequence unrolled (each step adds about 15 nodes a direction)"})

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        if (model.opset("") or 1) < 10:  # Slice takes its bounds as inputs from opset 10
            return PassResult(False, {"nodes-unrolled": 0})
        unrolled = 0
        for g in [model.graph, *model.graph.subgraphs()]:
            for node in list(g):
                if node.op_type not in _RECURRENT or node.domain not in ONNX_DOMAINS:
                    continue
                recurrence = _Recurrence.of(node, self.max_steps)
                if recurrence is not None:
                    _Unroller(g, recurrence).unroll()
                    unrolled += 1
        return PassResult(unrolled > 0, {"nodes-unrolled": unrolled})


@dataclass(frozen=True)
class _Recurrence:
    """A recurrent node that ``unroll-rnn`` can unroll, with what the steps need."""

    node: Node
    x: Value                  # [T, B, I]
    w: Value                  # [D, gates·H, I]
    r: Value                  # [D, gates·H, H]
    b: Value | None           # [D, 2·gates·H]
    h0: Value | None          # [D, B, H]
    c0: Value | None          # LSTM's [D, B, H]
    steps: int
    batch: int | str | None
    hidden: int
    input_size: int
    direction: str            # forward, reverse or bidirectional
    linear_before_reset: bool

    @property
    def op(self) -> str:
        return self.node.op_type

    @property
    def directions(self) -> int:
        return 2 if self.direction == "bidirectional" else 1

    @property
    def gates(self) -> int:
        return _RECURRENT[self.op][0] * self.hidden

    @classmethod
    def of(cls, node: Node, max_steps: int) -> _Recurrence | None:
        """``node`` read, or None where it is not one of ONNX's default cells over a
        sequence of known length (see UnrollRecurrent)."""
        op = node.op_type
        default_activations = _RECURRENT[op][1]
        inputs = list(node.inputs) + [None] * (8 - len(node.inputs))
        x, w, r, b, lengths, h0 = inputs[:6]
        c0 = inputs[6] if op == "LSTM" else None
        extra = inputs[7] if op == "LSTM" else inputs[6]  # LSTM's peepholes; nothing else
        if x is None or w is None or r is None or float_type(x) is not DataType.FLOAT \
                or not isinstance(x.type, TensorType) or x.type.shape is None \
                or x.type.shape.dims is None or len(x.type.shape.dims) != 3:
            return None
        steps, batch = x.type.shape.dims[0], x.type.shape.dims[1]
        hidden = node.attr("hidden_size")
        if not isinstance(steps, int) or not 0 < steps <= max_steps or not isinstance(hidden, int):
            return None
        direction = node.attr("direction", "forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        directions = 2 if direction == "bidirectional" else 1
        activations = [a.decode() if isinstance(a, bytes) else a for a in node.attr("activations", []) or []]
        if activations and activations != list(default_activations) * directions:
            return None
        if node.attr("clip") is not None or node.attr("input_forget", 0) or node.attr("layout", 0) \
                or node.attr("activation_alpha") or node.attr("activation_beta") or extra is not None:
            return None
        if lengths is not None and (not lengths.is_constant() or not (lengths.const.numpy() == steps).all()):
            return None
        if (h0 is None or op == "LSTM" and c0 is None) and not isinstance(batch, int) \
                or not isinstance(x.type.shape.dims[2], int):
            return None
        return cls(node, x, w, r, b, h0, c0, steps, batch, hidden, x.type.shape.dims[2], direction,
                   op == "GRU" and bool(node.attr("linear_before_reset", 0)))


class _Unroller:
    """The nodes of one unrolled recurrence, built in order on a Chain and inserted
    before the node they replace."""

    def __init__(self, g, recurrence: _Recurrence):
        self.g = g
        self.rec = recurrence
        self.chain = Chain(g)
        self.axis0 = self.chain.constant([0], np.int64, "axis0")
        self.last = self.chain.constant([-1], np.int64, "axis_last")

    def unroll(self) -> None:
        ys, hs, cs = [], [], []
        for d in range(self.rec.directions):
            y, h, c = self._direction(d)
            ys.append(y)
            hs.append(h)
            cs.append(c)
        self._replace_outputs(ys, hs, cs)

    # -- slicing helpers

    def part(self, value: Value, start: int, stop: int, axes: Value) -> Value:
        chain = self.chain
        return chain.op("Slice", value, chain.constant([start], np.int64, "start"),
                        chain.constant([stop], np.int64, "stop"), axes)

    def matrix(self, value: Value, d: int, rows: int, columns: int) -> Value:  # [D, rows, cols][d]ᵀ
        flat = self.chain.op("Reshape", self.part(value, d, d + 1, self.axis0),
                             self.chain.constant([rows, columns], np.int64, "shape"))
        return self.chain.op("Transpose", flat, perm=[1, 0])

    def state(self, initial: Value | None, d: int) -> Value:  # [1, B, H]
        if initial is not None:
            return self.part(initial, d, d + 1, self.axis0)
        return self.chain.constant(np.zeros((1, self.rec.batch, self.rec.hidden), np.float32), "zeros")

    # -- one direction

    def _direction(self, d: int) -> tuple[Value, Value, Value | None]:
        """Direction ``d``'s Y [T, 1, B, H], last h and (LSTM) last c."""
        rec, chain = self.rec, self.chain
        reverse = rec.direction == "reverse" or d == 1
        weight = self.matrix(rec.w, d, rec.gates, rec.input_size)
        recurrence = self.matrix(rec.r, d, rec.gates, rec.hidden)
        projected = chain.op("MatMul", rec.x, weight)  # [T, B, gates·H]
        projected, hidden_bias = self._biased(projected, d)
        h = self.state(rec.h0, d)
        c = self.state(rec.c0, d) if rec.op == "LSTM" else None
        outputs: list[Value | None] = [None] * rec.steps
        for t in (range(rec.steps - 1, -1, -1) if reverse else range(rec.steps)):
            step = self.part(projected, t, t + 1, self.axis0)  # [1, B, gates·H]
            if rec.op == "LSTM":
                h, c = self._lstm_step(step, h, c, recurrence)
            elif rec.op == "RNN":
                h = self._rnn_step(step, h, recurrence)
            else:
                h = self._gru_step(step, h, recurrence, hidden_bias)
            outputs[t] = h
        sequence = chain.op("Concat", *outputs, axis=0)  # [T, B, H]
        y = chain.op("Reshape", sequence, chain.constant([rec.steps, 1, -1, rec.hidden], np.int64, "shape"))
        return y, h, c

    def _biased(self, projected: Value, d: int) -> tuple[Value, Value | None]:
        """``projected`` plus the input bias (and the recurrent bias where the cell adds
        it unconditionally), and GRU's Rb_h, added inside the reset gate's term."""
        rec, chain, axis0 = self.rec, self.chain, self.axis0
        if rec.b is None:
            return projected, None
        gates, hidden = rec.gates, rec.hidden
        hidden_bias = None
        biases = chain.op("Reshape", self.part(rec.b, d, d + 1, axis0),
                          chain.constant([2 * gates], np.int64, "shape"))
        input_bias, recurrent_bias = self.part(biases, 0, gates, axis0), self.part(biases, gates, 2 * gates, axis0)
        if rec.op == "GRU":
            input_bias = chain.op("Add", input_bias, chain.op("Concat", self.part(recurrent_bias, 0, 2 * hidden, axis0),
                                                              chain.constant(np.zeros(hidden, np.float32), "zeros"),
                                                              axis=0))
            hidden_bias = self.part(recurrent_bias, 2 * hidden, gates, axis0)
        else:
            input_bias = chain.op("Add", input_bias, recurrent_bias)
        return chain.op("Add", projected, input_bias), hidden_bias

    # -- the cells

    def _lstm_step(self, step: Value, h: Value, c: Value, recurrence: Value) -> tuple[Value, Value]:
        chain, hidden = self.chain, self.rec.hidden
        pre = chain.op("Add", step, chain.op("MatMul", h, recurrence))
        i, o, f, candidate = (self.part(pre, k * hidden, (k + 1) * hidden, self.last) for k in range(4))
        i, o, f = (chain.op("Sigmoid", v) for v in (i, o, f))
        c = chain.op("Add", chain.op("Mul", f, c), chain.op("Mul", i, chain.op("Tanh", candidate)))
        return chain.op("Mul", o, chain.op("Tanh", c)), c

    def _rnn_step(self, step: Value, h: Value, recurrence: Value) -> Value:
        return self.chain.op("Tanh", self.chain.op("Add", step, self.chain.op("MatMul", h, recurrence)))

    def _gru_step(self, step: Value, h: Value, recurrence: Value, hidden_bias: Value | None) -> Value:
        chain, hidden, gates, last = self.chain, self.rec.hidden, self.rec.gates, self.last
        r_zr = self.part(recurrence, 0, 2 * hidden, last)
        r_h = self.part(recurrence, 2 * hidden, gates, last)
        zr = chain.op("Sigmoid", chain.op("Add", self.part(step, 0, 2 * hidden, last),
                                          chain.op("MatMul", h, r_zr)))
        z, reset = self.part(zr, 0, hidden, last), self.part(zr, hidden, 2 * hidden, last)
        if self.rec.linear_before_reset:
            term = chain.op("MatMul", h, r_h)
            if hidden_bias is not None:
                term = chain.op("Add", term, hidden_bias)
            term = chain.op("Mul", reset, term)
        else:
            term = chain.op("MatMul", chain.op("Mul", reset, h), r_h)
            if hidden_bias is not None:
                term = chain.op("Add", term, hidden_bias)
        candidate = chain.op("Tanh", chain.op("Add", self.part(step, 2 * hidden, gates, last), term))
        one = chain.constant(np.ones((), np.float32), "one")
        return chain.op("Add", chain.op("Mul", chain.op("Sub", one, z), candidate), chain.op("Mul", z, h))

    # -- the outputs

    def _replace_outputs(self, ys: list[Value], hs: list[Value], cs: list[Value | None]) -> None:
        """Y, Y_h (and LSTM's Y_c) over the directions take the node's outputs' place."""
        chain, node, g = self.chain, self.rec.node, self.g
        directions = self.rec.directions
        results = [chain.op("Concat", *ys, axis=1) if directions > 1 else ys[0],
                   chain.op("Concat", *hs, axis=0) if directions > 1 else hs[0]]
        if self.rec.op == "LSTM":
            results.append(chain.op("Concat", *cs, axis=0) if directions > 1 else cs[0])
        g.insert_before(node, chain.nodes)
        for old, new in zip(node.outputs, results):
            if old.name and (old.has_uses() or old.is_graph_output()):
                new.type = old.type
                g.replace_value(old, new)
        g.remove(node, safe=False)
