"""Facts about the machine edgec runs on that more than the spec language needs, read
once and cached: /proc/cpuinfo and its flags, the per-user cache folder, and how this
machine's onnxruntime adds up int8 products (`onnxruntime_saturates`), which the
quantizer's scoring asks as much as the ``host`` target's ``int8-accumulation auto``.
"""

from __future__ import annotations

import functools
import os
import platform
import re
from pathlib import Path

@functools.cache
def cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


@functools.cache
def flags() -> frozenset[str]:
    match = re.search(r"^(?:flags|Features)\s*:\s*(.*)$", cpuinfo(), re.MULTILINE)
    return frozenset(match.group(1).split()) if match else frozenset()


def cache_file(name: str) -> Path:
    return Path(os.environ.get("EDGEC_CACHE_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgec") / name



@functools.cache
def onnxruntime_saturates() -> bool | None:
    """Whether onnxruntime here saturates u8 x s8 products with 8-bit weights (measured
    once per machine and onnxruntime version, cached); None without onnxruntime."""
    import hashlib
    import importlib.metadata
    import json

    try:
        version = importlib.metadata.version("onnxruntime")
    except importlib.metadata.PackageNotFoundError:
        return None
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo(), re.MULTILINE)
    key = hashlib.sha256("|".join([model.group(1) if model else "", " ".join(sorted(flags())),
                                   platform.machine(), version]).encode()).hexdigest()[:16]
    cache = cache_file("host-int8.json")
    try:
        known = json.loads(cache.read_text())
        if known.get("key") == key:
            return bool(known["saturates"])
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    try:
        error = int8_matmul_error()
    except Exception:  # noqa: BLE001 - a probe that cannot run tells nothing
        return None
    # Exact int32 accumulation leaves fp32 rounding (~1e-6 relative); a saturated int16
    # pair sum is off by thousands of units of the product scale.
    saturates = error > 1e-3
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "saturates": saturates, "max_rel_error": error}))
        os.replace(tmp, cache)
    except OSError:
        pass
    return saturates


def int8_matmul_error() -> float:
    """Relative max error of onnxruntime's int8 MatMul (QDQ, 8-bit weights of one sign,
    u8 activations near 255: every adjacent pair overflows int16) against exact sums."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    k, n = 128, 64
    q = rng.integers(64, 128, (k, n)).astype(np.int8)
    scale = np.full(n, 1 / 127, np.float32)
    x_scale = np.float32(4 / 255)
    inits = [numpy_helper.from_array(q, "wq"), numpy_helper.from_array(scale, "ws"),
             numpy_helper.from_array(np.zeros(n, np.int8), "wz"),
             numpy_helper.from_array(np.array(x_scale), "xs"),
             numpy_helper.from_array(np.array(0, np.uint8), "xz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=1),
             helper.make_node("MatMul", ["xd", "wd"], ["y"])]
    graph = helper.make_graph(
        nodes, "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, n])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(proto.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    x = rng.integers(240, 256, (64, k)).astype(np.float32) * x_scale
    exact = (np.round(x / x_scale).astype(np.float64) * float(x_scale)) @ (
        q.astype(np.float64) * scale.astype(np.float64))
    got = session.run(None, {"x": x})[0]
    return float(np.abs(got - exact).max() / np.abs(exact).max())
