"""The human reports of a compile: ``report.txt`` (also the terminal summary) and a
self-contained ``report.html`` (inline SVG charts, no scripts, no network)."""

from __future__ import annotations

import html
import math


def _candidate_latencies(measurements: dict) -> dict[str, tuple[float, str]]:
    """label -> (latency ms at p50, where) for every candidate that has one."""
    out = {}
    for c in measurements.get("candidates", []):
        if c.get("latency"):
            out[c["label"]] = (c["latency"]["p50_ms"], c["latency"]["where"])
        elif c.get("estimate"):
            out[c["label"]] = (c["estimate"]["ms"], "estimated")
    return out


def text_report(manifest: dict, measurements: dict) -> str:
    m = manifest
    lines = [f"edgec {m['edgec_version']}: {m['inputs']['model_file']} for {m['target']['name']} "
             f"({m['target']['triple']}, cpu {m['target']['cpu']})", ""]
    cfg = m["configuration"]
    lines.append(f"configuration: {cfg['label']}{'' if m['backend']['tuned'] else ' (UNTUNED)'}")
    lines.append(f"pipeline: {cfg['pipeline']}  ({m['passes']['nodes_before']} -> "
                 f"{m['passes']['nodes_after']} nodes)")
    for r in m["passes"]["runs"]:
        if r["modified"]:
            stats = ", ".join(f"{k} {v}" for k, v in r["stats"].items()
                              if v and not k.startswith(("fp32.", "sensitivity.")))
            lines.append(f"  {r['invocation']}: {stats or 'changed'}")
    lines += ["", "candidates (tried in order; search: " + m.get("search", "first") + "):"]
    latencies = _candidate_latencies(measurements)
    width = max((len(c["label"]) for c in m["candidates"]), default=10)
    for c in m["candidates"]:
        lat = latencies.get(c["label"])
        shown = f"{lat[0]:.3f} ms ({lat[1]})" if lat else ""
        acc = f"acc {c['accuracy']:.4g}" if isinstance(c.get("accuracy"), (int, float)) else ""
        lines.append(f"  {c['label']:<{width}}  {c['status']:<8} {shown:<24} {acc:<12} "
                     f"{c.get('reason', '')}".rstrip())
    lines.append("")
    int8 = m.get("int8")
    if int8:
        lines.append(f"int8: {int8['weight_bits']}-bit weights ({int8['weight_range']}); "
                     f"accuracy scored with {int8['scored_with']}"
                     + (f": {int8['scoring']}" if int8["scoring"] else ""))
    acc = m["accuracy"]
    lines.append(f"accuracy: {acc['detail']}")
    if acc.get("scored_on"):
        what = {"module": "the module's own outputs",
                "exact-int8": "the target's int8 arithmetic, emulated exactly",
                "onnx-proxy": "the optimized ONNX with onnxruntime (a proxy)"}
        lines.append(f"  scored on {what.get(acc['scored_on'], acc['scored_on'])}, "
                     f"{acc.get('scored_where') or 'host'}")
    lines.append(f"  on {acc['data']}")
    lines.append(f"size: {m['size_bytes'] / 2**20:.2f} MiB")
    lat = measurements.get("latency")
    if lat:
        where = lat.get("where", "estimated")
        if lat.get("kernels") is not None and lat.get("launch_us") is not None:
            where += (f": {lat['kernels']} GPU kernels, {lat['launch_us']:g} us launch each, "
                      "pointwise ops fused")
        lines.append(f"latency: p50 {lat.get('p50_ms', lat.get('ms', 0)):.3f} ms ({where})")
    lines += ["", "budgets:"]
    for b in m["budgets"]:
        lines.append(f"  {b['name']:<9} {b['status'].upper():<10} {b['detail']}")
    lines.append("")
    if m["budgets_held"]:
        lines.append("ALL BUDGETS HOLD")
    else:
        lines.append("OVER BUDGET")
        lines += [f"  {s}" for s in m.get("summary", [])]
    for note in m["backend"].get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- HTML

_COLORS = {"chosen": "#1a7f37", "held": "#2f81f7", "rejected": "#cf222e", "error": "#8c959f"}


def html_report(manifest: dict, measurements: dict) -> str:
    m = manifest
    esc = html.escape
    title = f"edgec: {m['inputs']['model_file']} for {m['target']['name']}"
    verdict = ("ALL BUDGETS HOLD" if m["budgets_held"] else "OVER BUDGET")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title>",
        "<style>body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1f2328}"
        "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #d0d7de;"
        "padding:3px 8px;text-align:left}th{background:#f6f8fa}.held{color:#1a7f37}"
        ".missed,.unverified{color:#cf222e}h2{margin-top:28px}svg text{font:11px sans-serif}"
        "</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<p><b class='{'held' if m['budgets_held'] else 'missed'}'>{verdict}</b> — "
        f"configuration <b>{esc(m['configuration']['label'])}</b>, edgec "
        f"{esc(m['edgec_version'])}, target {esc(m['target']['triple'])} "
        f"(cpu {esc(m['target']['cpu'])})</p>",
        "<h2>Budgets</h2><table><tr><th>budget</th><th>status</th><th>detail</th></tr>",
    ]
    for b in m["budgets"]:
        parts.append(f"<tr><td>{esc(b['name'])}</td><td class='{esc(b['status'])}'>"
                     f"{esc(b['status'])}</td><td>{esc(b['detail'])}</td></tr>")
    parts.append("</table>")
    if m.get("summary"):
        parts.append("<ul>" + "".join(f"<li>{esc(s)}</li>" for s in m["summary"]) + "</ul>")
    int8 = m.get("int8")
    if int8:
        parts.append(f"<p>int8: {int8['weight_bits']}-bit weights ({esc(int8['weight_range'])}); "
                     f"accuracy scored with {esc(int8['scored_with'])}"
                     + (f": {esc(int8['scoring'])}" if int8["scoring"] else "") + "</p>")
    parts.append("<h2>Candidates: latency against accuracy</h2>")
    parts.append(_tradeoff_chart(m, measurements))
    parts.append("<table><tr><th>configuration</th><th>status</th><th>latency</th>"
                 "<th>accuracy</th><th>size</th><th>why</th></tr>")
    latencies = _candidate_latencies(measurements)
    for c in m["candidates"]:
        lat = latencies.get(c["label"])
        acc = c.get("accuracy")
        size = c.get("size_bytes")
        parts.append(
            f"<tr><td>{esc(c['label'])}</td><td>{esc(c['status'])}</td>"
            f"<td>{f'{lat[0]:.3f} ms ({esc(lat[1])})' if lat else ''}</td>"
            f"<td>{f'{acc:.4g}' if isinstance(acc, (int, float)) else ''}</td>"
            f"<td>{f'{size / 2**20:.2f} MiB' if size else ''}</td>"
            f"<td>{esc(c.get('reason', ''))}</td></tr>")
    parts.append("</table>")
    parts.append("<h2>Per-layer sensitivity</h2>")
    parts.append(_sensitivity_chart(m))
    parts.append("<h2>Size</h2>")
    parts.append(_size_chart(m))
    parts.append("<h2>Pipeline</h2>")
    parts.append(f"<p><code>{esc(m['configuration']['pipeline'])}</code> — "
                 f"{m['passes']['nodes_before']} → {m['passes']['nodes_after']} nodes</p>")
    parts.append("<table><tr><th>pass</th><th>changed</th><th>statistics</th></tr>")
    for r in m["passes"]["runs"]:
        stats = ", ".join(f"{k} {v}" for k, v in r["stats"].items()
                          if not k.startswith(("fp32.", "sensitivity.")))
        parts.append(f"<tr><td><code>{esc(r['invocation'])}</code></td>"
                     f"<td>{'yes' if r['modified'] else 'no'}</td><td>{esc(stats)}</td></tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts) + "\n"


def _tradeoff_chart(m: dict, measurements: dict) -> str:
    latencies = _candidate_latencies(measurements)
    points = [(c, latencies[c["label"]][0]) for c in m["candidates"]
              if c["label"] in latencies and isinstance(c.get("accuracy"), (int, float))]
    spec = m["spec"]
    lat_budget = spec["budget"].get("latency")
    limit_ms = None
    if lat_budget:
        lim = lat_budget["limit"]
        limit_ms = lim["value"] * {"ns": 1e-6, "us": 1e-3, "ms": 1, "s": 1e3, "min": 6e4,
                                   "h": 3.6e6}.get(lim["unit"], 1)
    acc_line = _accuracy_threshold(spec)
    W, H, L, B = 640, 360, 70, 40
    if not points:
        return "<p>No candidate was measured.</p>"
    xs = [p[1] for p in points] + ([limit_ms] if limit_ms else [])
    ys = [p[0]["accuracy"] for p in points] + ([acc_line] if acc_line is not None else [])
    x0, x1 = 0.0, max(xs) * 1.15 or 1.0
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.01 * (abs(y0) or 1), y1 + 0.01 * (abs(y1) or 1)
    pad = (y1 - y0) * 0.1
    y0, y1 = y0 - pad, y1 + pad

    def sx(x):
        return L + (x - x0) / (x1 - x0) * (W - L - 20)

    def sy(y):
        return H - B - (y - y0) / (y1 - y0) * (H - B - 20)

    svg = [f"<svg id='tradeoff' width='{W}' height='{H}' viewBox='0 0 {W} {H}' "
           "xmlns='http://www.w3.org/2000/svg' role='img' "
           "aria-label='candidates, latency against accuracy'>",
           f"<rect x='0' y='0' width='{W}' height='{H}' fill='#ffffff'/>",
           f"<line x1='{L}' y1='{H - B}' x2='{W - 10}' y2='{H - B}' stroke='#57606a'/>",
           f"<line x1='{L}' y1='10' x2='{L}' y2='{H - B}' stroke='#57606a'/>",
           f"<text x='{(W + L) / 2}' y='{H - 8}' text-anchor='middle'>latency, ms (p50)</text>",
           f"<text x='14' y='{(H - B) / 2}' transform='rotate(-90 14 {(H - B) / 2})' "
           f"text-anchor='middle'>{html.escape(m['accuracy']['metric'])}</text>"]
    for i in range(5):
        xv = x0 + (x1 - x0) * i / 4
        yv = y0 + (y1 - y0) * i / 4
        svg.append(f"<text x='{sx(xv):.1f}' y='{H - B + 14}' text-anchor='middle'>{xv:.3g}</text>")
        svg.append(f"<text x='{L - 4}' y='{sy(yv) + 4:.1f}' text-anchor='end'>{yv:.4g}</text>")
    if limit_ms:
        svg.append(f"<line class='budget' x1='{sx(limit_ms):.1f}' y1='10' x2='{sx(limit_ms):.1f}' "
                   f"y2='{H - B}' stroke='#cf222e' stroke-dasharray='6 4' stroke-width='2'/>")
        svg.append(f"<text x='{sx(limit_ms) + 4:.1f}' y='22' fill='#cf222e'>latency budget</text>")
    if acc_line is not None:
        svg.append(f"<line class='budget' x1='{L}' y1='{sy(acc_line):.1f}' x2='{W - 10}' "
                   f"y2='{sy(acc_line):.1f}' stroke='#bf8700' stroke-dasharray='6 4' "
                   "stroke-width='2'/>")
        svg.append(f"<text x='{W - 14}' y='{sy(acc_line) - 6:.1f}' text-anchor='end' "
                   "fill='#bf8700'>accuracy tolerance</text>")
    for c, lat in points:
        color = _COLORS.get(c["status"], "#8c959f")
        svg.append(f"<circle class='candidate' cx='{sx(lat):.1f}' cy='{sy(c['accuracy']):.1f}' "
                   f"r='7' fill='{color}'><title>{html.escape(c['label'])}</title></circle>")
        svg.append(f"<text x='{sx(lat) + 9:.1f}' y='{sy(c['accuracy']) - 8:.1f}'>"
                   f"{html.escape(c['label'][:40])}</text>")
    svg.append("</svg>")
    return "".join(svg)


def _accuracy_threshold(spec: dict) -> float | None:
    acc = spec["accuracy"]
    tol = acc["tolerance"]
    frac = tol["value"] / 100 if tol["unit"] == "%" else tol["value"]
    metric = acc["metric"]
    if metric in ("top1-agreement", "cosine-similarity"):
        return 1.0 - frac
    if metric == "sqnr":
        return tol["value"]
    if metric == "max-abs-error" and tol["unit"] != "%":
        return tol["value"]
    return None


def _sensitivity_chart(m: dict) -> str:
    scores = []
    for r in m["passes"]["runs"]:
        for k, v in r["stats"].items():
            if k.startswith("sensitivity."):
                scores.append((k[len("sensitivity."):], float(v)))
    kept = {k[len("fp32."):] for r in m["passes"]["runs"] for k in r["stats"]
            if k.startswith("fp32.")}
    if not scores:
        return ("<p>No per-layer sensitivity analysis ran for the chosen configuration "
                "(it runs for int8 with per-layer fallback).</p>")
    finite = [s for _, s in scores if math.isfinite(s)]
    top = max(finite) if finite else 1.0
    W, row = 640, 18
    H = row * len(scores) + 20
    svg = [f"<svg id='sensitivity' width='{W}' height='{H}' xmlns='http://www.w3.org/2000/svg'>"]
    for i, (name, score) in enumerate(scores):
        width = 0 if not math.isfinite(score) or top <= 0 else max(1.0, score / top * (W - 260))
        color = "#cf222e" if name in kept else "#2f81f7"
        y = 10 + i * row
        svg.append(f"<text x='0' y='{y + 12}'>{html.escape(name[:30])}</text>")
        svg.append(f"<rect x='220' y='{y}' width='{width:.1f}' height='{row - 4}' fill='{color}'/>")
        svg.append(f"<text x='{224 + width:.1f}' y='{y + 12}'>{score:.3g}</text>")
    svg.append("</svg>")
    return "".join(svg) + ("<p>Score of the model with only that layer in int8 (SQNR in dB "
                           "against fp32: shorter bars are more sensitive). Red: layers the "
                           "fallback kept in fp32.</p>")


def _size_chart(m: dict) -> str:
    files = m.get("files", {})
    total = sum(f["bytes"] for f in files.values()) or 1
    W = 640
    svg = [f"<svg id='size' width='{W}' height='{22 * len(files) + 10}' "
           "xmlns='http://www.w3.org/2000/svg'>"]
    for i, (name, f) in enumerate(sorted(files.items(), key=lambda kv: -kv[1]["bytes"])):
        width = max(1.0, f["bytes"] / total * (W - 300))
        y = 5 + i * 22
        svg.append(f"<text x='0' y='{y + 13}'>{html.escape(name)}</text>")
        svg.append(f"<rect x='160' y='{y}' width='{width:.1f}' height='16' fill='#8250df'/>")
        svg.append(f"<text x='{164 + width:.1f}' y='{y + 13}'>{f['bytes'] / 2**10:.1f} KiB</text>")
    svg.append("</svg>")
    return "".join(svg)
