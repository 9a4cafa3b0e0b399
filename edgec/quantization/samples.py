"""Calibration samples for a quantization pass: ``ctx.calibration_data`` under
``edgec compile``, else the pass's ``calibration-data`` option (an .npz file, folder or
glob), else an error that says how to give some."""

from __future__ import annotations

import numpy as np

from edgec.data import load_samples, model_inputs
from edgec.frontend import export_model
from edgec.ir.core import Model
from edgec.passmgr.base import PassContext, PassUsageError


def calibration_samples(model: Model, ctx: PassContext, path: str, pass_name: str) -> dict[str, np.ndarray]:
    if ctx.calibration_data is not None:
        return dict(ctx.calibration_data)
    if path:
        proto = export_model(model)
        return load_samples(path, model_inputs(proto), what="calibration data")
    raise PassUsageError(f"{pass_name} needs calibration data: run it under `edgec compile` with "
                    f"data in the spec (or --data), or give {pass_name}{{calibration-data=FILE.npz}}")
