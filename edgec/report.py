"""The human report of a compile: what was done, what it achieved, which budgets hold."""

from __future__ import annotations


def text_report(manifest: dict, measurements: dict) -> str:
    m = manifest
    lines = [f"edgec {m['edgec_version']} — {m['inputs']['model_file']} for {m['target']['name']} "
             f"({m['target']['triple']}, cpu {m['target']['cpu']})", ""]
    cfg = m["configuration"]
    lines.append(f"configuration: {cfg['precision']} on {cfg['backend']}"
                 f"{'' if m['backend']['tuned'] else ' (UNTUNED)'}")
    lines.append(f"pipeline: {cfg['pipeline']}  ({m['passes']['nodes_before']} -> "
                 f"{m['passes']['nodes_after']} nodes)")
    changed = [r for r in m["passes"]["runs"] if r["modified"]]
    for r in changed:
        stats = ", ".join(f"{k} {v}" for k, v in r["stats"].items() if v)
        lines.append(f"  {r['invocation']}: {stats or 'changed'}")
    lines.append("")
    lines.append("candidates:")
    for c in m["candidates"]:
        lat = measurements.get("latency", {}).get(c["backend"])
        shown = f"p50 {lat['p50_ms']:.3f} ms, p90 {lat['p90_ms']:.3f} ms ({lat['where']})" \
            if lat else "not measured"
        reason = f" — {c['reason']}" if c.get("reason") else ""
        lines.append(f"  {c['backend']:<5} {c['status']:<11} {shown}{reason}")
    lines.append("")
    acc = m["accuracy"]
    lines.append(f"accuracy: {acc['detail']}")
    lines.append(f"  on {acc['data']}; measured with {acc['how']}")
    lines.append(f"size: {m['size_bytes'] / 2**20:.2f} MiB")
    lines.append("")
    lines.append("budgets:")
    for b in m["budgets"]:
        lines.append(f"  {b['name']:<9} {b['status'].upper():<10} {b['detail']}")
    lines.append("")
    lines.append("ALL BUDGETS HOLD" if m["budgets_held"] else
                 "OVER BUDGET: see the budgets above")
    for note in m["backend"].get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines) + "\n"
