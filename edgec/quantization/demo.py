"""A model where full int8 breaks a tolerance, for the sensitivity and mixed-precision
tests and benchmark: an MLP whose first hidden layer has one outlier channel.

``input`` [N, 64] -> MatMul+Add -> Relu -> MatMul+Add -> Relu -> MatMul+Add -> ``output`` [N, 10].
Hidden unit 0 of the first layer is scaled up ``outlier``-fold and the weights that
read it are scaled down by the same factor, so the fp32 function is that of a plain
MLP, but a per-tensor int8 range on the first hidden activation spends almost all of
its 256 levels on that one channel: quantizing the second layer's input breaks it.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def outlier_mlp(outlier: float = 1000.0, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    sizes = (64, 128, 128, 10)
    weights = [rng.normal(0, np.sqrt(2 / a), (a, b)).astype(np.float32) for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [rng.normal(0, 0.1, b).astype(np.float32) for b in sizes[1:]]
    weights[0][:, 0] *= outlier
    biases[0][0] = abs(biases[0][0]) * outlier
    weights[1][0, :] /= outlier
    nodes, inits, x = [], [], "input"
    for i, (w, b) in enumerate(zip(weights, biases)):
        inits += [numpy_helper.from_array(w, f"fc{i}.weight"), numpy_helper.from_array(b, f"fc{i}.bias")]
        nodes.append(helper.make_node("MatMul", [x, f"fc{i}.weight"], [f"fc{i}_mm"], name=f"/fc{i}/MatMul"))
        out = "output" if i == len(weights) - 1 else f"fc{i}_out"
        nodes.append(helper.make_node("Add", [f"fc{i}_mm", f"fc{i}.bias"], [out], name=f"/fc{i}/Add"))
        if i < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [out], [f"relu{i}"], name=f"/relu{i}/Relu"))
            x = f"relu{i}"
    graph = helper.make_graph(nodes, "outlier_mlp",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="edgec.quantization.demo")
    model.ir_version = 8
    return model
