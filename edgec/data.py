"""Sample data for accuracy checks, calibration and `edgec run`: `.npz` files keyed by the
model's input names, leading axis = sample; a directory or glob is their concatenation.
Without data, inputs are drawn from the model's input types (seeded), and callers say so.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import numpy as np
import onnx

from edgec.diagnostics import Diagnostic, Location, UsageError


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    shape: tuple  # ints, or str/None for symbolic and unknown dims


def model_inputs(model: onnx.ModelProto) -> list[InputSpec]:
    """The graph inputs that are not initializers, with numpy dtypes and shapes."""
    inits = {t.name for t in model.graph.initializer}
    out = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                     for d in tt.shape.dim)
        out.append(InputSpec(vi.name, onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type), dims))
    return out


def data_files(pattern: str) -> list[str]:
    """The `.npz` files a data path names: a file, a directory (its .npz files) or a glob;
    sorted, so the concatenation order is the same everywhere."""
    if os.path.isdir(pattern):
        return sorted(glob.glob(os.path.join(pattern, "*.npz")))
    if any(c in pattern for c in "*?["):
        return sorted(p for p in glob.glob(pattern, recursive=True) if p.endswith(".npz"))
    return [pattern] if os.path.exists(pattern) else []


def _check_npz(path: str, what: str) -> None:
    """One line for a file that is not an .npz archive (a model given as --data), instead
    of numpy's complaint about pickled data."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError:
        return  # np.load reports it
    if head[:4] != b"PK\x03\x04" and head != b"\x93NUMPY":
        kind = " (it looks like an ONNX model)" if path.endswith(".onnx") else ""
        raise UsageError(Diagnostic.error(
            f"{what} file is not an .npz archive{kind}: give arrays keyed by the model's "
            "input names, saved with numpy.savez", Location(path=path)))


def load_samples(pattern: str, inputs: list[InputSpec], *, what: str = "data") -> dict[str, np.ndarray]:
    """Arrays for every model input, concatenated over the files ``pattern`` names."""
    files = data_files(pattern)
    if not files:
        raise UsageError(Diagnostic.error(f"{what} '{pattern}' names no .npz file",
                                          Location(path=pattern)))
    parts: dict[str, list[np.ndarray]] = {i.name: [] for i in inputs}
    for path in files:
        _check_npz(path, what)
        try:
            with np.load(path, allow_pickle=False) as npz:
                keys = set(npz.files)
                missing = [i.name for i in inputs if i.name not in keys]
                if missing:
                    raise UsageError(Diagnostic.error(
                        f"{what} file has no array for model input '{missing[0]}' "
                        f"(it has: {', '.join(sorted(keys)) or 'nothing'})", Location(path=path)))
                for spec in inputs:
                    parts[spec.name].append(_conform(npz[spec.name], spec, path))
        except (OSError, ValueError) as e:
            raise UsageError(Diagnostic.error(f"cannot read {what} file: {e}",
                                              Location(path=path))) from None
    samples = {name: np.concatenate(arrays, axis=0) for name, arrays in parts.items()}
    counts = {len(a) for a in samples.values()}
    if len(counts) > 1:
        raise UsageError(Diagnostic.error(
            f"{what} arrays have different sample counts: "
            + ", ".join(f"{k}: {len(v)}" for k, v in samples.items()), Location(path=pattern)))
    return samples


def load_labels(pattern: str) -> np.ndarray:
    files = data_files(pattern)
    if not files:
        raise UsageError(Diagnostic.error(f"labels '{pattern}' names no .npz file",
                                          Location(path=pattern)))
    parts = []
    for path in files:
        _check_npz(path, "labels")
        with np.load(path, allow_pickle=False) as npz:
            key = "labels" if "labels" in npz.files else (npz.files[0] if len(npz.files) == 1 else None)
            if key is None:
                raise UsageError(Diagnostic.error(
                    "labels file needs an array named 'labels'", Location(path=path)))
            parts.append(np.asarray(npz[key]).reshape(-1))
    return np.concatenate(parts)


def _conform(array: np.ndarray, spec: InputSpec, path: str) -> np.ndarray:
    if array.ndim != len(spec.shape):
        raise UsageError(Diagnostic.error(
            f"array '{spec.name}' has shape {list(array.shape)}, but the model's input has "
            f"rank {len(spec.shape)} (leading axis = sample)", Location(path=path)))
    for axis, (have, want) in enumerate(zip(array.shape[1:], spec.shape[1:]), start=1):
        if isinstance(want, int) and want > 0 and have != want:
            raise UsageError(Diagnostic.error(
                f"array '{spec.name}' has {have} along axis {axis}; the model wants {want}",
                Location(path=path)))
    if array.dtype != spec.dtype:
        if np.can_cast(array.dtype, spec.dtype, casting="same_kind"):
            array = array.astype(spec.dtype)
        else:
            raise UsageError(Diagnostic.error(
                f"array '{spec.name}' is {array.dtype}; the model wants {spec.dtype}",
                Location(path=path)))
    return array


def synthetic_samples(inputs: list[InputSpec], count: int, seed: int,
                      batch: int = 1) -> dict[str, np.ndarray]:
    """``count`` samples per input drawn from its type: normal floats, small ints, bools.
    Symbolic and unknown dims become ``batch`` for the leading axis, 1 elsewhere."""
    rng = np.random.default_rng(seed)
    out = {}
    for spec in inputs:
        dims = [d if isinstance(d, int) and d > 0 else (batch if i == 0 else 1)
                for i, d in enumerate(spec.shape)]
        shape = (count, *dims[1:]) if dims else (count,)
        if np.issubdtype(spec.dtype, np.floating):
            out[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype == np.bool_:
            out[spec.name] = rng.integers(0, 2, shape).astype(np.bool_)
        elif np.issubdtype(spec.dtype, np.integer):
            out[spec.name] = rng.integers(0, 10, shape).astype(spec.dtype)
        else:
            raise UsageError(f"cannot make synthetic data for input '{spec.name}' of type "
                             f"{spec.dtype}; give data in the spec or with --data")
    return out


def example_inputs(inputs: list[InputSpec], batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """One run's inputs drawn from the input types: fixed dims as they are, a symbolic
    leading dim as ``batch``, other unknown dims 1."""
    samples = synthetic_samples(inputs, 1, seed, batch)
    out = {}
    for spec in inputs:
        first = spec.shape[0] if spec.shape else None
        if spec.shape and isinstance(first, int) and first > 0:
            n = first
        elif spec.shape:
            n = batch
        else:
            out[spec.name] = samples[spec.name][0]
            continue
        out[spec.name] = synthetic_samples([spec], n, seed, batch)[spec.name]
    return out
