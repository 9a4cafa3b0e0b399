"""From user arrays to runs: the DESIGN's two layouts.

- batch-leading (rank equal to the input's): the leading axis is the batch. With a
  symbolic batch the whole array is one run; with a fixed batch B the rows are run B at
  a time and the outputs concatenated.
- per-sample feeds (rank + 1, ``[S, *input_shape]``): each entry is one complete feed,
  run on its own; outputs are stacked to ``[S, *output_shape]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from edgec_runtime.errors import InputError
from edgec_runtime.npz import check_header


@dataclass(frozen=True)
class InputInfo:
    name: str
    dtype: np.dtype
    shape: tuple  # ints, or str/None for symbolic dims

    @property
    def wanted(self) -> tuple:
        return (self.dtype, self.shape)


def conform(arrays: Mapping[str, object], inputs: list[InputInfo], path: str | None = None
            ) -> tuple[str, dict[str, np.ndarray]]:
    """Check in-memory arrays (the Python API's feed) like `read_npz` checks a file's;
    returns the layout and the arrays cast to the input dtypes."""
    layouts = set()
    out = {}
    for info in inputs:
        if info.name not in arrays:
            raise InputError(f"missing input '{info.name}' (the model takes: "
                             f"{', '.join(i.name for i in inputs)})", path)
        value = arrays[info.name]
        try:
            array = np.asarray(value)
        except Exception as e:  # ragged lists and the like
            raise InputError(f"input '{info.name}' is not an array: {type(e).__name__}", path) \
                from None
        if array.dtype.hasobject or array.dtype.kind not in "biuf":
            raise InputError(f"input '{info.name}' is {array.dtype}; inputs must be numeric "
                             "arrays (bool, int, uint, float)", path)
        layouts.add(check_header(info.name, array.dtype, array.shape, np.dtype(info.dtype),
                                 list(info.shape), path, ("batch", "sample")))
        # Not np.ascontiguousarray: it makes a 0-d (scalar) input 1-d.
        out[info.name] = np.asarray(array.astype(info.dtype, copy=False), order="C")
    return _one_layout(layouts, out, inputs, path), out


def _one_layout(layouts: set, arrays: dict, inputs: list[InputInfo], path) -> str:
    if len(layouts) > 1:
        raise InputError(_mixed_layouts(arrays, inputs), path)
    layout = layouts.pop() if layouts else "batch"
    counts = {}
    for info in inputs:
        a = arrays[info.name]
        if layout == "sample" or len(info.shape) > 0:
            counts[info.name] = a.shape[0]
    if len(set(counts.values())) > 1:
        raise InputError("inputs hold different sample counts: "
                         + ", ".join(f"{k}: {v}" for k, v in counts.items()), path)
    return layout


def _mixed_layouts(arrays: Mapping[str, np.ndarray], inputs: list[InputInfo]) -> str:
    """Which input is in which layout, with shapes, for the error that says they differ."""
    def shape_text(shape) -> str:
        return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
    batch = [i for i in inputs if np.ndim(arrays[i.name]) == len(i.shape)]
    sample = [i for i in inputs if np.ndim(arrays[i.name]) == len(i.shape) + 1]
    if not batch or not sample:
        return "some inputs are batch-leading and others per-sample feeds; use one layout for all"
    b, p = batch[0], sample[0]
    if not b.shape:
        return (f"array '{b.name}' holds one value (shape []) for the scalar input '{b.name}', "
                f"but '{p.name}' {list(np.shape(arrays[p.name]))} holds per-sample feeds: give "
                f"'{b.name}' one value per feed, shape [S]")
    return (f"inputs in different layouts: '{b.name}' {list(np.shape(arrays[b.name]))} is "
            f"batch-leading (the rank of input {shape_text(b.shape)}), '{p.name}' "
            f"{list(np.shape(arrays[p.name]))} per-sample (one more); give every input in one "
            "layout (per-sample: [S, *input shape] for each)")


def layout_of(arrays: Mapping[str, np.ndarray], inputs: list[InputInfo], path=None) -> str:
    layouts = {("sample" if arrays[i.name].ndim == len(i.shape) + 1 else "batch") for i in inputs}
    return _one_layout(layouts, dict(arrays), inputs, path)


def run_all(run: Callable[[dict], dict], arrays: Mapping[str, np.ndarray],
            inputs: list[InputInfo], layout: str) -> dict[str, np.ndarray]:
    """Every feed the arrays hold, through ``run``; outputs joined as the layout says."""
    if not inputs:
        return run({})
    if layout == "sample":
        count = len(arrays[inputs[0].name])
        # [s, ...], not [s]: a scalar input's entry must stay a 0-d array (onnxruntime
        # refuses a numpy scalar).
        results = [run({i.name: arrays[i.name][s, ...] for i in inputs}) for s in range(count)]
        return _join(results, stack=True)
    fixed = None
    for info in inputs:
        if info.shape and isinstance(info.shape[0], int) and info.shape[0] > 0:
            fixed = info.shape[0]
    if fixed is None or not inputs[0].shape:
        return run(dict(arrays))
    total = len(arrays[inputs[0].name])
    results = [run({i.name: arrays[i.name][start:start + fixed] for i in inputs})
               for start in range(0, total, fixed)]
    return _join(results, stack=False)


def _join(results: list[dict], *, stack: bool) -> dict[str, np.ndarray]:
    if len(results) == 1 and not stack:
        return results[0]
    out = {}
    for name in results[0]:
        parts = [np.asarray(r[name]) for r in results]
        try:
            out[name] = np.stack(parts) if stack else np.concatenate(parts, axis=0)
        except ValueError:
            raise InputError(f"output '{name}' has a different shape from one feed to the next "
                             "; run the feeds one at a time") from None
    return out


def synthetic(inputs: list[InputInfo], batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """One run's inputs drawn from the input types: fixed dims as they are, a symbolic
    leading dim as ``batch``, other symbolic dims 1."""
    rng = np.random.default_rng(seed)
    out = {}
    for info in inputs:
        dims = [d if isinstance(d, int) and d > 0 else (batch if axis == 0 else 1)
                for axis, d in enumerate(info.shape)]
        dtype = np.dtype(info.dtype)
        if dtype.kind == "f":
            out[info.name] = rng.standard_normal(dims).astype(dtype)
        elif dtype.kind == "b":
            out[info.name] = rng.integers(0, 2, dims).astype(dtype)
        elif dtype.kind in "iu":
            out[info.name] = rng.integers(0, 10, dims).astype(dtype)
        else:
            raise InputError(f"cannot make synthetic data for input '{info.name}' of type "
                             f"{dtype}; give --inputs")
    return out
