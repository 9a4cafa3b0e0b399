"""Shape inference: ``y: ?`` -> ``y: f32[1,16]``, from ONNX's own inference with data propagation.

The pass form of `edgec.ir.shape_inference.infer_types`, which says what is inferred
and how it is merged; passes that need types call that function, not this pass.
When inference fails the model is left as it was, with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from edgec.ir.core import Model
from edgec.ir.shape_inference import infer_types
from edgec.passmgr.base import Pass, PassContext, PassResult


@dataclass(frozen=True)
class InferShapes(Pass):
    """Infer value types and shapes with ONNX's shape inference, keeping what is known."""

    name: ClassVar[str] = "infer-shapes"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        changed = infer_types(model, ctx.diagnostics)
        return PassResult(changed > 0, {"values-typed": changed})
