"""Sample data for accuracy checks, calibration and `edgec run`: `.npz` files keyed by the
model's input names; a directory or glob is their concatenation. Without data, inputs are
drawn from the model's input types (seeded), and callers say so.

Two layouts, decided per file from the shapes (or set by the spec's ``layout``):
batch-leading (each array has its input's rank; the leading axis is the model's batch
axis, and rows are fed a batch at a time) and per-sample feeds (each array has its
input's rank + 1, ``[S, *input shape]``; each entry is one complete feed, fed on its
own — the only layout for scalar inputs and for inputs whose batch is not on axis 0,
such as an RNN state ``[2, N, 128]``). In both, axis 0 of every array counts samples, so
slicing samples is the same in both; feeding them is not (`feeds`).
"""

from __future__ import annotations

import glob
import os
import stat
from dataclasses import dataclass

import numpy as np
import onnx

from edgec.diagnostics import Diagnostic, Location, UsageError


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    shape: tuple  # ints, or str/None for symbolic and unknown dims
    ranked: bool = True  # False: the model declares no shape at all (any rank)


BATCH, PER_SAMPLE = "batch", "per-sample"


@dataclass(frozen=True)
class SampleData:
    """Arrays for every model input (axis 0 counts samples in either layout), the
    layout they are in, and how that was decided (for the report)."""

    arrays: dict
    layout: str  # BATCH or PER_SAMPLE
    how: str

    @property
    def count(self) -> int:
        return len(next(iter(self.arrays.values()))) if self.arrays else 0

    def describe(self) -> str:
        return ("per-sample feeds ([S, *input shape], one complete feed each)"
                if self.layout == PER_SAMPLE else "batch-leading arrays (axis 0 = batch)")


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
        out.append(InputSpec(vi.name, dtype, dims, ranked=tt.HasField("shape")))
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
def read_npz(path: str, names: list[str] | None = None, *, what: str = "data",
             max_bytes: int = MAX_ARRAY_BYTES) -> dict[str, np.ndarray]:
    """The arrays ``names`` (all when None) of the `.npz` file ``path``, read safely by the
    device runtime's reader (`edgec_runtime.npz.NpzFile`, the one `edgec run` uses).

    Every header is checked before anything is allocated: numeric or bool dtypes only
    (no objects, no pickles, no structured records), a declared size that agrees with
    the zip member's size and stays under ``max_bytes``, and arrays not asked for are
    never decompressed. Anything wrong (empty, truncated or corrupt zip, a ``.npy``, a
    header that lies) is one `UsageError` (exit 2) naming the file and what is wrong.
    """
    from edgec_runtime.errors import RuntimeFailure
    from edgec_runtime.npz import NpzFile

    try:
        with NpzFile(path, what=what) as npz:
            present = list(npz.files)
            wanted = present if names is None else [n for n in names if n in present]
            total = 0
            for name in wanted:
                total += npz.header(name).nbytes
                if total > max_bytes:
                    raise UsageError(Diagnostic.error(
                        f"{what} file: its arrays take over the limit of {max_bytes >> 20} MiB "
                        "for data", Location(path=path)))
            # Not np.ascontiguousarray: it makes a 0-d array (a scalar) 1-d.
            return {name: np.asarray(npz.read(name, max_bytes), order="C") for name in wanted}
    except RuntimeFailure as e:
        message = e.message
        if message.startswith(f"{what} file is not an .npz"):
            kind = " (it looks like an ONNX model)" if path.endswith(".onnx") else ""
            message = (f"{what} file is not an .npz archive{kind}: give arrays keyed by the "
                       "model's input names, saved with numpy.savez")
        elif not message.startswith(f"{what} file"):
            message = f"{what} file refused: {message}"
        raise UsageError(Diagnostic.error(message, Location(path=path))) from None
    except MemoryError:
        raise UsageError(Diagnostic.error(f"{what} file holds more than this machine's memory "
                                          "can take", Location(path=path))) from None


def load_samples(pattern: str, inputs: list[InputSpec], *, what: str = "data",
                 layout: str = "auto") -> dict[str, np.ndarray]:
    """Arrays for every model input, concatenated over the files ``pattern`` names
    (axis 0 = sample; per-sample feeds keep their extra axis: see `load_data`)."""
    return load_data(pattern, inputs, what=what, layout=layout).arrays


def load_data(pattern: str, inputs: list[InputSpec], *, what: str = "data",
              layout: str = "auto") -> SampleData:
    """The arrays of the files ``pattern`` names, each file's layout read from its shapes
    (``layout`` "auto") or the one given ("batch", "per-sample"); every array checked
    against its input (names, rank, fixed dims, dtype, sample counts). Anything wrong is
    one `UsageError` (exit 2) naming the file, the input and the shape expected and got."""
    files = data_files(pattern)
    if not files:
        raise UsageError(Diagnostic.error(f"{what} '{pattern}' names no .npz file",
                                          Location(path=pattern)))
    parts: dict[str, list[np.ndarray]] = {i.name: [] for i in inputs}
    chosen: tuple[str, str, str] | None = None  # layout, how, first file
    for path in files:
        arrays = read_npz(path, [i.name for i in inputs], what=what)
        missing = [i.name for i in inputs if i.name not in arrays]
        if missing:
            keys = _npz_names(path)
            raise UsageError(Diagnostic.error(
                f"{what} file has no array for model input '{missing[0]}' "
                f"(it has: {', '.join(sorted(keys)) or 'nothing'})", Location(path=path)))
        file_layout, how = _file_layout(arrays, inputs, layout, path, what)
        if chosen is None:
            chosen = (file_layout, how, path)
        elif file_layout != chosen[0]:
            raise UsageError(Diagnostic.error(
                f"{what} file holds {_layout_words(file_layout)}, but "
                f"{os.path.basename(chosen[2])} holds {_layout_words(chosen[0])}; the files "
                "of one data set use one layout", Location(path=path)))
        _check_counts(arrays, inputs, file_layout, path, what)
        for spec in inputs:
            array = _conform(arrays[spec.name], spec, path, file_layout)
            if parts[spec.name] and parts[spec.name][0].shape[1:] != array.shape[1:]:
                first = parts[spec.name][0]
                raise UsageError(Diagnostic.error(
                    f"array '{spec.name}' has shape {list(array.shape)}, but the earlier "
                    f"files' have {list(first.shape)}: to be joined, the arrays of one input "
                    "agree on every axis but the first", Location(path=path)))
            parts[spec.name].append(array)
    samples = {name: np.concatenate(arrays, axis=0) for name, arrays in parts.items()}
    if inputs and not any(len(a) for a in samples.values() if np.ndim(a)):
        raise UsageError(Diagnostic.error(f"{what} holds no samples (its arrays are empty)",
                                          Location(path=pattern)))
    counts = {len(a) for a in samples.values()}
    if len(counts) > 1:
        raise UsageError(Diagnostic.error(
            f"{what} arrays have different sample counts: "
            + ", ".join(f"{k}: {len(v)}" for k, v in samples.items()), Location(path=pattern)))
    layout_read, how, _ = chosen if chosen else (BATCH, "no inputs", "")
    return SampleData(samples, layout_read, how)


def _layout_words(layout: str) -> str:
    return "per-sample feeds" if layout == PER_SAMPLE else "batch-leading arrays"


def _shape_text(spec: InputSpec) -> str:
    if not spec.ranked:
        return "of any shape"
    return "[" + ", ".join("?" if d is None else str(d) for d in spec.shape) + "]"


def _file_layout(arrays: dict[str, np.ndarray], inputs: list[InputSpec], layout: str,
                 path: str, what: str) -> tuple[str, str]:
    """The layout of one file's arrays, and how it was decided, from their ranks: equal
    to the input's is batch-leading, one more is per-sample. Inputs of unknown rank do
    not tell; when none tells, the spec's layout decides, else batch-leading."""
    where = Location(path=path)
    votes: dict[str, str] = {}
    for spec in inputs:
        if not spec.ranked:
            continue
        array, rank = arrays[spec.name], len(spec.shape)
        if array.ndim == rank + 1:
            votes[spec.name] = PER_SAMPLE
        elif array.ndim == rank and rank > 0:
            votes[spec.name] = BATCH
        elif array.ndim == rank:  # a 0-d array for a scalar input
            raise UsageError(Diagnostic.error(
                f"array '{spec.name}' holds one value (shape []), but the model's input "
                f"'{spec.name}' is a scalar: give one value per sample, shape [S] "
                "(per-sample feeds, with every other input as [S, *input shape])", where))
        else:
            ways = (f"[S, {', '.join(_shape_text(spec)[1:-1].split(', '))}] (per-sample)"
                    if rank else "[S] (per-sample)")
            batch = f"rank {rank} (batch-leading) or " if rank else ""
            raise UsageError(Diagnostic.error(
                f"array '{spec.name}' has shape {list(array.shape)}; the model's input "
                f"'{spec.name}' is {_shape_text(spec)}, so give {batch}{ways}", where))
    if layout in (BATCH, PER_SAMPLE):
        wrong = [name for name, vote in votes.items() if vote != layout]
        if wrong:
            spec = next(i for i in inputs if i.name == wrong[0])
            want = len(spec.shape) + (1 if layout == PER_SAMPLE else 0)
            raise UsageError(Diagnostic.error(
                f"the spec's layout is {layout}, but array '{spec.name}' has shape "
                f"{list(arrays[spec.name].shape)}: for the input {_shape_text(spec)} that "
                f"layout takes rank {want}", where))
        if not votes:
            return layout, f"the spec's 'layout {layout}' (the shapes do not tell)"
        return layout, f"the spec's 'layout {layout}', as the shapes say"
    kinds = set(votes.values())
    if len(kinds) > 1:
        batch = next(n for n, v in votes.items() if v == BATCH)
        sample = next(n for n, v in votes.items() if v == PER_SAMPLE)
        show = {i.name: i for i in inputs}
        raise UsageError(Diagnostic.error(
            f"arrays in different layouts: '{batch}' {list(arrays[batch].shape)} is "
            f"batch-leading (the rank of input {_shape_text(show[batch])}), '{sample}' "
            f"{list(arrays[sample].shape)} per-sample (one more); give every input in one "
            "layout (per-sample: [S, *input shape] for each)", where))
    if not kinds:
        return BATCH, ("batch-leading: the shapes do not tell (no input declares its rank); "
                       "write 'layout per-sample' in the spec's accuracy block if each entry "
                       "is one complete feed")
    found = kinds.pop()
    return found, f"read from the shapes ({_layout_words(found)})"


def _check_counts(arrays: dict[str, np.ndarray], inputs: list[InputSpec], layout: str,
                  path: str, what: str) -> None:
    counts = {spec.name: arrays[spec.name].shape[0] for spec in inputs
              if np.ndim(arrays[spec.name])}
    if len(set(counts.values())) > 1:
        unit = "feeds" if layout == PER_SAMPLE else "rows"
        raise UsageError(Diagnostic.error(
            f"{what} arrays hold different numbers of {unit} (axis 0): "
            + ", ".join(f"'{k}' {v}" for k, v in counts.items()), Location(path=path)))


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
    from edgec_runtime.errors import RuntimeFailure
    from edgec_runtime.npz import NpzFile

    try:
        with NpzFile(path) as npz:
            return list(npz.files)
    except RuntimeFailure:
        return []


def _conform(array: np.ndarray, spec: InputSpec, path: str, layout: str = BATCH) -> np.ndarray:
    """``array`` checked against its input (fixed dims) and cast to its dtype."""
    if spec.ranked:
        per_feed = array.shape[1:] if layout == PER_SAMPLE else array.shape
        first = 0 if layout == PER_SAMPLE else 1  # batch-leading: axis 0 is the rows
        offset = 1 if layout == PER_SAMPLE else 0
        for axis in range(first, len(spec.shape)):
            have, want = per_feed[axis], spec.shape[axis]
            if isinstance(want, int) and want > 0 and have != want:
                expected = (f"[S, {_shape_text(spec)[1:]}" if layout == PER_SAMPLE
                            else f"[rows, {', '.join(_shape_text(spec)[1:-1].split(', ')[1:])}]")
                raise UsageError(Diagnostic.error(
                    f"array '{spec.name}' has shape {list(array.shape)}; as "
                    f"{_layout_words(layout)} for the input {_shape_text(spec)} it must be "
                    f"{expected} ({want} along axis {axis + offset}, not {have})",
                    Location(path=path)))
    elif array.ndim == 0:
        raise UsageError(Diagnostic.error(
            f"array '{spec.name}' holds one value (shape []); give one entry per sample along "
            "axis 0", Location(path=path)))
    if array.dtype != spec.dtype:
        if np.can_cast(array.dtype, spec.dtype, casting="same_kind"):
            array = array.astype(spec.dtype)
        else:
            raise UsageError(Diagnostic.error(
                f"array '{spec.name}' is {array.dtype}; the model wants {spec.dtype}",
                Location(path=path)))
    return array



def _random_array(rng: np.random.Generator, spec: InputSpec, shape: tuple) -> np.ndarray:
    """Synthetic values for one input: standard normal floats, 0/1 booleans, integers 0-9."""
    if np.issubdtype(spec.dtype, np.floating):
        return rng.standard_normal(shape).astype(spec.dtype)
    if spec.dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if np.issubdtype(spec.dtype, np.integer):
        return rng.integers(0, 10, shape).astype(spec.dtype)
    raise UsageError(f"cannot make synthetic data for input '{spec.name}' of type "
                     f"{spec.dtype}; give data in the spec or with --data")

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
        out[spec.name] = _random_array(rng, spec, shape)
    return out


def needs_per_sample(inputs: list[InputSpec]) -> bool:
    """Whether the model's inputs cannot share one batch axis 0, so that only per-sample
    feeds can hold its samples: a scalar input, an input of unknown rank, or inputs whose
    leading dims differ (a state [2, N, 128] beside an input [N, 512])."""
    leading = set()
    for spec in inputs:
        if not spec.ranked or not spec.shape:
            return True
        first = spec.shape[0]
        # Symbolic leading dims count as one batch, whatever the exporter named them
        # (tf2onnx writes unk__1, unk__2 for one batch).
        leading.add(first if isinstance(first, int) and first > 0 else "symbolic")
    return len(leading) > 1


def synthetic_data(inputs: list[InputSpec], count: int, seed: int, batch: int = 1) -> SampleData:
    """``count`` samples drawn from the input types, batch-leading where the inputs share
    a batch axis 0, else ``count`` per-sample feeds: each a whole feed, a symbolic dim that
    leads some input set to ``batch`` (in every input that names it), others to 1."""
    if not needs_per_sample(inputs):
        return SampleData(synthetic_samples(inputs, count, seed, batch), BATCH,
                          "drawn batch-leading (the inputs share a batch axis 0)")
    rng = np.random.default_rng(seed)
    leading = {spec.shape[0] for spec in inputs if spec.shape and isinstance(spec.shape[0], str)}
    out = {}
    for spec in inputs:
        dims = [d if isinstance(d, int) and d > 0 else
                (batch if (d in leading or (d is None and axis == 0)) else 1)
                for axis, d in enumerate(spec.shape)]
        shape = (count, *dims)
        out[spec.name] = _random_array(rng, spec, shape)
    return SampleData(out, PER_SAMPLE, "drawn as per-sample feeds (the inputs share no batch "
                                       "axis 0: a scalar, a state or an input of unknown rank)")


def feeds(samples: dict[str, np.ndarray], names: list[str], layout: str, step: int,
          whole_batches: bool = False):
    """The runs that feed every sample: one complete feed per entry for per-sample data;
    for batch-leading data, ``step`` rows at a time (``whole_batches``: a model with a
    fixed batch takes no remainder)."""
    total = len(next(iter(samples.values()))) if samples else 0
    if layout == PER_SAMPLE:
        for index in range(total):
            yield {n: samples[n][index, ...] for n in names}  # [i, ...]: a scalar stays a 0-d array
        return
    end = total - (total % step) if whole_batches else total
    for start in range(0, end, step):
        yield {n: samples[n][start:start + step] for n in names}


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
