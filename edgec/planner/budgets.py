"""The spec's budgets judged against one candidate's figures, and what a missed budget
tells the user.

Each judgement is a plain record (name, status held|missed, limit, detail) that the
manifest, report.txt and `--json` show as they are; nothing here runs a model.
"""

from __future__ import annotations

from edgec.diagnostics import Diagnostic, Location


def judge(spec, ev, model) -> list[dict]:
    """Every budget the spec sets, judged for the candidate ``ev`` (an Evaluation with its
    latency, size and accuracy filled in) whose optimized IR is ``model``. Accuracy is
    always judged; latency when a figure is known; size and memory when the spec sets
    them (memory is estimated from ``model``)."""
    budgets = []
    if spec.budget.latency is not None and ev.latency_s is not None:
        budgets.append(_latency(spec.budget.latency, ev))
    if spec.budget.size is not None:
        held = ev.size_bytes <= spec.budget.size.to("B")
        budgets.append({"name": "size", "status": "held" if held else "missed",
                        "limit": str(spec.budget.size), "value_bytes": ev.size_bytes,
                        "detail": f"{in_unit(ev.size_bytes, spec.budget.size)} against "
                                  f"{spec.budget.size}"})
    if spec.budget.memory is not None:
        estimate = memory_estimate(model)
        held = estimate <= spec.budget.memory.to("B")
        budgets.append({"name": "memory", "status": "held" if held else "missed",
                        "limit": str(spec.budget.memory), "value_bytes": estimate,
                        "estimated": True,
                        "detail": f"estimated peak {in_unit(estimate, spec.budget.memory)} "
                                  f"(weights + the two largest activations) against "
                                  f"{spec.budget.memory}"})
    budgets.append({"name": "accuracy", "status": "held" if ev.accuracy_held else "missed",
                    "metric": spec.accuracy.metric, "detail": ev.accuracy_detail})
    return budgets


def _latency(lat, ev) -> dict:
    limit = lat.limit.to("s")
    held = ev.latency_s <= limit
    label = "estimated " if ev.latency_where == "estimated" else ""
    return {
        "name": "latency", "status": "held" if held else "missed",
        "limit": str(lat.limit), "percentile": lat.percentile, "where": ev.latency_where,
        "detail": (f"p{lat.percentile} within {lat.limit} ({ev.latency_where})" if held else
                   f"{label}p{lat.percentile} {ev.latency_s * 1e3:.3g} ms against {lat.limit} "
                   f"({ev.latency_s / limit:.2f}x, {ev.latency_where})")}


def in_unit(nbytes: int, limit) -> str:
    """``nbytes`` in the unit the spec wrote its limit in ("12.3 KiB against 10 KiB")."""
    from edgec.dsl.units import UNITS

    unit = limit.unit or "B"
    value = nbytes / UNITS[unit][1]
    return f"{value:.4g} {unit}" if value < 1000 else f"{value:,.0f} {unit}"


def memory_estimate(model) -> int:
    """Peak memory, estimated: the weights plus the two largest activations with a static
    shape (one op's input and output live at once)."""
    weights = sum(v.const.nbytes for v in model.graph.initializers.values() if v.const is not None)
    activations = []
    for node in model.graph:
        for out in node.outputs:
            shape, dtype = out.shape, out.dtype
            if shape is not None and shape.is_static and dtype is not None:
                activations.append(shape.numel() * max(1, dtype.itemsize_bits // 8))
    activations.sort(reverse=True)
    return int(weights + sum(activations[:2]))


def budget_diagnostics(manifest: dict, out: str) -> list[Diagnostic]:
    """The one error a compile that misses a budget reports (exit 4): which budget, the
    planner's summary, and every configuration tried with why it was not shipped."""
    missed = [b for b in manifest["budgets"] if b["status"] != "held"]
    head = ("the spec's budget cannot be met" if any(b["status"] == "missed" for b in missed)
            else "the spec's budget cannot be verified for this target")
    candidates = manifest.get("candidates", [])
    tried = [c for c in candidates if c.get("status") != "skipped"]
    # No artifact is written, so the list is here rather than in report.txt.
    notes = [*manifest.get("summary", []),
             f"{len(tried)} configuration{'s' if len(tried) != 1 else ''} tried (nothing was "
             "written; --json lists each with its budgets):",
             *[f"  {c['label']}: {c.get('reason') or c['status']}" for c in candidates],
             "--allow-over-budget writes the best one anyway, marked as such, with its "
             "report.txt"]
    return [Diagnostic.error(head, Location(path=out), notes=notes, code="budget")]
