"""What a pass is: a frozen dataclass with a kebab-case ``name`` whose fields are its options.

    @dataclass(frozen=True)
    class Fuse(Pass):
        '''Conv(x, W) ∘ BatchNorm -> Conv(x, W')'''
        name: ClassVar[str] = "fuse"
        patterns: tuple[str, ...] = ("conv-bn",)

        def run(self, model, ctx) -> PassResult: ...

On the command line and in spec files that pass is ``fuse{patterns=conv-bn}``; a
field ``max_iterations`` is the option ``max-iterations``. Option types are bool,
int, float, str, tuple[str | int | float, ...] and ``Literal[...]`` (one of the listed
values). A field's help text is its ``metadata["help"]``.

Options are checked when the pass is constructed, so a bad value is a usage error
pointing at the pipeline text (exit 2) before any pass runs, never a model error
after some have: `Pass.__post_init__` checks ``Literal`` fields, and a pass with
further rules (a range, a list of known names) adds its own ``__post_init__`` that
calls ``super().__post_init__()`` and raises `OptionError`:

        def __post_init__(self) -> None:
            super().__post_init__()
            if not 0.0 <= self.sparsity < 1.0:
                raise OptionError("sparsity", f"must be in [0, 1), got {self.sparsity}")
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from edgec.diagnostics import DiagnosticSink
from edgec.ir.core import Model

if TYPE_CHECKING:
    import numpy as np

    from edgec.dsl.spec import Spec, Target
    from edgec.progress import Progress


@dataclass
class PassResult:
    """What a pass did: whether it changed the model, counters for ``--stats``, and
    the model itself when the pass built a new one instead of rewriting in place."""

    modified: bool
    stats: dict[str, int | float] = field(default_factory=dict)
    model: Model | None = None


@dataclass
class PassContext:
    """What a pass may use besides the model.

    ``spec``, ``target`` and ``calibration_data`` are filled by ``edgec compile``;
    under ``edgec opt`` they are None and passes that need them must say so with an
    error diagnostic rather than guess.
    """

    diagnostics: DiagnosticSink = field(default_factory=DiagnosticSink)
    spec: Spec | None = None
    target: Target | None = None
    # Input name -> samples, the leading axis one sample each.
    calibration_data: Mapping[str, np.ndarray] | None = None
    seed: int = 0
    # For long passes (calibration, sensitivity analysis); None: report nothing.
    progress: Progress | None = None


@dataclass(frozen=True)
class PassOption:
    name: str          # kebab-case, as written in pipeline text
    field_name: str    # the dataclass field
    type: Any
    default: Any
    help: str


class OptionError(ValueError):
    """A pass option's value is invalid; ``option`` is its kebab-case name.

    Raised from a pass's ``__post_init__``; the registry reports it at the option in
    the pipeline text (exit 2)."""

    def __init__(self, option: str, message: str):
        super().__init__(f"option '{option}': {message}")
        self.option = option
        self.message = message


def literal_values(annotation: Any) -> tuple | None:
    """The values ``Literal[...]`` (or ``Literal[...] | None``) allows, None included
    where it is; None when the annotation is not a Literal."""
    if annotation is None:
        return None
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        parts = typing.get_args(annotation)
        literals = [literal_values(a) for a in parts if a is not type(None)]
        if len(literals) == 1 and literals[0] is not None:
            return (*literals[0], *((None,) if type(None) in parts else ()))
    return None


class PassError(Exception):
    """A pass could not do its job on this model; the message says why (exit 3)."""


class PassUsageError(PassError):
    """A pass was invoked without what it needs (calibration data, say): the invocation
    is wrong, not the model (exit 2)."""


@dataclass(frozen=True)
class Pass:
    """Base of every pass. Subclasses are frozen dataclasses and set ``name``."""

    name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            allowed = literal_values(hints.get(f.name))
            value = getattr(self, f.name)
            if allowed is not None and value not in allowed:
                raise OptionError(f.name.replace("_", "-"),
                                  f"expected one of {', '.join(map(str, allowed))}, got {value!r}")

    def run(self, model: Model, ctx: PassContext) -> PassResult:  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def summary(cls) -> str:
        """The first line of the class docstring."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0].strip() if doc else ""

    @classmethod
    def options(cls) -> list[PassOption]:
        hints = typing.get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            out.append(PassOption(f.name.replace("_", "-"), f.name, hints[f.name], default,
                                  f.metadata.get("help", "")))
        return out

    def option_values(self) -> dict[str, Any]:
        """Option name (kebab-case) -> value, for every option."""
        return {o.name: getattr(self, o.field_name) for o in self.options()}
