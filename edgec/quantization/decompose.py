"""HardSwish and HardSigmoid written in ops onnxruntime runs in int8.

onnxruntime's QDQ selectors (qdq_selector_action_transformer.cc) have an int8 form for
Add and Mul (QLinearAdd, QLinearMul), Clip folds into the QuantizeLinear after it
(ClipQuantFusion), but HardSwish and HardSigmoid have none: quantized around them they
run as DequantizeLinear -> HardSigmoid -> Mul -> QuantizeLinear in fp32, an island in
every MobileNetV3 block (profiled on the mobilenet-v3-small corpus model: a third of
the int8 run's time in those islands and their Q/DQ). Written as

    HardSigmoid(x) = Clip(x * alpha + beta, 0, 1)
    HardSwish(x)   = x * Clip(x * 1/6 + 1/2, 0, 1)

every step has an int8 kernel, so the region around them stays int8. The rewrite is
exact in fp32 up to rounding (x*alpha+beta computed in two steps); it is applied only
for the contiguous placement (in fp32 onnxruntime fuses HardSwish/HardSigmoid into the
Conv before them, where the decomposed form would be slower).
"""

from __future__ import annotations

import numpy as np

from edgec.ir.core import Model, Node, Value

HARD_OPS = frozenset({"HardSwish", "HardSigmoid"})


def _hard_sigmoid(graph, x: Value, alpha: float, beta: float, base: str) -> tuple[list[Node], Value]:
    a = graph.make_constant(np.array(alpha, dtype=np.float32), f"{base}_alpha")
    b = graph.make_constant(np.array(beta, dtype=np.float32), f"{base}_beta")
    lo = graph.make_constant(np.array(0.0, dtype=np.float32), f"{base}_zero")
    hi = graph.make_constant(np.array(1.0, dtype=np.float32), f"{base}_one")
    scaled = Value(graph.unique_name(f"{base}_scaled"), x.type)
    shifted = Value(graph.unique_name(f"{base}_shifted"), x.type)
    gate = Value(graph.unique_name(f"{base}_gate"), x.type)
    nodes = [Node("Mul", [x, a], outputs=[scaled], name=graph.unique_name(f"{base}/scale")),
             Node("Add", [scaled, b], outputs=[shifted], name=graph.unique_name(f"{base}/shift")),
             Node("Clip", [shifted, lo, hi], outputs=[gate], name=graph.unique_name(f"{base}/clip"))]
    return nodes, gate


def decompose_hard_activations(model: Model) -> int:
    """Rewrite every float HardSwish/HardSigmoid of the quantizable graphs as
    Mul/Add/Clip(/Mul), in place. Returns how many were rewritten."""
    from edgec.quantization.qdq import is_float, quantizable_graphs

    rewritten = 0
    for graph in quantizable_graphs(model):
        for node in list(graph):
            if node.op_type not in HARD_OPS or node.domain not in ("", "ai.onnx"):
                continue
            x = node.inputs[0] if node.inputs else None
            if x is None or not is_float(x) or len(node.outputs) != 1:
                continue
            base = node.name or node.outputs[0].name or node.op_type
            if node.op_type == "HardSigmoid":
                alpha, beta = float(node.attr("alpha", 0.2)), float(node.attr("beta", 0.5))
            else:
                alpha, beta = 1.0 / 6.0, 0.5
            nodes, out = _hard_sigmoid(graph, x, alpha, beta, base)
            if node.op_type == "HardSwish":
                product = Value(graph.unique_name(f"{base}_product"), x.type)
                nodes.append(Node("Mul", [x, out], outputs=[product],
                                  name=graph.unique_name(f"{base}/gate")))
                out = product
            graph.insert_before(node, nodes)
            graph.replace_value(node.outputs[0], out)
            graph.remove(node, safe=False)
            rewritten += 1
    return rewritten


def _scalar_dequantized(v: Value | None) -> float | None:
    """The value of ``v`` when it is a DequantizeLinear of a constant scalar."""
    dq = v.producer() if v is not None else None
    if dq is None or dq.op_type != "DequantizeLinear" or not dq.inputs[0].is_constant():
        return None
    parts = [x.const.numpy() if x is not None and x.is_constant() else None for x in dq.inputs[:3]]
    if parts[1] is None or parts[0].size != 1 or parts[1].size != 1:
        return None
    zp = parts[2].reshape(-1)[0].astype(np.float64) if len(parts) > 2 and parts[2] is not None else 0.0
    return float((parts[0].reshape(-1)[0].astype(np.float64) - zp) * parts[1].reshape(-1)[0])


def fold_scalar_multiplies(model: Model) -> int:
    """``DQ(q, s, z) -> Mul(c) -> Q -> DQ`` with ``c`` a positive scalar becomes
    ``DQ(q, s*c, z)``, in place, after Q/DQ insertion: a multiply by a constant is a
    change of scale, free in int8 (and one rounding fewer). The readers' DequantizeLinear
    reads the producer's int8 value directly with the scale multiplied; onnxruntime's
    QDQ selectors take each DequantizeLinear's own parameters, so its int8 kernels read
    it as they would any other. Returns how many Muls were folded."""
    from edgec.quantization.qdq import quantizable_graphs

    folded = 0
    for graph in quantizable_graphs(model):
        for mul in list(graph):
            if mul.op_type != "Mul" or mul.domain not in ("", "ai.onnx") or len(mul.inputs) != 2:
                continue
            for k in (0, 1):
                c = _scalar_dequantized(mul.inputs[1 - k])
                dq_x = mul.inputs[k].producer() if mul.inputs[k] is not None else None
                if c is not None and c > 0 and dq_x is not None and dq_x.op_type == "DequantizeLinear" \
                        and not dq_x.inputs[0].is_constant():
                    break
            else:
                continue
            scale = dq_x.inputs[1].const.numpy() if dq_x.inputs[1].is_constant() else None
            if scale is None or scale.size != 1 or len(dq_x.inputs) < 3 or dq_x.inputs[2] is None:
                continue
            y = mul.outputs[0]
            readers = y.consumers()
            if y.is_graph_output() or len(readers) != 1 or readers[0].op_type != "QuantizeLinear":
                continue
            q_y = readers[0]
            dqs = q_y.outputs[0].consumers()
            if q_y.outputs[0].is_graph_output() or not dqs or \
                    any(d.op_type != "DequantizeLinear" for d in dqs):
                continue
            if q_y.inputs[2] is None or q_y.inputs[2].dtype != dq_x.inputs[2].dtype:
                continue
            new_scale = graph.make_constant(
                (scale.astype(np.float64) * c).astype(np.float32).reshape(scale.shape),
                f"{y.name or 'mul'}_folded_scale")
            for d in dqs:
                d.set_input(0, dq_x.inputs[0])
                d.set_input(1, new_scale)
                d.set_input(2, dq_x.inputs[2])
            graph.remove(q_y, safe=False)
            const_dq = mul.inputs[1 - k].producer()
            graph.remove(mul, safe=False)
            if const_dq is not None and not const_dq.outputs[0].has_uses():
                graph.remove(const_dq, safe=False)
            if not dq_x.outputs[0].has_uses() and not dq_x.outputs[0].is_graph_output():
                graph.remove(dq_x, safe=False)
            folded += 1
    for g in quantizable_graphs(model):
        g.remove_unused_initializers()
    return folded
