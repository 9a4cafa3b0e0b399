"""``unroll-rnn``: LSTM, GRU and RNN over a sequence of known length as their steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

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
                if node.op_type in _RECURRENT and node.domain in ONNX_DOMAINS and self._unroll(g, node):
                    unrolled += 1
        return PassResult(unrolled > 0, {"nodes-unrolled": unrolled})

    def _unroll(self, g, node: Node) -> bool:
        import numpy as np

        op = node.op_type
        gate_count, default_activations = _RECURRENT[op]
        inputs = list(node.inputs) + [None] * (8 - len(node.inputs))
        x, w, r, b, lengths, h0 = inputs[:6]
        c0 = inputs[6] if op == "LSTM" else None
        extra = inputs[7] if op == "LSTM" else inputs[6]  # LSTM's peepholes; nothing else
        if x is None or w is None or r is None or float_type(x) is not DataType.FLOAT \
                or not isinstance(x.type, TensorType) or x.type.shape is None \
                or x.type.shape.dims is None or len(x.type.shape.dims) != 3:
            return False
        steps, batch = x.type.shape.dims[0], x.type.shape.dims[1]
        hidden = node.attr("hidden_size")
        if not isinstance(steps, int) or not 0 < steps <= self.max_steps or not isinstance(hidden, int):
            return False
        direction = node.attr("direction", "forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        directions = 2 if direction == "bidirectional" else 1
        activations = [a.decode() if isinstance(a, bytes) else a for a in node.attr("activations", []) or []]
        if activations and activations != list(default_activations) * directions:
            return False
        if node.attr("clip") is not None or node.attr("input_forget", 0) or node.attr("layout", 0) \
                or node.attr("activation_alpha") or node.attr("activation_beta") or extra is not None:
            return False
        if lengths is not None and (not lengths.is_constant() or not (lengths.const.numpy() == steps).all()):
            return False
        if (h0 is None or op == "LSTM" and c0 is None) and not isinstance(batch, int) \
                or not isinstance(x.type.shape.dims[2], int):
            return False
        linear_before_reset = op == "GRU" and bool(node.attr("linear_before_reset", 0))
        chain = Chain(g)
        axis0 = chain.constant([0], np.int64, "axis0")
        last = chain.constant([-1], np.int64, "axis_last")

        def part(value: Value, start: int, stop: int, axes: Value) -> Value:
            return chain.op("Slice", value, chain.constant([start], np.int64, "start"),
                            chain.constant([stop], np.int64, "stop"), axes)

        def matrix(value: Value, d: int, rows: int, columns: int) -> Value:  # [D, rows, cols][d]ᵀ
            flat = chain.op("Reshape", part(value, d, d + 1, axis0),
                            chain.constant([rows, columns], np.int64, "shape"))
            return chain.op("Transpose", flat, perm=[1, 0])

        def state(initial: Value | None, d: int) -> Value:  # [1, B, H]
            if initial is not None:
                return part(initial, d, d + 1, axis0)
            return chain.constant(np.zeros((1, batch, hidden), np.float32), "zeros")

        gates = gate_count * hidden
        input_size = x.type.shape.dims[2]
        ys, hs, cs = [], [], []
        for d in range(directions):
            reverse = direction == "reverse" or d == 1
            weight = matrix(w, d, gates, input_size)
            recurrence = matrix(r, d, gates, hidden)
            projected = chain.op("MatMul", x, weight)  # [T, B, gates·H]
            hidden_bias = None  # GRU's Rb_h, added inside the reset gate's term
            if b is not None:
                biases = chain.op("Reshape", part(b, d, d + 1, axis0), chain.constant([2 * gates], np.int64, "shape"))
                input_bias, recurrent_bias = part(biases, 0, gates, axis0), part(biases, gates, 2 * gates, axis0)
                if op == "GRU":
                    input_bias = chain.op("Add", input_bias, chain.op("Concat", part(recurrent_bias, 0, 2 * hidden, axis0),
                                                                      chain.constant(np.zeros(hidden, np.float32), "zeros"),
                                                                      axis=0))
                    hidden_bias = part(recurrent_bias, 2 * hidden, gates, axis0)
                else:
                    input_bias = chain.op("Add", input_bias, recurrent_bias)
                projected = chain.op("Add", projected, input_bias)
            h = state(h0, d)
            c = state(c0, d) if op == "LSTM" else None
            outputs: list[Value | None] = [None] * steps
            for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
                step = part(projected, t, t + 1, axis0)  # [1, B, gates·H]
                if op == "LSTM":
                    pre = chain.op("Add", step, chain.op("MatMul", h, recurrence))
                    i, o, f, candidate = (part(pre, k * hidden, (k + 1) * hidden, last) for k in range(4))
                    i, o, f = (chain.op("Sigmoid", v) for v in (i, o, f))
                    c = chain.op("Add", chain.op("Mul", f, c), chain.op("Mul", i, chain.op("Tanh", candidate)))
                    h = chain.op("Mul", o, chain.op("Tanh", c))
                elif op == "RNN":
                    h = chain.op("Tanh", chain.op("Add", step, chain.op("MatMul", h, recurrence)))
                else:  # GRU
                    r_zr = part(recurrence, 0, 2 * hidden, last)
                    r_h = part(recurrence, 2 * hidden, gates, last)
                    zr = chain.op("Sigmoid", chain.op("Add", part(step, 0, 2 * hidden, last),
                                                      chain.op("MatMul", h, r_zr)))
                    z, reset = part(zr, 0, hidden, last), part(zr, hidden, 2 * hidden, last)
                    if linear_before_reset:
                        term = chain.op("MatMul", h, r_h)
                        if hidden_bias is not None:
                            term = chain.op("Add", term, hidden_bias)
                        term = chain.op("Mul", reset, term)
                    else:
                        term = chain.op("MatMul", chain.op("Mul", reset, h), r_h)
                        if hidden_bias is not None:
                            term = chain.op("Add", term, hidden_bias)
                    candidate = chain.op("Tanh", chain.op("Add", part(step, 2 * hidden, gates, last), term))
                    one = chain.constant(np.ones((), np.float32), "one")
                    h = chain.op("Add", chain.op("Mul", chain.op("Sub", one, z), candidate), chain.op("Mul", z, h))
                outputs[t] = h
            sequence = chain.op("Concat", *outputs, axis=0)  # [T, B, H]
            ys.append(chain.op("Reshape", sequence, chain.constant([steps, 1, -1, hidden], np.int64, "shape")))
            hs.append(h)
            cs.append(c)
        results = [chain.op("Concat", *ys, axis=1) if directions > 1 else ys[0],
                   chain.op("Concat", *hs, axis=0) if directions > 1 else hs[0]]
        if op == "LSTM":
            results.append(chain.op("Concat", *cs, axis=0) if directions > 1 else cs[0])
        g.insert_before(node, chain.nodes)
        for old, new in zip(node.outputs, results):
            if old.name and (old.has_uses() or old.is_graph_output()):
                new.type = old.type
                g.replace_value(old, new)
        g.remove(node, safe=False)
        return True
