"""Default GPU schedules for the TVM backend's CUDA builds: TVM's own relax CUDA
pipeline, with its dlight step (`ApplyDefaultSchedule`) made per function tolerant of a
rule that raises.

TVM 0.27 schedules each fused PrimFunc with the first dlight GPU rule that applies
(Matmul, GEMV, Reduction, GeneralReduction, Fallback). A rule that *raises* on one
function fails the whole build. The known case: a squeeze-and-excitation block (MobileNetV3)
with a symbolic batch fuses its 1x1 excitation conv, the HardSigmoid and the broadcast multiply onto the
[N, C, H, W] feature map into one function; the Matmul rule takes the conv, then cannot
inline the broadcast epilogue (larger than the conv's [N, C, 1, 1] output) into its
cache-write stage and asserts ("There are some consumers of the cache-write stage that are
not properly inlined"). Here such a function goes to the next rule that applies, which
schedules it without that epilogue constraint (Fallback: each block its own thread
mapping); every schedule rule only reorders, splits, binds and inlines, so the numerics are
the function's. Functions on which no rule raises are scheduled exactly as TVM schedules
them, so a build with no fallback is TVM's default build.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

# TVM 0.27's rule list, in its order (tvm/relax/backend/cuda/pipeline.py, legalize_passes).
RULE_NAMES = ("Matmul", "GEMV", "Reduction", "GeneralReduction", "Fallback")


def default_rules() -> list[tuple[str, object]]:
    """(name, rule) for each dlight GPU rule TVM's CUDA pipeline applies, in its order."""
    from tvm.s_tir import dlight

    return [(name, getattr(dlight.gpu, name)()) for name in RULE_NAMES]


@dataclass(frozen=True)
class RuleFailure:
    """A rule that raised on one function, and the rule that scheduled it instead."""

    function: str
    rule: str
    error: str  # the exception's type and last line
    scheduled_by: str | None  # None: no later rule applied

    def as_dict(self) -> dict:
        return {"function": self.function, "rule": self.rule, "error": self.error,
                "scheduled_by": self.scheduled_by}


class ScheduleFailed(RuntimeError):
    """Every rule that applies to a function raised: the build cannot go on."""


@dataclass
class ScheduleRecord:
    """What the tolerant schedule pass did in one build."""

    failures: list[RuleFailure] = field(default_factory=list)

    def note(self) -> str | None:
        """The build's note, when some function was scheduled by a later rule than TVM's."""
        if not self.failures:
            return None
        by_cause: dict[tuple[str, str, str | None], list[str]] = {}
        for failure in self.failures:
            key = (failure.rule, failure.error, failure.scheduled_by)
            by_cause.setdefault(key, []).append(failure.function)
        parts = []
        for (rule, error, scheduled_by), functions in by_cause.items():
            shown = ", ".join(functions[:3]) + (f" and {len(functions) - 3} more"
                                                if len(functions) > 3 else "")
            parts.append(f"dlight's GPU {rule} rule raised on {len(functions)} fused "
                         f"function(s) ({shown}): {error}; scheduled by the {scheduled_by} "
                         "rule instead")
        return "; ".join(parts) + " (TVM's default CUDA pipeline fails the build on them)"


def _error_text(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    last = lines[-1].rstrip(".") if lines else ""
    last = last if len(last) <= 200 else last[:197] + "..."
    return f"{type(error).__name__}{': ' + last if last else ''}"


def schedule_function(name: str, func, target, rules, record: ScheduleRecord):
    """The first schedule of ``func`` a rule in ``rules`` gives, as TVM's
    ``_apply_rules`` picks it, except that a rule that raises is recorded and the next
    rule tried. None when no rule applies (TVM then leaves the function as it is)."""
    from tvm import s_tir

    raised: tuple[str, str] | None = None
    for rule_name, rule in rules:
        try:
            space = rule.apply(func, target, False)
        except Exception as error:  # a dlight rule's own assertion or TVM error
            if raised is None:
                raised = (rule_name, _error_text(error))
            continue
        if space is None:
            continue
        if raised is not None:
            record.failures.append(RuleFailure(name, raised[0], raised[1], rule_name))
        if isinstance(space, s_tir.Schedule):
            space = [space]
        return space
    if raised is not None:
        record.failures.append(RuleFailure(name, raised[0], raised[1], None))
        raise ScheduleFailed(f"no dlight GPU rule schedules the fused function '{name}': "
                             f"the {raised[0]} rule raised {raised[1]} and no later rule "
                             "applies")
    return None


def tolerant_default_schedule(record: ScheduleRecord, rules_factory: Callable | None = None):
    """A module pass doing what dlight's ``ApplyDefaultSchedule`` does with TVM's CUDA
    rules, except that a rule raising on a function hands that function to the next rule
    (recorded in ``record``)."""
    import tvm
    from tvm import tirx
    from tvm.target import Target

    rules = (rules_factory or default_rules)()

    @tvm.transform.module_pass(opt_level=0, name="ApplyDefaultScheduleTolerant")
    def apply(mod, _ctx):
        updated = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc):
                continue
            if "tirx.is_scheduled" in func.attrs and func.attrs["tirx.is_scheduled"] == 1:
                continue  # tuned by MetaSchedule, or scheduled before
            target = func.attrs.get("target") or Target.current(allow_none=False)
            space = schedule_function(gvar.name_hint, func, target, rules, record)
            if space is not None:
                assert len(space) == 1  # untunable application: one schedule
                updated[gvar] = space[0].mod["main"].with_attr("tirx.is_scheduled", True)
        for gvar, func in updated.items():
            mod[gvar] = func
        return mod

    return apply


def cuda_pipeline(target, record: ScheduleRecord):
    """TVM's default relax CUDA pipeline (`tvm.relax.backend.cuda.get_default_pipeline`),
    pass for pass, with its ``ApplyDefaultSchedule`` replaced by
    `tolerant_default_schedule`."""
    import tvm
    from tvm.relax.backend.cuda import pipeline as cuda

    legalize = list(cuda.legalize_passes(target))
    names = [p.info.name for p in legalize]
    if "ApplyDefaultSchedule" not in names:
        raise RuntimeError("TVM's CUDA legalize passes have no ApplyDefaultSchedule "
                           f"({', '.join(names)}): this TVM is not the 0.27 edgec knows")
    legalize[names.index("ApplyDefaultSchedule")] = tolerant_default_schedule(record)
    passes = (cuda.library_dispatch_passes(target) + legalize
              + cuda.dataflow_lower_passes(target) + cuda.finalize_passes(target))

    @tvm.transform.module_pass(opt_level=0, name="EdgecCUDAPipeline")
    def pipeline(mod, _ctx):
        with target:
            return tvm.transform.Sequential(passes)(mod)

    return pipeline
