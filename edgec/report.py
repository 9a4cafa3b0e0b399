"""The human reports of a compile: ``report.txt`` (also the terminal summary) and a
self-contained ``report.html`` (inline SVG charts, no scripts, no network)."""

from __future__ import annotations

import html
import math

from edgec.metrics import format_value, metric_name


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
    metric = m["accuracy"]["metric"]
    for c in m["candidates"]:
        lat = latencies.get(c["label"])
        shown = f"{lat[0]:.3f} ms ({lat[1]})" if lat else ""
        acc = format_value(metric, c.get("accuracy"))
        lines.append(f"  {c['label']:<{width}}  {c['status']:<8} {shown:<24} {acc:<10} "
                     f"{c.get('reason', '')}".rstrip())
    runoff = m.get("runoff")
    if runoff:
        medians = measurements.get("runoff", {}).get("medians_ms", {})
        fp32_ms = measurements.get("runoff", {}).get("fp32_ms")
        lines.append(f"run-off: first latencies within {runoff['margin']:.0%} of the fastest; "
                     f"timed again side by side ({runoff['rounds']} interleaved rounds, medians):")
        lines += [f"  {label:<{width}}  {medians[label]:.3f} ms"
                  + ("  chosen" if label == runoff["chosen"] else "")
                  for label in sorted(runoff["between"], key=lambda k: medians.get(k, math.inf))
                  if label in medians]
        if runoff.get("fp32_reference") and fp32_ms is not None:
            lines.append(f"  {runoff['fp32_reference']:<{width}}  {fp32_ms:.3f} ms  "
                         "(reference for not-slower-than-fp32)")
    lines.append("")
    int8 = m.get("int8")
    if int8:
        lines.append(f"int8: {int8['weight_bits']}-bit weights ({int8['weight_range']}); "
                     f"accuracy scored with {int8['scored_with']}"
                     + (f": {int8['scoring']}" if int8["scoring"] else ""))
        executed = int8.get("executed")
        if executed:
            counts = ", ".join(f"{n} {p}" for p, n in executed["nodes"].items())
            lines.append(f"  as onnxruntime executed it: {executed['transitions']} Q/DQ "
                         f"transitions on activations; nodes: {counts}")
            timing = next((c.get("int8_time") for c in measurements.get("candidates", [])
                           if c.get("label") == m["configuration"]["label"]), None)
            if timing:
                share = timing["time_share"]
                lines.append(f"  time: int8 kernels {share['int8']:.0%}, fp32 kernels "
                             f"{share['fp32']:.0%}, Q/DQ {share['transition']:.0%}"
                             + ("; fp32 ops: " + ", ".join(f"{op} {s:.0%}" for op, s in
                                                          timing["fp32_ops"][:4])
                                if timing["fp32_ops"] else ""))
    acc = m["accuracy"]
    lines.append(f"accuracy: {acc['detail']}")
    if acc.get("scored_on"):
        what = {"module": "the module's own outputs",
                "exact-int8": "the target's int8 arithmetic, emulated exactly",
                "onnx-proxy": "the optimized ONNX with onnxruntime (a proxy)"}
        lines.append(f"  scored on {what.get(acc['scored_on'], acc['scored_on'])}, "
                     f"{acc.get('scored_where') or 'host'}")
    lines.append(f"  on {acc['data']}")
    if acc.get("caveat"):
        lines.append(f"  warning: {acc['caveat']}")
    lines.append(f"size: {m['size_bytes'] / 2**20:.2f} MiB")
    lat = measurements.get("latency")
    if lat:
        where = lat.get("where", "estimated")
        if lat.get("kernels") is not None and lat.get("launch_us") is not None:
            where += (f": {lat['kernels']} GPU kernels, {lat['launch_us']:g} us launch each, "
                      "pointwise ops fused")
        lines.append(f"latency: p50 {lat.get('p50_ms', lat.get('ms', 0)):.3f} ms ({where})")
    phases = measurements.get("phases")
    if phases:
        lines.append("compile time per phase: " + ", ".join(
            f"{k} {v:.1f} s" for k, v in sorted(phases.items(), key=lambda kv: -kv[1])))
    lines += ["", "budgets:", *_budget_lines(m["budgets"])]
    lines.append("")
    if m["budgets_held"]:
        lines.append("ALL BUDGETS HOLD")
    else:
        lines.append("OVER BUDGET")
        lines += [f"  {s}" for s in m.get("summary", [])]
    for note in m["backend"].get("notes", []):
        lines.append(f"note: {note}")
    # How candidates that could not be measured over RPC were judged (once per backend).
    for note in dict.fromkeys(c["latency_note"] for c in m["candidates"]
                              if c.get("latency_note")):
        lines.append(f"note: {note}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- HTML

_COLORS = {"chosen": "#1a7f37", "held": "#2f81f7", "rejected": "#cf222e", "error": "#8c959f"}


def _budget_lines(budgets: list[dict]) -> list[str]:
    """One line per budget, its name, status and detail in columns as wide as the
    longest name (not-slower-than-fp32 is 20 characters)."""
    width = max([9, *(len(b["name"]) for b in budgets)])
    return [f"  {b['name']:<{width}} {b['status'].upper():<10} {b['detail']}" for b in budgets]


def html_report(manifest: dict, measurements: dict) -> str:
    m = manifest
    esc = html.escape
    title = f"edgec: {m['inputs']['model_file']} for {m['target']['name']}"
    verdict = ("ALL BUDGETS HOLD" if m["budgets_held"] else "OVER BUDGET")
    untuned = "" if m["backend"]["tuned"] else " <b class='missed'>(UNTUNED)</b>"
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
        f"configuration <b>{esc(m['configuration']['label'])}</b>"
        f"{untuned}, edgec "
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
    notes = _notes(m)
    if notes:
        parts.append("<h2>Notes</h2><ul id='notes'>"
                     + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    parts.append("<h2>Candidates: latency against accuracy</h2>")
    parts.append(_tradeoff_chart(m, measurements))
    metric = m["accuracy"]["metric"]
    parts.append("<table><tr><th>configuration</th><th>status</th><th>latency (p50)</th>"
                 f"<th>accuracy ({esc(metric)})</th><th>size</th><th>why</th></tr>")
    latencies = _candidate_latencies(measurements)
    for c in m["candidates"]:
        lat = latencies.get(c["label"])
        size = c.get("size_bytes")
        untuned = " (untuned)" if c.get("tuned") is False else ""
        parts.append(
            f"<tr><td>{esc(c['label'])}{untuned}</td><td>{esc(c['status'])}</td>"
            f"<td>{f'{_plain(lat[0])} ms ({esc(lat[1])})' if lat else ''}</td>"
            f"<td>{esc(format_value(metric, c.get('accuracy')))}</td>"
            f"<td>{_size_text(size) if size else ''}</td>"
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


def _notes(m: dict) -> list[str]:
    """What report.txt says besides the tables: untuned modules, the backend's notes
    (execution provider, "not tuned: ... needs the device"), how latency was judged, and
    caveats about the accuracy figure."""
    notes = []
    if not m["backend"]["tuned"]:
        notes.append(f"the chosen {m['backend']['name']} module is UNTUNED: expect it to be "
                     "far slower than a tuned one")
    notes += m["backend"].get("notes", [])
    if m.get("latency", {}).get("why"):
        notes.append(f"latency is estimated: {m['latency']['why']}")
    if m["accuracy"].get("caveat"):
        notes.append(f"accuracy: {m['accuracy']['caveat']}")
    layout = m["accuracy"].get("layout")
    if layout and (layout["layout"] != "batch" or "do not tell" in layout["how"]):
        notes.append(f"accuracy data read as {layout['layout']}: {layout['how']}")
    return notes


def _plain(value: float) -> str:
    """A number as written by hand: "1200", "2.41", "0.035" — never "1.2e+03"."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    digits = max(0, 2 - math.floor(math.log10(abs(value))))
    text = f"{value:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _size_text(nbytes: float) -> str:
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= factor:
            return f"{_plain(nbytes / factor)} {unit}"
    return f"{int(nbytes)} B"


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks between lo and hi; fewer steps when the range spans many decades."""
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    for steps in ((1,), (1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [step * 10.0 ** exponent for exponent in range(first, last + 1)
                 for step in steps if lo <= step * 10.0 ** exponent <= hi]
        if len(ticks) >= 4:
            break
    return ticks


def _tradeoff_chart(m: dict, measurements: dict) -> str:
    latencies = _candidate_latencies(measurements)
    points = [(c, latencies[c["label"]][0]) for c in m["candidates"]
              if c["label"] in latencies and isinstance(c.get("accuracy"), (int, float))
              and math.isfinite(c["accuracy"]) and latencies[c["label"]][0] > 0]
    spec = m["spec"]
    metric = metric_name(m["accuracy"]["metric"])
    lat_budget = spec["budget"].get("latency")
    limit_ms = None
    if lat_budget:
        lim = lat_budget["limit"]
        limit_ms = lim["value"] * {"ns": 1e-6, "us": 1e-3, "ms": 1, "s": 1e3, "min": 6e4,
                                   "h": 3.6e6}.get(lim["unit"], 1)
    acc_line = _accuracy_threshold(spec)
    W, H, L, R, T, B = 720, 400, 78, 24, 44, 44
    if not points:
        return "<p>No candidate was measured.</p>"
    # Latency on a log axis: an untuned module 100x slower than the rest must not squeeze
    # them into one spot.
    xs = [p[1] for p in points] + ([limit_ms] if limit_ms else [])
    x0, x1 = math.log10(min(xs) / 1.6), math.log10(max(xs) * 1.6)
    ys = [p[0]["accuracy"] for p in points] + ([acc_line] if acc_line is not None else [])
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.01 * (abs(y0) or 1), y1 + 0.01 * (abs(y1) or 1)
    pad = (y1 - y0) * 0.12
    y0, y1 = y0 - pad, y1 + pad
    if metric in ("top1-agreement", "accuracy", "cosine-similarity", "sequence-agreement",
                  "iou", "dice"):
        y1 = min(y1, 1.0)   # nothing agrees more than all of it
    percent = metric in ("top1-agreement", "accuracy", "sequence-agreement")

    def sx(x):
        return L + (math.log10(x) - x0) / (x1 - x0) * (W - L - R)

    def sy(y):
        return H - B - (y - y0) / (y1 - y0) * (H - B - T)

    def y_label(y):
        return f"{_plain(y * 100)} %" if percent else (f"{_plain(y)} dB" if metric == "sqnr"
                                                        else _plain(y))

    axis_name = {"top1-agreement": "top-1 agreement with fp32", "accuracy": "accuracy",
                 "sqnr": "SQNR against fp32"}.get(metric, metric)
    svg = [f"<svg id='tradeoff' width='{W}' height='{H}' viewBox='0 0 {W} {H}' "
           "xmlns='http://www.w3.org/2000/svg' role='img' "
           "aria-label='candidates, latency against accuracy'>",
           f"<rect x='0' y='0' width='{W}' height='{H}' fill='#ffffff'/>",
           f"<line x1='{L}' y1='{H - B}' x2='{W - R}' y2='{H - B}' stroke='#57606a'/>",
           f"<line x1='{L}' y1='{T}' x2='{L}' y2='{H - B}' stroke='#57606a'/>",
           f"<text x='{(W + L) / 2}' y='{H - 8}' text-anchor='middle'>latency, ms (p50, "
           "log scale)</text>",
           f"<text x='14' y='{(H - B + T) / 2}' transform='rotate(-90 14 {(H - B + T) / 2})' "
           f"text-anchor='middle'>{html.escape(axis_name)}</text>"]
    for xv in _log_ticks(10 ** x0, 10 ** x1):
        svg.append(f"<line x1='{sx(xv):.1f}' y1='{H - B}' x2='{sx(xv):.1f}' y2='{H - B + 4}' "
                   "stroke='#57606a'/>")
        svg.append(f"<text class='tick' x='{sx(xv):.1f}' y='{H - B + 16}' "
                   f"text-anchor='middle'>{_plain(xv)}</text>")
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        svg.append(f"<text class='tick' x='{L - 6}' y='{sy(yv) + 4:.1f}' "
                   f"text-anchor='end'>{html.escape(y_label(yv))}</text>")
    if limit_ms:
        svg.append(f"<line class='budget' x1='{sx(limit_ms):.1f}' y1='{T}' x2='{sx(limit_ms):.1f}' "
                   f"y2='{H - B}' stroke='#cf222e' stroke-dasharray='6 4' stroke-width='2'/>")
        text = f"latency budget {_plain(limit_ms)} ms"
        width = 6.3 * len(text)
        left = sx(limit_ms) - width - 4 if sx(limit_ms) > W - R - width - 4 else sx(limit_ms) + 4
        svg.append(f"<text x='{left:.1f}' y='{T - 30}' fill='#cf222e'>{text}</text>")
    if acc_line is not None and y0 <= acc_line <= y1:
        svg.append(f"<line class='budget' x1='{L}' y1='{sy(acc_line):.1f}' x2='{W - R}' "
                   f"y2='{sy(acc_line):.1f}' stroke='#bf8700' stroke-dasharray='6 4' "
                   "stroke-width='2'/>")
        svg.append(f"<text x='{W - R - 4}' y='{sy(acc_line) + 14:.1f}' text-anchor='end' "
                   "fill='#bf8700'>accuracy tolerance</text>")
    # Dots, then labels placed where they overlap neither another label nor a dot.
    placed: list[tuple[float, float, float, float]] = []
    # The chosen dot last, so that it is on top of any candidate at the same point.
    dots = sorted(((sx(lat), sy(c["accuracy"]), c) for c, lat in points),
                  key=lambda d: d[2]["status"] == "chosen")
    for x, y, c in dots:
        color = _COLORS.get(c["status"], "#8c959f")
        svg.append(f"<circle class='candidate' cx='{x:.1f}' cy='{y:.1f}' r='7' fill='{color}' "
                   f"stroke='#ffffff'><title>{html.escape(c['label'])}</title></circle>")
    # One label per spot: candidates drawn on the same point share it.
    spots: dict[tuple[int, int], list] = {}
    for x, y, c in reversed(dots):
        spots.setdefault((round(x / 4), round(y / 4)), []).append((x, y, c))
    for group in sorted(spots.values(), key=lambda g: (g[0][0], g[0][1])):
        x, y, c = group[0]
        text = _chart_label(c["label"]) + (f" (+{len(group) - 1} at this point)"
                                           if len(group) > 1 else "")
        width = 6.3 * len(text)
        box = _place_label(x, y, width, placed, [(dx, dy) for dx, dy, _ in dots],
                           (L + 2, T, W - R, H - B))
        placed.append(box)
        if box[1] > y + 20 or box[3] < y - 20:   # far from its dot: a leader line to it
            edge = box[1] if box[1] > y else box[3]
            svg.append(f"<line x1='{x:.1f}' y1='{y:.1f}' x2='{box[0] + 4:.1f}' y2='{edge:.1f}' "
                       "stroke='#8c959f' stroke-width='1'/>")
        svg.append(f"<text class='label' x='{box[0]:.1f}' y='{box[3] - 3:.1f}'>"
                   f"{html.escape(text)}</text>")
    svg.append("</svg>")
    return "".join(svg) + _legend(m)


def _chart_label(label: str, limit: int = 44) -> str:
    """``label`` in at most ``limit`` characters for the chart, cut in the middle so that
    its backend (" on ort") stays: the full label is the dot's tooltip and in the table."""
    if len(label) <= limit:
        return label
    head, sep, backend = label.rpartition(" on ")
    tail = sep + backend if sep and len(sep + backend) < limit // 2 else ""
    return (head if tail else label)[:limit - len(tail) - 1].rstrip(" ,+(") + "\u2026" + tail


def _place_label(x: float, y: float, width: float, placed: list, dots: list,
                 area: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """A label box (x0, y0, x1, y1) next to the dot at (x, y), inside the plot ``area``
    (left, top, right, bottom), clear of the boxes already placed and of every dot if
    any nearby spot is."""
    height = 14.0
    left_edge, top, right, bottom = area

    def clear(box):
        if box[0] < left_edge or box[2] > right or box[1] < top - 10 or box[3] > bottom:
            return False
        if any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
               for b in placed):
            return False
        return not any(box[0] - 7 < dx < box[2] + 7 and box[1] - 7 < dy < box[3] + 7
                       for dx, dy in dots)

    candidates = []
    for step in range(0, 8):
        for dy in (-1, 1):
            offset = 10 + step * height
            top_y = y - offset - height + 4 if dy < 0 else y + offset - 4
            candidates.append((x + 10, top_y))
            candidates.append((x - 10 - width, top_y))
    for left, top_y in candidates:
        box = (left, top_y, left + width, top_y + height)
        if clear(box):
            return box
    left = max(left_edge, min(x + 10, right - width))
    return (left, y - height - 6, left + width, y - 6)


def _legend(m: dict) -> str:
    shown = {c["status"] for c in m["candidates"]}
    words = {"chosen": "chosen", "held": "holds every budget, not chosen",
             "rejected": "misses a budget", "error": "could not be built"}
    items = "".join(
        f"<span style='margin-right:16px'><svg width='12' height='12'><circle cx='6' cy='6' "
        f"r='6' fill='{color}'/></svg> {words[status]}</span>"
        for status, color in _COLORS.items() if status in shown)
    dashes = ("<span style='margin-right:16px;color:#cf222e'>- - latency budget</span>"
              "<span style='color:#bf8700'>- - accuracy tolerance</span>")
    return f"<p id='legend'>{items}{dashes}</p>"


def _accuracy_threshold(spec: dict) -> float | None:
    acc = spec["accuracy"]
    tol = acc["tolerance"]
    frac = tol["value"] / 100 if tol["unit"] == "%" else tol["value"]
    metric = metric_name(acc["metric"])
    if metric in ("top1-agreement", "cosine-similarity", "sequence-agreement", "iou", "dice"):
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
        width = max(1.0, f["bytes"] / total * (W - 320))
        y = 5 + i * 22
        svg.append(f"<text x='0' y='{y + 13}'>{html.escape(name[:26])}</text>")
        svg.append(f"<rect x='180' y='{y}' width='{width:.1f}' height='16' fill='#8250df'/>")
        svg.append(f"<text x='{188 + width:.1f}' y='{y + 13}'>{_size_text(f['bytes'])}</text>")
    svg.append("</svg>")
    return "".join(svg)
