"""Sample data for accuracy checks, calibration and `edgec run`: `.npz` files keyed by the
model's input names, leading axis = sample; a directory or glob is their concatenation.
Without data, inputs are drawn from the model's input types (seeded), and callers say so.
"""

from __future__ import annotations

import glob
import os
import stat
import struct
import tokenize
import zipfile
import zlib
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
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        except (KeyError, ValueError, TypeError):
            from edgec.diagnostics import ModelError

            what = "tensor" if vi.type.WhichOneof("value") == "tensor_type" else \
                (vi.type.WhichOneof("value") or "untyped")
            raise ModelError(Diagnostic.error(
                f"input '{vi.name}' ({what}, element type {tt.elem_type}) is not a tensor "
                "edgec can feed")) from None
        out.append(InputSpec(vi.name, dtype, dims))
    return out


def data_files(pattern: str) -> list[str]:
    """The `.npz` files a data path names: a file, a directory (its .npz files) or a glob;
    sorted, so the concatenation order is the same everywhere. Each must be a regular
    file (a device, FIFO or socket would block or never end when hashed or read): any
    other is a `UsageError`."""
    if os.path.isdir(pattern):
        files = sorted(glob.glob(os.path.join(pattern, "*.npz")))
    elif any(c in pattern for c in "*?["):
        files = sorted(p for p in glob.glob(pattern, recursive=True) if p.endswith(".npz"))
    else:
        files = [pattern] if os.path.exists(pattern) else []
    for path in files:
        try:
            regular = stat.S_ISREG(os.stat(path).st_mode)
        except OSError:
            continue  # gone since it was listed: reading it reports that
        if not regular:
            raise UsageError(Diagnostic.error(
                "not a regular file (a device, FIFO, socket or folder); data files are .npz "
                "files", Location(path=path)))
    return files


# Arrays larger than this (their declared size) are refused before any is allocated.
MAX_ARRAY_BYTES = 2 << 30
_NUMERIC_KINDS = "biufc"
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, struct.error,
                NotImplementedError, KeyError, TypeError, SyntaxError, OverflowError,
                RecursionError, tokenize.TokenError)


def read_npz(path: str, names: list[str] | None = None, *, what: str = "data",
             max_bytes: int = MAX_ARRAY_BYTES) -> dict[str, np.ndarray]:
    """The arrays ``names`` (all when None) of the `.npz` file ``path``, read safely.

    Every header is checked before anything is allocated: numeric or bool dtypes only
    (no objects, no pickles, no structured records), a declared size that agrees with
    the zip member's size and stays under ``max_bytes``, and arrays not asked for are
    never decompressed. Anything wrong (empty, truncated or corrupt zip, a ``.npy``, a
    header that lies) is one `UsageError` (exit 2) naming the file and what is wrong.
    """
    where = Location(path=path)

    def refuse(message: str) -> UsageError:
        return UsageError(Diagnostic.error(f"{what} file {message}", where))

    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as e:
        raise refuse(f"cannot be read: {e.strerror or e}") from None
    if not head:
        raise refuse("is empty; expected an .npz archive")
    if head == b"\x93NUMPY":
        raise refuse("is a .npy file (one unnamed array); save an .npz of named arrays: "
                     "numpy.savez(path, name=array)")
    try:
        with zipfile.ZipFile(path) as archive:
            members = {m.filename[:-4]: m for m in archive.infolist()
                       if m.filename.endswith(".npy")}
            wanted = list(members) if names is None else [n for n in names if n in members]
            total = 0
            out = {}
            for name in wanted:
                member = members[name]
                with archive.open(member) as stream:
                    array, nbytes = _read_member(stream, member, name, max_bytes - total, refuse)
                total += nbytes
                out[name] = array
            return out
    except UsageError:
        raise
    except MemoryError:
        raise refuse("holds more than this machine's memory can take") from None
    except _READ_ERRORS as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise refuse(f"is not a readable .npz archive: {reason}") from None


def _read_member(stream, member: zipfile.ZipInfo, name: str, budget: int, refuse):
    from numpy.lib import format as npy

    version = npy.read_magic(stream)
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise refuse(f"array '{name}' has an unknown .npy format version {version}")
    reader = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
    shape, fortran, dtype = reader(stream, max_header_size=10000)
    if dtype.hasobject or dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None:
        raise refuse(f"array '{name}' has dtype {dtype}; only numeric and bool arrays are read")
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise refuse(f"array '{name}' declares an invalid shape {shape}")
    count = 1
    for d in shape:
        count *= d
    nbytes = count * dtype.itemsize
    header = stream.tell()
    if nbytes > budget:
        raise refuse(f"array '{name}' declares {list(shape)} {dtype} ({nbytes} bytes), over "
                     f"the limit of {MAX_ARRAY_BYTES >> 20} MiB for data")
    if header + nbytes != member.file_size:
        raise refuse(f"array '{name}' declares {list(shape)} {dtype} ({nbytes} bytes), but "
                     f"the archive holds {max(0, member.file_size - header)} bytes for it "
                     "(a header that lies, or a truncated file)")
    data = stream.read(nbytes)
    if len(data) != nbytes:
        raise refuse(f"array '{name}' is truncated")
    array = np.frombuffer(data, dtype=dtype)
    order = "F" if fortran else "C"
    return array.reshape(shape, order=order).copy(order="C") if fortran \
        else array.reshape(shape).copy(), nbytes


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
        arrays = read_npz(path, [i.name for i in inputs], what=what)
        missing = [i.name for i in inputs if i.name not in arrays]
        if missing:
            keys = _npz_names(path)
            raise UsageError(Diagnostic.error(
                f"{what} file has no array for model input '{missing[0]}' "
                f"(it has: {', '.join(sorted(keys)) or 'nothing'})", Location(path=path)))
        for spec in inputs:
            parts[spec.name].append(_conform(arrays[spec.name], spec, path))
    samples = {name: np.concatenate(arrays, axis=0) for name, arrays in parts.items()}
    if inputs and not any(len(a) for a in samples.values()):
        raise UsageError(Diagnostic.error(f"{what} holds no samples (its arrays are empty)",
                                          Location(path=pattern)))
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
        read_npz(path, [], what="labels")  # an .npz at all: or one line saying what it is
        keys = _npz_names(path)
        key = "labels" if "labels" in keys else (keys[0] if len(keys) == 1 else None)
        if key is None:
            raise UsageError(Diagnostic.error(
                "labels file needs an array named 'labels'", Location(path=path)))
        array = read_npz(path, [key], what="labels")[key]
        if array.ndim != 1 or array.dtype.kind not in "iu":
            raise UsageError(Diagnostic.error(
                f"labels must be integer class indices of rank 1 (one per sample); array "
                f"'{key}' is {array.dtype} of shape {list(array.shape)}"
                + (" (one-hot? store argmax(axis=1))" if array.ndim == 2 else ""),
                Location(path=path)))
        parts.append(array.astype(np.int64))
    return np.concatenate(parts)


def check_labels(labels: np.ndarray, samples: int, classes: int | None, pattern: str) -> None:
    """Labels fit the data and the model: one per sample, each a class the model's first
    output can name (0 <= label < classes). A `UsageError` (exit 2) otherwise: labels
    that are not labels would make accuracy pass trivially."""
    where = Location(path=pattern)
    if len(labels) != samples:
        raise UsageError(Diagnostic.error(
            f"labels hold {len(labels)} entries, but the data holds {samples} samples; "
            "give one label per sample", where))
    if classes is not None and len(labels):
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= classes:
            bad = lo if lo < 0 else hi
            raise UsageError(Diagnostic.error(
                f"label {bad} is not a class of this model: its first output has {classes} "
                f"classes (labels 0 to {classes - 1})", where))


def _npz_names(path: str) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return [m.filename[:-4] for m in archive.infolist() if m.filename.endswith(".npy")]
    except _READ_ERRORS:
        return []


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
