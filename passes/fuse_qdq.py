"""QuantizeLinear ∘ DequantizeLinear pairs that cancel.

    QuantizeLinear(DequantizeLinear(q, s, z), s, z) -> q

Dequantizing then requantizing with the same scale and zero point gives back q
exactly: (q - z)·s / s rounds back to q - z because the rounding error of the float
product and quotient stays far below 1/2 for 8-bit codes (at most 255·2⁻¹¹ even with
float16 scales). Legal when: q is int8 or uint8; both scales are the same nonzero,
finite constants and both zero points the same constants (an omitted one is 0 of
q's dtype); the two nodes use the same axis and block size; the Quantize's output
dtype is q's dtype. The opposite order, DequantizeLinear ∘ QuantizeLinear, is fake
quantization (it rounds x) and never cancels.
"""

from __future__ import annotations

import numpy as np

from edgec.ir.core import Model
from edgec.ir.types import DataType
from edgec.rewrite import (Builder, Const, Match, Op, Rule, Var, attribute, constant_array,
                           replaceable_by)

EIGHT_BIT = (DataType.INT8, DataType.UINT8)


def _zero_point(node, dtype: np.dtype) -> np.ndarray | None | str:
    inputs = node.inputs
    if len(inputs) < 3 or inputs[2] is None:
        return None
    array = constant_array(inputs[2])
    if array is None:
        return "a zero point is not constant"
    return array


def check_qdq(match: Match, model: Model) -> str | None:
    dq, q = match.nodes["dq"], match.root
    code = match["q"]
    if code.dtype not in EIGHT_BIT:
        return "q is not int8 or uint8"
    dtype = code.dtype.to_numpy()
    s1, s2 = match.constants["s1"], match.constants["s2"]
    if s1.shape != s2.shape or s1.dtype != s2.dtype or not np.array_equal(s1, s2):
        return "the scales differ"
    if not np.all(np.isfinite(s1)) or np.any(s1 == 0):
        return "a scale is zero or not finite"
    z1, z2 = _zero_point(dq, dtype), _zero_point(q, dtype)
    if isinstance(z1, str) or isinstance(z2, str):
        return "a zero point is not constant"
    out_dtype = z2.dtype if z2 is not None else np.dtype(np.uint8)
    output_dtype = attribute(q, "output_dtype", 0)
    if output_dtype:
        out_dtype = DataType(output_dtype).to_numpy()
    if out_dtype != dtype:
        return "QuantizeLinear's output dtype differs from q's"
    z1 = np.zeros_like(s1, dtype=dtype) if z1 is None else z1
    z2 = np.zeros_like(s2, dtype=dtype) if z2 is None else z2
    if z1.shape != z2.shape or not np.array_equal(z1, z2):
        return "the zero points differ"
    if s1.size > 1 and attribute(dq, "axis", 1) != attribute(q, "axis", 1):
        return "the axes differ"
    if attribute(dq, "block_size", 0) != attribute(q, "block_size", 0):
        return "the block sizes differ"
    return replaceable_by(q.outputs[0], code)


def _keep_code(match: Match, b: Builder):
    return match["q"]


RULES = [
    # Q(DQ(q, s, z), s, z) -> q
    Rule("qdq-cancel", Op("QuantizeLinear", Op("DequantizeLinear", Var("q"), Const("s1"), name="dq",
                                               extra_inputs=True), Const("s2"), extra_inputs=True),
         check_qdq, _keep_code),
]
