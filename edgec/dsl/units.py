"""Units of the spec language and the quantities that carry them.

A quantity keeps the number and the unit the user wrote (so a resolved spec prints
back as written) and converts on demand; the unit table below is the single source of
which units exist and what they measure.
"""

from __future__ import annotations

import difflib
import enum
import math
from dataclasses import dataclass


class Dimension(str, enum.Enum):
    TIME = "time"
    SIZE = "size"
    RATIO = "ratio"  # %: a fraction written in hundredths
    DECIBEL = "decibel"
    BANDWIDTH = "bandwidth"
    COMPUTE = "compute"  # operations per second, FLOPS and OPS alike
    FREQUENCY = "frequency"
    NUMBER = "number"  # no unit written

    @property
    def description(self) -> str:
        examples = ", ".join(u for u, (d, _) in UNITS.items() if d is self)
        if self is Dimension.NUMBER:
            return "a plain number"
        return f"a {self.value} ({examples})"


# unit -> (dimension, factor to the dimension's base unit: s, B, fraction, dB, B/s,
# op/s, Hz). Decimal (KB, MB, GB) and binary (KiB, MiB, GiB) sizes are both here
# because vendors quote memory in one and artifacts are measured in the other.
UNITS: dict[str, tuple[Dimension, float]] = {
    "ns": (Dimension.TIME, 1e-9),
    "us": (Dimension.TIME, 1e-6),
    "ms": (Dimension.TIME, 1e-3),
    "s": (Dimension.TIME, 1.0),
    "min": (Dimension.TIME, 60.0),
    "h": (Dimension.TIME, 3600.0),
    "B": (Dimension.SIZE, 1.0),
    "KiB": (Dimension.SIZE, 1024.0),
    "MiB": (Dimension.SIZE, 1024.0 ** 2),
    "GiB": (Dimension.SIZE, 1024.0 ** 3),
    "KB": (Dimension.SIZE, 1e3),
    "MB": (Dimension.SIZE, 1e6),
    "GB": (Dimension.SIZE, 1e9),
    "%": (Dimension.RATIO, 1e-2),
    "dB": (Dimension.DECIBEL, 1.0),
    "MB/s": (Dimension.BANDWIDTH, 1e6),
    "GB/s": (Dimension.BANDWIDTH, 1e9),
    "TB/s": (Dimension.BANDWIDTH, 1e12),
    "GFLOPS": (Dimension.COMPUTE, 1e9),
    "TFLOPS": (Dimension.COMPUTE, 1e12),
    "GOPS": (Dimension.COMPUTE, 1e9),
    "TOPS": (Dimension.COMPUTE, 1e12),
    "MHz": (Dimension.FREQUENCY, 1e6),
    "GHz": (Dimension.FREQUENCY, 1e9),
}


class UnitError(ValueError):
    """A unit that does not exist, or one of the wrong dimension."""


def suggest_unit(text: str, dimensions=(), extra_words=()) -> str | None:
    """The known unit closest to a misspelled one, ignoring case (``mib`` -> ``MiB``);
    units of the expected ``dimensions`` (and ``extra_words``) are tried first."""
    fitting = [u for u, (d, _) in UNITS.items() if d in dimensions] + list(extra_words)
    for candidates in (fitting, list(UNITS)):
        by_lower = {u.lower(): u for u in candidates}
        if text.lower() in by_lower:
            return by_lower[text.lower()]
        close = difflib.get_close_matches(text.lower(), list(by_lower), n=1, cutoff=0.5)
        if close:
            return by_lower[close[0]]
    return None


def format_number(value: float) -> str:
    """The shortest text that reads back as the same float, without a useless ``.0``."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


@dataclass(frozen=True)
class Quantity:
    """A number with the unit it was written in; ``unit == ""`` means a plain number."""

    value: float
    unit: str = ""

    def __post_init__(self) -> None:
        if self.unit and self.unit not in UNITS:
            raise UnitError(f"unknown unit '{self.unit}'")
        if not math.isfinite(self.value):
            raise ValueError(f"quantity is not finite: {self.value}")

    @property
    def dimension(self) -> Dimension:
        return UNITS[self.unit][0] if self.unit else Dimension.NUMBER

    @property
    def base(self) -> float:
        """The value in the dimension's base unit (seconds, bytes, a fraction, ...)."""
        return self.value * UNITS[self.unit][1] if self.unit else self.value

    def to(self, unit: str) -> float:
        dimension, factor = UNITS[unit]
        if dimension is not self.dimension:
            raise UnitError(f"cannot convert {self} ({self.dimension.value}) to {unit} "
                            f"({dimension.value})")
        return self.base / factor

    def __str__(self) -> str:
        number = format_number(self.value)
        if not self.unit:
            return number
        return f"{number} {self.unit}"
