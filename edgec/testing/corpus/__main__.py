"""``python3 -m edgec.testing.corpus NAME -o DIR [--count N] [--seed S] [--param k=v ...]``:
writes DIR/model.onnx, DIR/data.npz, DIR/labels.npz (where the task has labels) and
DIR/host.edge, a spec for the host target that ``edgec compile DIR/model.onnx --spec
DIR/host.edge`` reads."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx

from edgec.testing.corpus import MODELS

_TOLERANCE = {"sqnr": "30 dB", "iou": "1 %", "sequence-agreement": "1 %", "top1-agreement": "1 %"}


def _spec(name: str, metric: str, layout: str | None, labels: bool, note: str) -> str:
    lines = [f"# corpus model {name} on the machine you run edgec on (written by python3 -m edgec.testing.corpus)",
             "target host", "", "budget {", "  latency < 10 s p50 at batch 1", "}", "", "accuracy {",
             f"  metric {metric}", *([f"  # {note}"] if note else []), f"  tolerance {_TOLERANCE.get(metric, '1 %')}",
             '  data "data.npz"', *([f"  layout {layout}"] if layout else []),
             *(['  labels "labels.npz"'] if labels else []), "}", "",
             "optimize {", "  precision fp32, int8", "  backend auto", "}", ""]
    return "\n".join(lines)


def spec_text(name: str, metric: str, layout: str, has_labels: bool, path: str = "host.edge") -> str:
    """A host spec for the model, written with what this edgec's spec checker accepts: the
    suggested metric (else sqnr, said in a comment) and, for per-sample data, an explicit
    ``layout per-sample`` (omitted where the language has no ``layout`` yet; the data
    file's shapes then say it)."""
    from edgec.dsl import check_text

    fallback = f"{metric} is not a metric of this edgec; sqnr instead"
    candidates = []
    for chosen, note in ((metric, ""), ("sqnr", fallback)):
        for layout_line in ((layout, None) if layout == "per-sample" else (None,)):
            candidates.append(_spec(name, chosen, layout_line, has_labels and chosen != "sqnr", note))
    for text in candidates:
        _, diagnostics = check_text(text, path)
        if not any(d.is_error for d in diagnostics):
            return text
    return candidates[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m edgec.testing.corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help=f"one of: {', '.join(MODELS)}")
    parser.add_argument("-o", "--out", required=True, help="folder to write into (created)")
    parser.add_argument("--count", type=int, default=32, help="samples in data.npz (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="data seed, below 10000 (default 0)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=INT",
                        help="builder parameter, e.g. size=160 for dbnet")
    args = parser.parse_args(argv)
    if args.name not in MODELS:
        print(f"error: unknown corpus model {args.name!r}; known: {', '.join(MODELS)}", file=sys.stderr)
        return 2
    if args.count < 1:
        print(f"error: --count must be at least 1, got {args.count}", file=sys.stderr)
        return 2
    if not 0 <= args.seed < 10_000:  # from 10000 on: the seeds the models are fitted with
        print(f"error: --seed must be in 0..9999, got {args.seed}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"error: {out} exists and is not a folder", file=sys.stderr)
        return 2
    parameters = {}
    for item in args.param:
        key, _, value = item.partition("=")
        try:
            parameters[key] = int(value)
        except ValueError:
            print(f"error: --param {item!r}: expected KEY=INT", file=sys.stderr)
            return 2
    try:
        corpus = MODELS[args.name](**parameters)
    except (TypeError, ValueError) as error:
        print(f"error: {args.name}: {error}", file=sys.stderr)
        return 2
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"error: cannot create {out}: {e.strerror}", file=sys.stderr)
        return 2
    onnx.save(corpus.model, str(out / "model.onnx"))
    inputs, labels = corpus.data(args.count, args.seed)
    np.savez(out / "data.npz", **inputs)
    if labels:
        np.savez(out / "labels.npz", **labels)
    # edgec's labels are one integer class per sample; per-step targets (CRNN) and text
    # maps (DBNet) are written for the user but not named in the spec, which compile reads.
    class_labels = bool(labels) and all(np.ndim(a) == 1 and np.asarray(a).dtype.kind in "iu"
                                        for a in labels.values())
    spec = out / "host.edge"
    spec.write_text(spec_text(corpus.name, corpus.metric, corpus.layout, class_labels, str(spec)))
    print(f"wrote {out}/model.onnx, data.npz{', labels.npz' if labels else ''}, host.edge "
          f"({corpus.metric}, {corpus.layout} data, {args.count} samples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
