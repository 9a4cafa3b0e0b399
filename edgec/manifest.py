"""What an artifact says about itself: manifest.json (deterministic: what was built, from
what, for which target, every candidate and budget), measurements.json (the figures that
differ between runs) and the reports, written from the planner's `Plan`.

The folder's layout and its atomic publication are `edgec.artifact` and `edgec.publish`.
"""

from __future__ import annotations

import os

from edgec import artifact as art
from edgec._version import __version__
from edgec.diagnostics import DiagnosticSink
from edgec.planner.evaluate import Attempt
from edgec.planner.plan import Plan
from edgec.planner.search import summary

# Files that describe the artifact rather than belong to it: not listed in "files".
_RECORDS = (art.MANIFEST, art.MEASUREMENTS, art.REPORT, "report.html")


def write_records(folder: str, plan: Plan, *, key: str, digests: dict, model_path: str,
                  sink: DiagnosticSink) -> dict:
    """manifest.json, measurements.json, report.txt and report.html written into
    ``folder`` (which holds the chosen candidate's files); returns the manifest."""
    from edgec.report import html_report, text_report

    manifest = build_manifest(plan, file_digests(folder), key=key, digests=digests,
                              model_path=model_path, diagnostics=[d.to_json() for d in sink.diagnostics])
    measurements = build_measurements(plan)
    art.write_if_changed(os.path.join(folder, art.MANIFEST), art.dumps_canonical(manifest))
    art.write_if_changed(os.path.join(folder, art.MEASUREMENTS), art.dumps_canonical(measurements))
    art.write_if_changed(os.path.join(folder, art.REPORT), text_report(manifest, measurements))
    art.write_if_changed(os.path.join(folder, "report.html"), html_report(manifest, measurements))
    return manifest


def build_manifest(plan: Plan, files: dict, *, key: str, digests: dict, model_path: str,
                   diagnostics: list[dict]) -> dict:
    spec, chosen, ev = plan.ctx.spec, plan.chosen, plan.best
    target = spec.target
    return {
        "format_version": art.FORMAT_VERSION,
        "edgec_version": __version__,
        "cache_key": key,
        "inputs": {"model_file": os.path.basename(model_path), **digests},
        "spec": spec_record(spec),
        "target": {"name": target.name, "arch": target.arch, "triple": target.triple,
                   "cpu": target.cpu, "at_hand": plan.ctx.at_hand},
        "configuration": {**ev.config.to_json(), "pipeline": chosen.pipeline},
        "passes": {"nodes_before": plan.nodes_before, "nodes_after": chosen.nodes_after,
                   "runs": [{"pass": r.name, "invocation": r.text, "modified": r.modified,
                             "stats": r.stats, "iteration": r.iteration} for r in chosen.records]},
        "backend": {"name": chosen.result.backend, "runnable_here": chosen.result.runnable_here,
                    "tuned": chosen.result.tuned, "details": chosen.result.details,
                    "notes": chosen.result.notes},
        "search": spec.optimize.search,
        "candidates": candidate_records(plan),
        **({"runoff": plan.runoff.manifest_record()} if plan.runoff else {}),
        **({"int8": chosen.int8} if chosen.int8 else {}),
        "accuracy": {"metric": spec.accuracy.metric, "value": ev.accuracy_value,
                     "held": ev.accuracy_held, "detail": ev.accuracy_detail,
                     "data": plan.data_note, "layout": plan.layout,
                     **({"figures": ev.accuracy_figures} if ev.accuracy_figures else {}),
                     "scored_on": ev.accuracy_scored_on,
                     "scored_where": ev.accuracy_scored_where,
                     **({"caveat": plan.caveat} if plan.caveat else {})},
        "latency": latency_record(chosen),
        "size_bytes": sum(f["bytes"] for f in files.values()),
        "budgets": ev.budgets,
        "budgets_held": plan.winner is not None,
        "over_budget": plan.winner is None,
        "summary": [] if plan.winner is not None else summary(plan.evaluations, plan.best, spec),
        "files": files,
        "diagnostics": diagnostics,
    }


def candidate_records(plan: Plan) -> list[dict]:
    """Every configuration the spec allows, in the order tried: its status (chosen, held,
    rejected, error, skipped), why it was not chosen, and its budgets."""
    search = plan.ctx.spec.optimize.search
    candidates = []
    for t in plan.tried:
        e = t.evaluation
        if t.skipped is not None:
            candidates.append({**e.config.to_json(), "status": "skipped", "reason": t.skipped})
            continue
        chosen = t is plan.chosen
        status = "chosen" if chosen else "error" if e.error else "held" if e.held else "rejected"
        reason = "" if chosen and e.held else e.rejection()
        if not chosen and e.held:
            reason = ("holds every budget, but search 'fastest' preferred a faster one"
                      if search == "fastest" else "holds every budget")
            if plan.runoff and e.config.label in plan.runoff.between and plan.runoff.chosen:
                reason = (f"holds every budget, but {plan.runoff.chosen} was faster side by "
                          "side (run-off)")
        candidates.append({**e.config.to_json(), "status": status, "reason": reason,
                           "accuracy": e.accuracy_value, "accuracy_held": e.accuracy_held,
                           **({"accuracy_figures": e.accuracy_figures}
                              if e.accuracy_figures else {}),
                           "accuracy_scored_on": e.accuracy_scored_on,
                           "size_bytes": e.size_bytes, "latency_where": e.latency_where,
                           **({"latency_note": t.latency_note} if t.latency_note else {}),
                           "tuned": t.result.tuned if t.result else None,
                           **_executed_summary(t),
                           "budgets": [{k: b[k] for k in ("name", "status")} for b in e.budgets]})
    return candidates + [{"label": s.label, "status": "skipped", "reason": s.reason}
                         for s in plan.skipped]


def _executed_summary(attempt: Attempt) -> dict:
    """An int8 candidate's Q/DQ transitions and node precisions as onnxruntime ran them
    (the chosen one's per node are in the manifest's int8 record)."""
    executed = (attempt.int8 or {}).get("executed")
    if not executed:
        return {}
    return {"int8_executed": {"transitions": executed["transitions"], "nodes": executed["nodes"]}}


def latency_record(chosen: Attempt) -> dict:
    """Where the chosen candidate's latency came from; the figures themselves are in
    measurements.json: they differ between runs."""
    note = {"note": chosen.latency_note} if chosen.latency_note else {}
    if chosen.latency is not None:
        return {"measured": True, "where": chosen.latency.where, "figures": art.MEASUREMENTS,
                **note}
    why = (chosen.estimate or {}).get("why") or \
        "the target is not at hand and no RPC tracker was given"
    return {"measured": False, "where": "estimated", "figures": art.MEASUREMENTS,
            "why": chosen.latency_note or
            f"{why}: estimated from the target description (edgec.planner.costmodel)", **note}


def build_measurements(plan: Plan) -> dict:
    chosen = plan.chosen
    return {
        "candidates": [{"label": t.evaluation.config.label,
                        "latency": t.latency.to_json() if t.latency else None,
                        "estimate": t.estimate,
                        **({"int8_time": t.int8_time} if t.int8_time else {}),
                        "seconds": round(t.seconds, 3)} for t in plan.tried],
        "latency": chosen.latency.to_json() if chosen.latency else chosen.estimate,
        "passes": [r.to_json() for r in chosen.records],
        "phases": plan.phases,
        **({"runoff": plan.runoff.measurements_record()} if plan.runoff else {}),
    }


def file_digests(folder: str) -> dict:
    """Each file of the artifact (the records aside): its size and sha256."""
    out = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isfile(path) and name not in _RECORDS:
            out[name] = {"bytes": os.path.getsize(path), "sha256": art.sha256_file(path)}
    return out


def spec_record(spec) -> dict:
    """The resolved spec for the manifest and the cache key. Data and labels paths are
    given relative to the spec's folder: the same project compiled from two checkouts
    has the same key and the same manifest bytes (their contents are hashed apart)."""
    record = spec.to_dict()
    record.pop("sources", None)
    base = os.path.dirname(spec.sources[0]) if getattr(spec, "sources", None) else os.getcwd()
    accuracy = record.get("accuracy")
    if isinstance(accuracy, dict):
        for name in ("data", "labels"):
            value = accuracy.get(name)
            if isinstance(value, str) and os.path.isabs(value):
                accuracy[name] = os.path.relpath(value, base).replace(os.sep, "/")
    return record
