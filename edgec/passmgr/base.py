"""What a pass is: a frozen dataclass with a kebab-case ``name`` whose fields are its options.

    @dataclass(frozen=True)
    class Fuse(Pass):
        '''Conv(x, W) ∘ BatchNorm -> Conv(x, W')'''
        name: ClassVar[str] = "fuse"
        patterns: tuple[str, ...] = ("conv-bn",)

        def run(self, model, ctx) -> PassResult: ...

On the command line and in spec files that pass is ``fuse{patterns=conv-bn}``; a
field ``max_iterations`` is the option ``max-iterations``. Option types are bool,
int, float, str and tuple[str | int | float, ...]. A field's help text is its
``metadata["help"]``.
"""

from __future__ import annotations

import dataclasses
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


class PassError(Exception):
    """A pass could not do its job on this model; the message says why (exit 3)."""


@dataclass(frozen=True)
class Pass:
    """Base of every pass. Subclasses are frozen dataclasses and set ``name``."""

    name: ClassVar[str] = ""

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
