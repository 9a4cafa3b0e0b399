"""Which int8 arithmetic a target does, the weight range that keeps it exact, and how
to score a quantized model with the target's arithmetic on this host.

x86 CPUs without VNNI multiply u8 x s8 pairs with vpmaddubsw, whose int16 pair sums
saturate once weights use all 8 bits (255·127·2 > 32767); 7-bit weights keep every
pair in range (255·63·2 < 32767). VNNI (vpdpbusd) and Arm (umull/sdot) accumulate in
int32, where 8-bit weights are exact and 7-bit ones only lose precision (about 6 dB of
weight SQNR). A target says which it does (``int8-accumulation``); the quantizers pick
the weight range from it (`weight_range`), and `scoring` decides whether onnxruntime
on this host computes what the target will.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

# The largest |weight| that cannot saturate an int16 pair sum with u8 activations.
SEVEN_BIT_MAX = 63
# onnxruntime's session option that keeps Q/DQ pairs unfused: weights are dequantized
# and the compute runs in fp32, so no int8 kernel (saturating or not) is involved.
DISABLE_QDQ_FUSION = "session.disable_quant_qdq"


@dataclass(frozen=True)
class WeightRange:
    reduce_range: bool    # True: 7-bit weights
    reason: str

    @property
    def bits(self) -> int:
        return 7 if self.reduce_range else 8


def weight_range(target, explicit: bool | None) -> WeightRange:
    """The weight range a quantizer uses: ``explicit`` when the pipeline sets
    ``reduce-range``, else what ``target``'s int8 kernels need; 7 bits without a target
    (exact on every kernel)."""
    if explicit is not None:
        return WeightRange(explicit, f"reduce-range={'true' if explicit else 'false'} set in "
                                     "the pipeline")
    if target is None:
        return WeightRange(True, "no target: 7-bit weights, exact on every int8 kernel")
    if target.int8_saturates:
        return WeightRange(True, f"{target.name} adds u8 x s8 pairs in saturating int16 "
                                 "(int8-accumulation int16-saturating): 7-bit weights keep "
                                 "them in range")
    return WeightRange(False, f"{target.name} accumulates int8 products in int32 "
                              "(int8-accumulation int32): full 8-bit weights")


# The ops of edgec's int8 output that read an int8 weight, and which input it is. The
# QOperator ops other tools write (QLinearConv, QLinearMatMul, ConvInteger) are not
# looked at: `exact_model` has no exact form for them.
_WEIGHT_READERS = {"DequantizeLinear": 0, "DynamicQuantizeMatMul": 1, "MatMulInteger": 1}


def _graphs(graph: onnx.GraphProto):
    """The graph and every subgraph (If branches, Loop/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for sub in attribute.graphs:
                    yield from _graphs(sub)


def largest_int8_weight(proto: onnx.ModelProto, base_dir: str = "") -> int | None:
    """max |q| over the int8 weights the model's int8 ops read, in every graph (None:
    none). ``base_dir``: where external data lies, for a model loaded without it."""
    largest = None
    # A subgraph's node may read an initializer of an enclosing graph.
    initializers = {t.name: t for g in _graphs(proto.graph) for t in g.initializer}
    for graph in _graphs(proto.graph):
        for node in graph.node:
            index = _WEIGHT_READERS.get(node.op_type)
            if index is None or len(node.input) <= index or node.input[index] not in initializers:
                continue
            tensor = initializers[node.input[index]]
            if tensor.data_type != onnx.TensorProto.INT8:
                continue
            array = numpy_helper.to_array(tensor, base_dir)
            if array.size:
                value = int(np.abs(array.astype(np.int32)).max())
                largest = value if largest is None else max(largest, value)
    return largest


@dataclass(frozen=True)
class Scoring:
    """How a candidate's accuracy is scored on this host."""

    path: str     # "host": onnxruntime as deployed; "exact": int8 kernels replaced by
    #               exact (int32-equivalent) arithmetic
    note: str     # for the report; "" when there is no int8 arithmetic to speak of
    representative: bool = True


def scoring(proto: onnx.ModelProto, target, host_saturates=None, base_dir: str = "") -> Scoring:
    """Whether onnxruntime here computes what ``target`` will, and if not, which path
    does: where this host saturates and the target does not, the exact path; where the
    target saturates and this host does not, the host is only representative when the
    weights keep to 7 bits (then nothing saturates anywhere). ``host_saturates``: this
    host's onnxruntime, measured (`edgec.machine.onnxruntime_saturates`) when None."""
    largest = largest_int8_weight(proto, base_dir)
    if largest is None:
        return Scoring("host", "")
    if largest <= SEVEN_BIT_MAX:
        return Scoring("host", "7-bit weights: no int8 kernel saturates, so this host's "
                               "onnxruntime computes what the target will")
    target_saturates = target.int8_saturates
    if host_saturates is None:
        from edgec.machine import onnxruntime_saturates
        host_saturates = onnxruntime_saturates()
    if host_saturates is None:
        host_saturates = False
        unknown = " (this host's int8 arithmetic could not be measured)"
    else:
        unknown = ""
    if host_saturates and not target_saturates:
        return Scoring("exact", f"scored with exact int32 arithmetic (onnxruntime with Q/DQ "
                                f"fusion off, integer ops in float64): {target.name} "
                                "accumulates in int32 but this host's onnxruntime saturates "
                                "8-bit weights")
    if target_saturates and not host_saturates:
        return Scoring("host", f"NOT the target's arithmetic: {target.name} saturates u8 x s8 "
                               "pairs with these 8-bit weights and this host does not"
                               f"{unknown}; the score is optimistic (leave reduce-range unset "
                               "to get 7-bit weights)", representative=False)
    kind = "saturating int16 pairs" if target_saturates else "int32"
    return Scoring("host", f"this host and {target.name} both accumulate int8 in {kind}"
                           f"{unknown}")


def exact_model(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its integer ops written in float arithmetic that gives their exact
    (int32-accumulator) result: ``DynamicQuantizeMatMul`` -> DynamicQuantizeLinear, DQ,
    MatMul with the dequantized weight; ``MatMulInteger`` -> float64 MatMul of the
    zero-point-corrected operands, cast to int32. In every graph. Run it with
    `exact_session_options` so that Q/DQ pairs stay unfused."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    ranks = {t.name: len(t.dims) for g in _graphs(out.graph) for t in g.initializer}
    counter = [0]
    # Subgraphs before the graphs holding them: rewriting a graph copies its nodes,
    # subgraph attributes included.
    for graph in reversed(list(_graphs(out.graph))):
        _rewrite_integer_ops(graph, ranks, counter)
    return out


def _rewrite_integer_ops(graph: onnx.GraphProto, ranks: dict[str, int],
                         counter: list[int]) -> None:
    def fresh(stem: str) -> str:
        counter[0] += 1
        return f"{stem}__exact{counter[0]}"

    double = onnx.TensorProto.DOUBLE
    nodes = []
    for node in graph.node:
        if node.op_type == "DynamicQuantizeMatMul" and node.domain == "com.microsoft":
            x, w, scale, zero = (list(node.input) + ["", "", "", "", ""])[:4]
            bias = node.input[4] if len(node.input) > 4 else ""
            xq, xs, xz, xd, wd = (fresh(s) for s in ("xq", "xs", "xz", "xd", "wd"))
            nodes.append(helper.make_node("DynamicQuantizeLinear", [x], [xq, xs, xz]))
            nodes.append(helper.make_node("DequantizeLinear", [xq, xs, xz], [xd]))
            dq_inputs = [w, scale] + ([zero] if zero else [])
            nodes.append(helper.make_node("DequantizeLinear", dq_inputs, [wd],
                                          **({"axis": 1} if ranks.get(scale) == 1 else {})))
            y = node.output[0] if not bias else fresh("y")
            nodes.append(helper.make_node("MatMul", [xd, wd], [y]))
            if bias:
                nodes.append(helper.make_node("Add", [y, bias], [node.output[0]]))
        elif node.op_type == "MatMulInteger" and node.domain in ("", "ai.onnx"):
            zeros = list(node.input[2:4]) + ["", ""]
            operands = []
            for value, zero in ((node.input[0], zeros[0]), (node.input[1], zeros[1])):
                cast = fresh("cast")
                nodes.append(helper.make_node("Cast", [value], [cast], to=double))
                if zero:
                    zcast, shifted = fresh("zero"), fresh("shifted")
                    nodes.append(helper.make_node("Cast", [zero], [zcast], to=double))
                    nodes.append(helper.make_node("Sub", [cast, zcast], [shifted]))
                    cast = shifted
                operands.append(cast)
            product = fresh("product")
            nodes.append(helper.make_node("MatMul", operands, [product]))
            nodes.append(helper.make_node("Cast", [product], [node.output[0]],
                                          to=onnx.TensorProto.INT32))
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def exact_session_options():
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry(DISABLE_QDQ_FUSION, "1")
    return options


def exact_session(proto: onnx.ModelProto):
    """An onnxruntime session computing ``proto``'s int8 ops exactly (see `exact_model`)."""
    import onnxruntime as ort

    return ort.InferenceSession(exact_model(proto).SerializeToString(), exact_session_options(),
                                providers=["CPUExecutionProvider"])


def run_exact(proto: onnx.ModelProto, samples: dict[str, np.ndarray]) -> list[np.ndarray]:
    """``observe.run`` on the exact path: the outputs on every sample, concatenated."""
    from edgec.quantization.observe import feed_batches

    session = exact_session(proto)
    names = [o.name for o in session.get_outputs()]
    wanted = {i.name for i in session.get_inputs()}
    parts: list[list[np.ndarray]] = [[] for _ in names]
    for feed in feed_batches(list(proto.graph.input),
                             {k: v for k, v in samples.items() if k in wanted}):
        for i, out in enumerate(session.run(names, feed)):
            parts[i].append(out)
    return [np.concatenate(p, axis=0) if p and np.ndim(p[0]) else np.asarray(p) for p in parts]


def needs_exact_path(target, reduce_range: bool) -> bool:
    """Whether a quantizer's own trials (per-layer fallback) must run on the exact path:
    8-bit weights for a target that accumulates in int32, on a host whose onnxruntime
    saturates them."""
    if reduce_range or target is None or target.int8_saturates:
        return False
    from edgec.machine import onnxruntime_saturates
    return bool(onnxruntime_saturates())
