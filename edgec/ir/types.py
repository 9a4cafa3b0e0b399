"""Types of IR values: element types, (symbolic) shapes and the ONNX type constructors.

Element types reuse ONNX's `TensorProto.DataType` numbering so import and export are
a lookup, and have short names (`f32`, `i64`) used by the IR text format.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Union

import numpy as np
from onnx import TensorProto, helper


class DataType(enum.IntEnum):
    UNDEFINED = TensorProto.UNDEFINED
    FLOAT = TensorProto.FLOAT
    UINT8 = TensorProto.UINT8
    INT8 = TensorProto.INT8
    UINT16 = TensorProto.UINT16
    INT16 = TensorProto.INT16
    INT32 = TensorProto.INT32
    INT64 = TensorProto.INT64
    STRING = TensorProto.STRING
    BOOL = TensorProto.BOOL
    FLOAT16 = TensorProto.FLOAT16
    DOUBLE = TensorProto.DOUBLE
    UINT32 = TensorProto.UINT32
    UINT64 = TensorProto.UINT64
    COMPLEX64 = TensorProto.COMPLEX64
    COMPLEX128 = TensorProto.COMPLEX128
    BFLOAT16 = TensorProto.BFLOAT16
    FLOAT8E4M3FN = 17
    FLOAT8E4M3FNUZ = 18
    FLOAT8E5M2 = 19
    FLOAT8E5M2FNUZ = 20
    UINT4 = 21
    INT4 = 22
    FLOAT4E2M1 = 23
    FLOAT8E8M0 = 24
    UINT2 = 25
    INT2 = 26

    @property
    def short_name(self) -> str:
        return _SHORT_NAMES[self]

    @classmethod
    def from_short_name(cls, name: str) -> "DataType":
        return _FROM_SHORT_NAME[name]

    @classmethod
    def from_numpy(cls, dtype: np.dtype) -> "DataType":
        return cls(helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))

    def to_numpy(self) -> np.dtype:
        return helper.tensor_dtype_to_np_dtype(int(self))

    @property
    def itemsize_bits(self) -> int:
        if self in (DataType.UINT4, DataType.INT4, DataType.FLOAT4E2M1):
            return 4
        if self in (DataType.UINT2, DataType.INT2):
            return 2
        if self is DataType.STRING or self is DataType.UNDEFINED:
            return 0
        return self.to_numpy().itemsize * 8

    @property
    def is_floating(self) -> bool:
        return self in _FLOATING


_SHORT_NAMES = {
    DataType.UNDEFINED: "undef", DataType.FLOAT: "f32", DataType.UINT8: "u8",
    DataType.INT8: "i8", DataType.UINT16: "u16", DataType.INT16: "i16",
    DataType.INT32: "i32", DataType.INT64: "i64", DataType.STRING: "str",
    DataType.BOOL: "bool", DataType.FLOAT16: "f16", DataType.DOUBLE: "f64",
    DataType.UINT32: "u32", DataType.UINT64: "u64", DataType.COMPLEX64: "c64",
    DataType.COMPLEX128: "c128", DataType.BFLOAT16: "bf16",
    DataType.FLOAT8E4M3FN: "f8e4m3fn", DataType.FLOAT8E4M3FNUZ: "f8e4m3fnuz",
    DataType.FLOAT8E5M2: "f8e5m2", DataType.FLOAT8E5M2FNUZ: "f8e5m2fnuz",
    DataType.UINT4: "u4", DataType.INT4: "i4", DataType.FLOAT4E2M1: "f4e2m1",
    DataType.FLOAT8E8M0: "f8e8m0", DataType.UINT2: "u2", DataType.INT2: "i2",
}
_FROM_SHORT_NAME = {v: k for k, v in _SHORT_NAMES.items()}
_FLOATING = {
    DataType.FLOAT, DataType.FLOAT16, DataType.DOUBLE, DataType.BFLOAT16,
    DataType.FLOAT8E4M3FN, DataType.FLOAT8E4M3FNUZ, DataType.FLOAT8E5M2,
    DataType.FLOAT8E5M2FNUZ, DataType.FLOAT4E2M1, DataType.FLOAT8E8M0,
}

# A dimension is a known size, a symbolic name ("N"), or unknown (None).
Dim = Union[int, str, None]


@dataclass(frozen=True)
class Shape:
    """A tensor shape; ``dims`` of None means the rank itself is unknown.

    ``denotations`` keeps ONNX's optional per-dimension denotation strings so that
    import/export is lossless; it is empty when no dimension carries one.
    """

    dims: tuple[Dim, ...] | None
    denotations: tuple[str, ...] = ()

    @property
    def rank(self) -> int | None:
        return None if self.dims is None else len(self.dims)

    @property
    def is_static(self) -> bool:
        return self.dims is not None and all(isinstance(d, int) for d in self.dims)

    def numel(self) -> int | None:
        if not self.is_static:
            return None
        n = 1
        for d in self.dims:  # type: ignore[union-attr]
            n *= d  # type: ignore[operator]
        return n

    def __str__(self) -> str:
        if self.dims is None:
            return "[*]"
        return "[" + ",".join("?" if d is None else str(d) for d in self.dims) + "]"


@dataclass(frozen=True)
class TensorType:
    dtype: DataType
    shape: Shape | None = None  # None: ONNX TypeProto without a shape field

    def __str__(self) -> str:
        return f"{self.dtype.short_name}{self.shape if self.shape is not None else ''}"


@dataclass(frozen=True)
class SparseTensorType:
    dtype: DataType
    shape: Shape | None = None

    def __str__(self) -> str:
        return f"sparse<{self.dtype.short_name}{self.shape if self.shape is not None else ''}>"


@dataclass(frozen=True)
class SequenceType:
    elem: "Type | None"

    def __str__(self) -> str:
        return f"seq<{self.elem if self.elem is not None else '?'}>"


@dataclass(frozen=True)
class OptionalType:
    elem: "Type | None"

    def __str__(self) -> str:
        return f"opt<{self.elem if self.elem is not None else '?'}>"


@dataclass(frozen=True)
class MapType:
    key: DataType
    value: "Type | None"

    def __str__(self) -> str:
        return f"map<{self.key.short_name},{self.value if self.value is not None else '?'}>"


@dataclass(frozen=True)
class OpaqueType:
    domain: str
    name: str

    def __str__(self) -> str:
        return f"opaque<{self.domain},{self.name}>"


Type = Union[TensorType, SparseTensorType, SequenceType, OptionalType, MapType, OpaqueType]
