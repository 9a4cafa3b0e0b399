"""Reading user `.npz` files safely, and writing outputs atomically.

`read_npz` opens the zip, reads only the members it is asked for, and checks each
member's `.npy` header (dtype, shape, byte order) against the zip's own record of the
member's size before reading a byte of data: an object array, a header that claims
more elements than the member holds, a truncated or corrupt file, a `.npy` passed as an
`.npz` — each is one `InputError` naming the file (exit 2), never a traceback and never
an allocation the file does not justify. Unused members (a 1 GiB array beside the
inputs) are never decompressed.
"""

from __future__ import annotations

import ast
import math
import os
import stat
import struct
import tempfile
import zipfile
import zlib
from typing import Iterable, Mapping

import numpy as np

from edgec_runtime.errors import InputError

NUMERIC_KINDS = "biuf"
_HEADER_LIMIT = 1 << 16
# Deflate expands at most ~1032:1; a member claiming more than this is lying.
_DEFLATE_RATIO = 1100
# Errors zipfile, zlib and struct raise on a damaged archive.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, struct.error,
               NotImplementedError, RuntimeError, KeyError, OverflowError, UnicodeError,
               IndexError, TypeError)


def max_input_bytes() -> int:
    """How many bytes of arrays one file may hold: $EDGEC_MAX_INPUT_BYTES, else half this
    machine's memory, at most 8 GiB."""
    text = os.environ.get("EDGEC_MAX_INPUT_BYTES")
    if text and text.isdigit():
        return int(text)
    try:
        return min(8 << 30, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2)
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class MemberHeader:
    """A member's `.npy` header: what it claims, checked against the zip's record."""

    def __init__(self, name: str, dtype: np.dtype, shape: tuple[int, ...], fortran: bool,
                 offset: int):
        self.name, self.dtype, self.shape, self.fortran, self.offset = \
            name, dtype, shape, fortran, offset

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _parse_header(raw: bytes, name: str, path: str) -> MemberHeader:
    def bad(why: str) -> InputError:
        return InputError(f"array '{name}' is not a valid .npy member: {why}", path)

    if len(raw) < 10 or raw[:6] != b"\x93NUMPY":
        raise bad("no .npy magic")
    major = raw[6]
    if major == 1:
        hlen = struct.unpack("<H", raw[8:10])[0]
        start = 10
    elif major in (2, 3):
        if len(raw) < 12:
            raise bad("truncated header")
        hlen = struct.unpack("<I", raw[8:12])[0]
        start = 12
    else:
        raise bad(f"unknown .npy format version {major}")
    if hlen > _HEADER_LIMIT - start or start + hlen > len(raw):
        raise bad("header is truncated or too long")
    try:
        text = raw[start:start + hlen].decode("latin1" if major < 3 else "utf-8")
        header = ast.literal_eval(text)
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError) as e:
        raise bad(f"unreadable header ({type(e).__name__})") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise bad("header lacks descr/fortran_order/shape")
    shape, fortran, descr = header["shape"], header["fortran_order"], header["descr"]
    if not isinstance(shape, tuple) or not all(type(d) is int for d in shape):
        raise bad(f"shape {shape!r} is not a tuple of integers")
    if any(d < 0 for d in shape) or len(shape) > 32:
        raise bad(f"shape {list(shape)} is not a valid shape")
    if not isinstance(fortran, bool):
        raise bad("fortran_order is not a boolean")
    if not isinstance(descr, str):
        raise InputError(f"array '{name}' has a structured or object dtype; inputs must be "
                         "numeric arrays (bool, int, uint, float)", path)
    try:
        dtype = np.dtype(descr)
    except (TypeError, ValueError, SyntaxError):
        raise bad(f"unknown dtype {descr!r}") from None
    if dtype.hasobject or dtype.kind not in NUMERIC_KINDS or dtype.fields or dtype.subdtype:
        raise InputError(f"array '{name}' is {dtype} ({_kind_name(dtype)}); inputs must be "
                         "numeric arrays (bool, int, uint, float)", path)
    return MemberHeader(name, dtype, shape, fortran, start + hlen)


def _kind_name(dtype: np.dtype) -> str:
    return {"O": "Python objects", "U": "strings", "S": "bytes", "V": "raw/structured records",
            "c": "complex numbers", "M": "datetimes", "m": "timedeltas"}.get(dtype.kind, dtype.kind)


class NpzFile:
    """An open `.npz`: member names, headers checked on demand, arrays read on demand."""

    def __init__(self, path: str, *, what: str = "inputs"):
        self.path = path
        self.what = what
        try:
            st = os.stat(path)
        except OSError as e:
            raise InputError(f"cannot read {what}: {e.strerror or e}", path) from None
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"{what} file is a folder; give an .npz file", path)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{what} file is not a regular file", path)
        if st.st_size == 0:
            raise InputError(f"{what} file is empty (an .npz is a zip of arrays keyed by the "
                             "model's input names)", path)
        try:
            with open(path, "rb") as f:
                head = f.read(8)
        except OSError as e:
            raise InputError(f"cannot read {what}: {e.strerror or e}", path) from None
        if head.startswith(b"\x93NUMPY"):
            raise InputError(f"{what} file is a single .npy array; give an .npz keyed by the "
                             "model's input names (numpy.savez(path, input=array))", path)
        if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            raise InputError(f"{what} file is not an .npz (not a zip archive)", path)
        self._size = st.st_size
        try:
            self._zip = zipfile.ZipFile(path)
            infos = self._zip.infolist()
        except _ZIP_ERRORS as e:
            raise InputError(f"{what} file is a damaged zip: {_why(e)}", path) from None
        self._infos: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            self._infos[key] = info
        self._headers: dict[str, MemberHeader] = {}

    @property
    def files(self) -> list[str]:
        return list(self._infos)

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> "NpzFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def header(self, name: str) -> MemberHeader:
        if name in self._headers:
            return self._headers[name]
        info = self._infos.get(name)
        if info is None:
            raise InputError(f"{self.what} file has no array '{name}' "
                             f"(it has: {', '.join(sorted(self._infos)) or 'nothing'})", self.path)
        if info.flag_bits & 0x1:
            raise InputError(f"array '{name}' is encrypted", self.path)
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise InputError(f"array '{name}' is compressed with zip method "
                             f"{info.compress_type}; numpy writes stored or deflated members",
                             self.path)
        # What the zip says of the member, checked against the archive itself: the
        # uncompressed size is what gets allocated, so it must be believable.
        if info.header_offset + info.compress_size > self._size or (
                info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size) \
                or info.file_size > info.compress_size * _DEFLATE_RATIO + 1024:
            raise InputError(f"array '{name}': the zip's sizes for it ({info.compress_size} "
                             f"bytes stored, {info.file_size} bytes claimed) do not fit the "
                             "file: it is truncated or its directory lies", self.path)
        try:
            with self._zip.open(info) as member:
                raw = member.read(_HEADER_LIMIT)
        except _ZIP_ERRORS as e:
            raise InputError(f"{self.what} file is damaged: array '{name}': {_why(e)}",
                             self.path) from None
        header = _parse_header(raw, name, self.path)
        declared = header.nbytes
        held = info.file_size - header.offset
        if declared != held:
            count = math.prod(header.shape)
            raise InputError(
                f"array '{name}' claims shape {list(header.shape)} {header.dtype} "
                f"({count} elements, {_human(declared)}) but its member holds "
                f"{_human(max(held, 0))}: the file is truncated or its header lies", self.path)
        self._headers[name] = header
        return header

    def read(self, name: str, limit: int | None = None) -> np.ndarray:
        header = self.header(name)
        limit = max_input_bytes() if limit is None else limit
        if header.nbytes > limit:
            raise InputError(f"array '{name}' is {_human(header.nbytes)}, over the "
                             f"{_human(limit)} this machine allows for one file "
                             "(EDGEC_MAX_INPUT_BYTES raises it)", self.path)
        buffer = bytearray(header.nbytes)
        try:
            with self._zip.open(self._infos[name]) as member:
                skip = member.read(header.offset)
                if len(skip) != header.offset:
                    raise EOFError("header vanished")
                view = memoryview(buffer)
                done = 0
                while done < header.nbytes:
                    n = member.readinto(view[done:]) if hasattr(member, "readinto") else 0
                    if not n:
                        break
                    done += n
                if done != header.nbytes:
                    raise EOFError(f"{done} of {header.nbytes} bytes")
                if member.read(1):
                    raise ValueError("trailing bytes after the array")
        except _ZIP_ERRORS as e:
            raise InputError(f"{self.what} file is damaged: array '{name}': {_why(e)}",
                             self.path) from None
        array = np.frombuffer(buffer, dtype=header.dtype)
        order = "F" if header.fortran else "C"
        array = array.reshape(header.shape, order=order)
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
        return array


def _why(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:200] or type(error).__name__


def _dims(shape) -> list:
    return list(shape) if shape is not None else []


def _fixed(dim) -> bool:
    return isinstance(dim, int) and not isinstance(dim, bool) and dim > 0


def read_npz(path: str, wanted: Mapping[str, tuple], *, what: str = "inputs",
             layouts: Iterable[str] = ("batch", "sample"), limit: int | None = None
             ) -> dict[str, np.ndarray]:
    """The arrays of ``path`` that ``wanted`` names, checked before they are read.

    ``wanted`` maps each model input name to ``(dtype, shape)`` (shape: a sequence of
    ints, with str/None for symbolic dims). An array may be batch-leading (rank equal to
    the input's, the leading axis the batch) or per-sample (rank + 1, ``[S, *shape]``),
    as ``layouts`` allows. Fixed dims must match, the dtype must cast to the input's
    without changing kind (float64 -> float32 is taken; float -> int is not). Returns
    arrays cast to the input dtypes; other members are never read.
    """
    layouts = tuple(layouts)
    limit = max_input_bytes() if limit is None else limit
    with NpzFile(path, what=what) as npz:
        headers = {}
        for name, (dtype, shape) in wanted.items():
            header = npz.header(name)
            check_header(header.name, header.dtype, header.shape, np.dtype(dtype),
                         _dims(shape), path, layouts)
            headers[name] = header
        total = sum(h.nbytes for h in headers.values())
        if total > limit:
            raise InputError(f"the arrays for the model's inputs take {_human(total)}, over "
                             f"the {_human(limit)} this machine allows for one file "
                             "(EDGEC_MAX_INPUT_BYTES raises it)", path)
        out = {}
        for name, (dtype, _shape) in wanted.items():
            array = npz.read(name, limit)
            if array.dtype != np.dtype(dtype):
                array = array.astype(dtype)
            out[name] = array
        return out


def castable(have: np.dtype, want: np.dtype) -> bool:
    """Whether an array of ``have`` is taken for an input of ``want``: the same dtype, or
    the same kind at another width (float64 data for a float32 input, int32 for int64).
    Across kinds (int data for a float input, floats for an int input) it is refused."""
    if have == want:
        return True
    kind = {"i": "int", "u": "int", "f": "float", "b": "bool"}
    return kind.get(have.kind) == kind.get(want.kind) and have.kind in "iuf"


def check_header(name: str, have_dtype: np.dtype, have_shape: tuple, want_dtype: np.dtype,
                 want_shape: list, path: str | None, layouts: tuple[str, ...]) -> str:
    """Which layout the array is in ("batch" or "sample"); raises InputError naming the
    first mismatch."""
    rank = len(want_shape)
    if not castable(have_dtype, want_dtype):
        raise InputError(f"array '{name}' is {have_dtype}; the model's input is {want_dtype}",
                         path)
    allowed = []
    if "batch" in layouts:
        allowed.append(rank)
    if "sample" in layouts:
        allowed.append(rank + 1)
    if len(have_shape) not in allowed:
        ways = " or ".join(
            (f"rank {rank} (batch-leading)" if r == rank else f"rank {r} ([samples, *input "
             "shape], one feed per sample)") for r in allowed)
        raise InputError(f"array '{name}' has shape {list(have_shape)} (rank {len(have_shape)});"
                         f" the model's input '{name}' is {_show_shape(want_shape)}, so give "
                         f"{ways}", path)
    layout = "batch" if len(have_shape) == rank else "sample"
    per_feed = have_shape[1:] if layout == "sample" else have_shape
    for axis, (have, want) in enumerate(zip(per_feed, want_shape)):
        if layout == "batch" and axis == 0:
            continue  # the batch axis: checked against the model's batch by the caller
        if _fixed(want) and have != want:
            where = f"axis {axis + (1 if layout == 'sample' else 0)}"
            expected = ("[S, " + _show_shape(want_shape)[1:] if layout == "sample"
                        else "[rows, " + _show_shape(want_shape)[1:].split(", ", 1)[-1])
            raise InputError(f"array '{name}' has shape {list(have_shape)}: {have} along {where}"
                             f"; the model's input is {_show_shape(want_shape)}, so "
                             f"{'per-sample feeds' if layout == 'sample' else 'batch-leading rows'}"
                             f" are {expected} ({want} along {where})", path)
    if layout == "batch" and rank and _fixed(want_shape[0]) and have_shape[0] % want_shape[0]:
        raise InputError(
            f"array '{name}' has {have_shape[0]} rows; the model's batch is fixed at "
            f"{want_shape[0]}, so give a multiple of {want_shape[0]} (or per-sample feeds, "
            f"shape [S, {', '.join(map(str, want_shape))}])", path)
    if layout == "batch" and rank and have_shape[0] == 0:
        raise InputError(f"array '{name}' holds no sample (shape {list(have_shape)})", path)
    if layout == "sample" and have_shape[0] == 0:
        raise InputError(f"array '{name}' holds no sample (shape {list(have_shape)})", path)
    return layout


def _show_shape(shape) -> str:
    return "[" + ", ".join(str(d) if d is not None else "?" for d in shape) + "]"


def write_npz(path: str, arrays: Mapping[str, np.ndarray], *, what: str = "outputs") -> None:
    """Write ``arrays`` to exactly ``path`` (no `.npz` appended), atomically: a temporary
    file beside it, fsynced, then renamed over it. A folder is refused; on any failure
    (disk full, no such folder, /proc) the old file is untouched and nothing is left."""
    if path.endswith(os.sep) or os.path.isdir(path):
        raise InputError(f"the {what} path is a folder; give a file name (OUT.npz)", path)
    if os.path.lexists(path) and not os.path.isfile(path):
        raise InputError(f"the {what} path exists and is not a regular file; refusing to "
                         "replace it", path)
    if os.path.islink(path):
        path = os.path.realpath(path)  # replace the file the link names, keep the link
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                   dir=directory)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise InputError(f"cannot write {what}: {e.strerror or e}", path) from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
